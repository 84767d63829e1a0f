package main

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/lbd-dev/lbd/internal/nsexec"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// TestMain lets the test binary stand in for the lbd binary: started with
// LBD_TEST_MAIN=1 it runs lbd's main. The daemon tests run the real daemon
// as a child process this way, also inside the kernel-matrix VMs, which
// have no Go toolchain to build it.
func TestMain(m *testing.M) {
	if os.Getenv("LBD_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// daemonLab is a veth pair: the daemon's interface in the host namespace,
// its peer in a namespace of the test's, where the "client" sends from.
type daemonLab struct {
	t        *testing.T
	bin      string
	ns       netns.NsHandle
	lbIf     string
	stateDir string
	pinDir   string
	listen   string
	token    string
	// wrap runs the daemon (start) under a command, e.g. setpriv.
	wrap []string
	// logs is the last started daemon's stderr.
	logs *syncBuffer
}

// lbd returns a command running lbd with args.
func (l *daemonLab) lbd(args ...string) *exec.Cmd {
	cmd := exec.Command(l.bin, args...)
	cmd.Env = append(os.Environ(), "LBD_TEST_MAIN=1")
	return cmd
}

func newDaemonLab(t *testing.T) *daemonLab {
	t.Helper()
	privtest.Require(t)
	id := fmt.Sprintf("%06x", rand.Uint32()&0xffffff)
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	l := &daemonLab{t: t, bin: bin, lbIf: "lbda" + id, stateDir: t.TempDir(), pinDir: "/sys/fs/bpf/lbdt-" + id}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.listen = ln.Addr().String()
	ln.Close()

	// A namespace of our own, made without staying in it.
	l.ns, err = nsexec.New()
	if err != nil {
		t.Fatalf("create netns: %v", err)
	}
	t.Cleanup(func() {
		_ = l.lbd("cleanup", "--pin-dir", l.pinDir).Run()
		if link, err := netlink.LinkByName(l.lbIf); err == nil {
			_ = netlink.LinkDel(link)
		}
		l.ns.Close() // the namespace goes with its last reference
		_ = os.RemoveAll(l.pinDir)
	})

	peer := "lbdb" + id
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.lbIf}, PeerName: peer, PeerNamespace: netlink.NsFd(l.ns)}
	must(t, "add veth", netlink.LinkAdd(veth))
	lb, err := netlink.LinkByName(l.lbIf)
	must(t, "find veth", err)
	must(t, "address LB side", netlink.AddrAdd(lb, mustAddr("10.99.0.1/24")))
	must(t, "up LB side", netlink.LinkSetUp(lb))

	h, err := netlink.NewHandleAt(l.ns, unix.NETLINK_ROUTE) // route only: the 5.10 guests lack xfrm
	must(t, "netlink in netns", err)
	defer h.Close()
	p, err := h.LinkByName(peer)
	must(t, "find peer", err)
	must(t, "address peer", h.AddrAdd(p, mustAddr("10.99.0.2/24")))
	must(t, "up peer", h.LinkSetUp(p))
	_, vips, _ := net.ParseCIDR("192.0.2.0/24")
	must(t, "route to VIPs", h.RouteAdd(&netlink.Route{LinkIndex: p.Attrs().Index, Dst: vips, Gw: net.ParseIP("10.99.0.1")}))
	return l
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func mustAddr(s string) *netlink.Addr {
	a, err := netlink.ParseAddr(s)
	if err != nil {
		panic(err)
	}
	return a
}

// start runs `lbd serve` and waits until it is ready.
func (l *daemonLab) start(extra ...string) *exec.Cmd {
	l.t.Helper()
	args := append([]string{"serve", "--interface", l.lbIf, "--xdp-mode", "native", "--gateway-mac", "02:00:00:00:00:99",
		"--listen", l.listen, "--state-dir", l.stateDir, "--token-file", filepath.Join(l.stateDir, "token"),
		"--pin-dir", l.pinDir, "--max-flows", "4096", "--max-vips", "16", "--max-reals", "64", "--log-format", "json"}, extra...)
	cmd := l.lbd(args...)
	if len(l.wrap) > 0 {
		cmd.Args = append(append([]string{}, l.wrap...), cmd.Args...)
		cmd.Path = l.wrap[0]
	}
	logs := &syncBuffer{}
	l.logs = logs
	cmd.Stderr = logs
	if err := cmd.Start(); err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if l.t.Failed() {
			l.t.Logf("daemon log:\n%s", logs.String())
		}
	})
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + l.listen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if i == 100 {
			l.t.Fatalf("daemon not ready after 10 s: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := os.ReadFile(filepath.Join(l.stateDir, "token"))
	if err != nil {
		l.t.Fatal(err)
	}
	l.token = strings.TrimSpace(string(tok))
	return cmd
}

func (l *daemonLab) call(method, path string, body any, want int, out any) {
	l.t.Helper()
	text := ""
	if body != nil {
		data, _ := json.Marshal(body)
		text = string(data)
	}
	resp, data := l.request(method, path, text, nil)
	if resp.StatusCode != want {
		l.t.Fatalf("%s %s: %d, want %d: %s", method, path, resp.StatusCode, want, data)
	}
	if out != nil {
		if err := json.Unmarshal([]byte(data), out); err != nil {
			l.t.Fatalf("%s %s: %v: %s", method, path, err, data)
		}
	}
}

// request sends one API request (a JSON body unless "") with headers and
// returns the answer and its body.
func (l *daemonLab) request(method, path, body string, header http.Header) (*http.Response, string) {
	l.t.Helper()
	req, _ := http.NewRequest(method, "http://"+l.listen+path, strings.NewReader(body))
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+l.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp, string(data)
}

// send sends one UDP datagram to the VIP from the client namespace from
// each of the given source ports: one flow per port.
func (l *daemonLab) send(ports ...int) {
	l.t.Helper()
	err := nsexec.Do(l.ns, func() error {
		for _, p := range ports {
			c, err := net.DialUDP("udp4", &net.UDPAddr{Port: p}, &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 53})
			if err != nil {
				return fmt.Errorf("dial VIP: %w", err)
			}
			_, err = c.Write([]byte("hello"))
			c.Close()
			if err != nil {
				return fmt.Errorf("send to VIP: %w", err)
			}
		}
		return nil
	})
	must(l.t, "send from the client netns", err)
}

