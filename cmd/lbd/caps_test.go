package main

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// unitCapabilities reads CapabilityBoundingSet and AmbientCapabilities of
// packaging/lbd.service, which must be the same set.
func unitCapabilities(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../packaging/lbd.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sets := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if ok && (k == "CapabilityBoundingSet" || k == "AmbientCapabilities") {
			sets[k] = strings.Fields(v)
		}
	}
	b, a := sets["CapabilityBoundingSet"], sets["AmbientCapabilities"]
	if len(b) == 0 || !slices.Equal(b, a) {
		t.Fatalf("the unit's CapabilityBoundingSet %v and AmbientCapabilities %v must be the same non-empty set", b, a)
	}
	return b
}

// setprivArgs runs a command as root with exactly caps (CAP_X names):
// the bounding set limits what root gets at exec, and the inheritable
// and ambient sets are what systemd gives a unit with these settings.
func setprivArgs(t *testing.T, caps []string) []string {
	path, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	list := "-all"
	for _, c := range caps {
		list += ",+" + strings.ToLower(strings.TrimPrefix(c, "CAP_"))
	}
	return []string{path, "--reuid=0", "--regid=0", "--clear-groups", "--inh-caps=" + list, "--ambient-caps=" + list, "--bounding-set=" + list}
}

// TestUnitCapabilities runs lbd serve with exactly the unit's capabilities
// (tracer on, health checks on, BGP listening on port 179): a fresh start
// forwards real packets, a restart onto the pins recovers them and keeps
// forwarding, also with the tracer off. Then it drops each capability in
// turn and shows lbd failing without it, with the error that says why:
// the set is minimal.
func TestUnitCapabilities(t *testing.T) {
	if privtest.InVMGuest() {
		// The busybox guests of the kernel matrix have busybox's setpriv,
		// which cannot set the bounding set or the uid: the test needs
		// util-linux's, and runs on the host (in CI: required).
		t.Skip("kernel-matrix guest: no util-linux setpriv; this test runs on the host")
	}
	caps := unitCapabilities(t)
	l := newDaemonLab(t)
	bgp := []string{"--bgp-as", "65001", "--bgp-router-id", "10.99.0.1", "--bgp-peer", "10.99.0.2,65002", "--bgp-listen-port", "179"}
	l.wrap = setprivArgs(t, caps)

	d := l.start(append([]string{"--tracer", "auto"}, bgp...)...)
	var status struct {
		Datapath map[string]any
	}
	l.call("GET", "/api/v1/status", nil, 200, &status)
	if status.Datapath["recovered"] != false || status.Datapath["xdp_mode"] != "native" {
		t.Fatalf("fresh start: %v", status.Datapath)
	}
	var tracer struct{ Running bool }
	l.call("GET", "/api/v1/tracer", nil, 200, &tracer)
	if !tracer.Running {
		t.Errorf("tracer not running under the unit's capabilities")
	}
	l.call("POST", "/api/v1/vips", map[string]any{"protocol": "udp", "address": "192.0.2.1", "port": 53, "ring_size": 1021,
		"reals": []map[string]any{{"address": "10.0.0.1"}, {"address": "10.0.0.2"}}}, 201, nil)
	l.send(portRange(41001, 41004)...)
	if got := l.vipPackets(); got != 4 {
		t.Fatalf("fresh start: VIP packets %d, want 4", got)
	}
	stop(t, d)

	// Restart onto the pins, tracer off.
	d = l.start(append([]string{"--tracer", "off"}, bgp...)...)
	l.call("GET", "/api/v1/status", nil, 200, &status)
	if status.Datapath["recovered"] != true || status.Datapath["took_over_link"] != true {
		t.Fatalf("restart: %v", status.Datapath)
	}
	l.send(41005, 41006)
	if got := l.vipPackets(); got != 6 {
		t.Fatalf("after the restart: VIP packets %d, want 6", got)
	}
	if n := len(l.flows()); n != 6 {
		t.Errorf("after the restart: %d flows, want 6", n)
	}
	stop(t, d)

	// The restart read back what it could: a recovered ring, which it
	// may not open without CAP_SYS_ADMIN, is rewritten, not a drift.
	if logs := l.logs.String(); strings.Contains(logs, "datapath differed") || !strings.Contains(logs, "not readable without CAP_SYS_ADMIN: rewritten") {
		t.Errorf("restart: want the unreadable ring rewritten without a drift:\n%s", logs)
	}

	// Each capability is needed: without it lbd fails, saying why. Each
	// run is a fresh start (no pins), which loads, creates maps and
	// attaches XDP and TC. Without CAP_BPF cilium/ebpf's memlock probe
	// (creating a map) fails, so it tries to raise RLIMIT_MEMLOCK, which
	// root without CAP_SYS_RESOURCE may not (under the unit,
	// LimitMEMLOCK=infinity, the map creation itself would be refused).
	// Without CAP_NET_ADMIN the kernel refuses to load XDP and TC
	// programs (is_net_admin_prog_type). There is no CAP_SYS_ADMIN: a
	// recovered ring lbd cannot open by id is rewritten.
	why := map[string]string{
		"CAP_BPF":              "failed to set memlock rlimit: operation not permitted",       // the memlock probe, see above
		"CAP_PERFMON":          "prohibited for !root",                                        // the verifier: pointer arithmetic, Spectre v1 rules
		"CAP_NET_ADMIN":        "program lbd_balancer: load program: operation not permitted", // XDP and TC programs are CAP_NET_ADMIN types
		"CAP_NET_BIND_SERVICE": "listen tcp4 0.0.0.0:179: bind: permission denied",
	}
	for _, c := range caps {
		t.Run("without "+c, func(t *testing.T) {
			if out, err := l.lbd("cleanup", "--pin-dir", l.pinDir).CombinedOutput(); err != nil {
				t.Fatalf("cleanup: %v: %s", err, out)
			}
			want, ok := why[c]
			if !ok {
				t.Fatalf("no reason known for %s: add it here, or drop it from the unit", c)
			}
			args := append(append(setprivArgs(t, slices.DeleteFunc(slices.Clone(caps), func(x string) bool { return x == c })), l.bin,
				"serve", "--interface", l.lbIf, "--xdp-mode", "native", "--gateway-mac", "02:00:00:00:00:99",
				"--listen", l.listen, "--state-dir", l.stateDir, "--token-file", l.stateDir+"/token",
				"--pin-dir", l.pinDir, "--max-flows", "4096", "--max-vips", "16", "--max-reals", "64", "--tracer", "off"), bgp...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, args[0], args[1:]...)
			cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			if err == nil || ctx.Err() != nil {
				t.Fatalf("lbd ran without %s (err %v):\n%s", c, err, out.String())
			}
			if !strings.Contains(out.String(), want) {
				t.Errorf("without %s: want an error containing %q:\n%s", c, want, out.String())
			}
			t.Logf("without %s: %s", c, lastLine(out.String()))
		})
	}
}

func stop(t *testing.T, d *exec.Cmd) {
	t.Helper()
	if err := d.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := d.Wait(); err != nil {
		t.Fatalf("daemon exit: %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