func portRange(from, to int) []int {
	var p []int
	for i := from; i <= to; i++ {
		p = append(p, i)
	}
	return p
}

func (l *daemonLab) vipPackets() uint64 {
	var st struct{ Packets uint64 }
	l.call("GET", "/api/v1/vips/udp-192.0.2.1-53/stats", nil, 200, &st)
	return st.Packets
}

// flows returns the VIP's connection table: client → real.
func (l *daemonLab) flows() map[string]string {
	var page struct {
		Flows []struct{ Client, Real string }
	}
	l.call("GET", "/api/v1/flows?vip=udp-192.0.2.1-53&limit=1000", nil, 200, &page)
	out := map[string]string{}
	for _, f := range page.Flows {
		out[f.Client] = f.Real
	}
	return out
}

func xdpAttached(t *testing.T, ifname string) bool {
	t.Helper()
	link, err := netlink.LinkByName(ifname)
	must(t, "find "+ifname, err)
	return link.Attrs().Xdp != nil && link.Attrs().Xdp.Attached
}

// TestDaemonRestartIsHitless runs the real daemon: configure a VIP over
// REST, send traffic, kill -9 the daemon, send more traffic (forwarded
// with no daemon), restart, and find the VIP, the counters and the
// connection table intact; then stop it cleanly and clean up.
func TestDaemonRestartIsHitless(t *testing.T) {
	l := newDaemonLab(t)
	d := l.start()

	// A second daemon is refused, whichever of the first's resources it
	// would share, before it touches anything.
	for _, tc := range []struct{ stateDir, pinDir, want string }{
		{l.stateDir, "/sys/fs/bpf/lbdt-other", "with state directory " + l.stateDir},
		{t.TempDir(), l.pinDir, "with pin directory " + l.pinDir},
		{t.TempDir(), "/sys/fs/bpf/lbdt-other", "on interface " + l.lbIf},
	} {
		out, err := l.lbd("serve", "--interface", l.lbIf, "--gateway-mac", "02:00:00:00:00:99", "--listen", "127.0.0.1:0",
			"--state-dir", tc.stateDir, "--token-file", filepath.Join(tc.stateDir, "token"), "--pin-dir", tc.pinDir).CombinedOutput()
		if want := fmt.Sprintf("another lbd (pid %d) is running %s", d.Process.Pid, tc.want); err == nil || !strings.Contains(string(out), want) {
			t.Fatalf("second daemon: %v: %s; want %q", err, out, want)
		}
	}
	if _, err := os.Stat("/sys/fs/bpf/lbdt-other"); !os.IsNotExist(err) {
		t.Errorf("a refused daemon left pins: %v", err)
	}

	l.call("POST", "/api/v1/vips", map[string]any{"protocol": "udp", "address": "192.0.2.1", "port": 53, "ring_size": 1021,
		"reals": []map[string]any{{"address": "10.0.0.1"}, {"address": "10.0.0.2"}}}, 201, nil)
	state, err := os.ReadFile(filepath.Join(l.stateDir, "state.json"))
	if err != nil || !strings.Contains(string(state), `"address": "10.0.0.2"`) {
		t.Fatalf("state file after create: %v %s", err, state)
	}
	l.send(portRange(40001, 40005)...)
	if got := l.vipPackets(); got != 5 {
		t.Fatalf("VIP packets %d, want 5", got)
	}
	before := l.flows()
	if len(before) != 5 {
		t.Fatalf("flows %v, want 5", before)
	}

	if err := d.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = d.Wait()
	if !xdpAttached(t, l.lbIf) {
		t.Fatal("kill -9 detached the program")
	}
	l.send(40006, 40007) // forwarded with no daemon running

	l.start()
	var status struct {
		Datapath map[string]any
	}
	l.call("GET", "/api/v1/status", nil, 200, &status)
	if hc, _ := status.Datapath["health_checks"].(string); !strings.HasPrefix(hc, "tunnel (") {
		t.Errorf("health checks should go through the tunnel: %q", hc)
	}
	if status.Datapath["recovered"] != true || status.Datapath["took_over_link"] != true {
		t.Errorf("status after restart: %v", status.Datapath)
	}
	if got := l.vipPackets(); got != 7 {
		t.Errorf("VIP packets after restart %d, want 7 (5 before, 2 while no daemon ran)", got)
	}
	after := l.flows()
	if len(after) != 7 {
		t.Errorf("flows after restart %v, want 7", after)
	}
	for client, real := range before {
		if after[client] != real {
			t.Errorf("flow %s: real %s before the restart, %s after", client, real, after[client])
		}
	}
	var drifts struct{ Drifts []any }
	l.call("POST", "/api/v1/reconcile", nil, 200, &drifts)
	if len(drifts.Drifts) != 0 {
		t.Errorf("restart left drift: %v", drifts.Drifts)
	}

	// Only the connection table can keep the old flows on their reals
	// now: the ring holds nothing but a new real.
	l.call("PUT", "/api/v1/vips/udp-192.0.2.1-53/reals", map[string]any{"reals": []map[string]any{
		{"address": "10.0.0.1", "state": "draining"}, {"address": "10.0.0.2", "state": "draining"}, {"address": "10.0.0.3"}}}, 200, nil)
	l.send(portRange(40001, 40008)...)
	final := l.flows()
	for client, real := range after {
		if final[client] != real {
			t.Errorf("flow %s left its real %s for %s after the ring changed", client, real, final[client])
		}
	}
	if len(final) != 8 || final["10.99.0.2:40008"] != "10.0.0.3" {
		t.Errorf("a new flow should take the new ring's only real: %v", final)
	}
}

// TestDaemonGracefulStopAndCleanup: SIGTERM stops the daemon and leaves
// the program forwarding; lbd cleanup removes it; --detach does both.
func TestDaemonGracefulStopAndCleanup(t *testing.T) {
	l := newDaemonLab(t)
	d := l.start()
	if err := d.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- d.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("daemon did not stop within 15 s of SIGTERM")
	}
	if !xdpAttached(t, l.lbIf) {
		t.Fatal("SIGTERM detached the program")
	}
	outb, err := l.lbd("cleanup", "--pin-dir", l.pinDir).CombinedOutput()
	out := string(outb)
	must(t, "lbd cleanup: "+out, err)
	if !strings.Contains(out, "removed") || xdpAttached(t, l.lbIf) {
		t.Fatalf("cleanup: %s; attached: %v", out, xdpAttached(t, l.lbIf))
	}
	if _, err := os.Stat(l.pinDir); !os.IsNotExist(err) {
		t.Errorf("pin directory still there: %v", err)
	}

	d = l.start("--detach")
	_ = d.Process.Signal(syscall.SIGTERM)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	go func() { <-ctx.Done(); _ = d.Process.Kill() }()
	if err := d.Wait(); err != nil {
		t.Fatalf("--detach exit: %v", err)
	}
	if xdpAttached(t, l.lbIf) {
		t.Error("--detach left the program attached")
	}
	if _, err := os.Stat(l.pinDir); !os.IsNotExist(err) {
		t.Errorf("--detach left the pins: %v", err)
	}
}
