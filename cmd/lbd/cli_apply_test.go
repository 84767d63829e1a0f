package main

import (
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const vipsYAML = `vips:
  - protocol: tcp
    address: 192.0.2.1
    port: 80
    ring_size: 1021
    reals:
      - address: 10.0.0.1
      - address: 10.0.0.2
        weight: 3
  - protocol: udp
    address: 2001:db8::1
    port: 53
    sticky: true
    health_check:
      type: udp
      interval: 2s
    description: resolver
    reals:
      - address: 2001:db8:1::1
        state: draining
`

func TestApplyAndExport(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.9:80", "--real", "10.0.0.9")
	file := writeFile(t, "vips.yaml", vipsYAML)

	out := d.ok("apply", "-f", file, "--dry-run")
	for _, want := range []string{"+ vip tcp-192.0.2.1-80 (2 reals)\n", "+ vip udp-2001:db8::1-53 (1 reals)\n", "- vip tcp-192.0.2.9-80\n", "dry run, nothing changed: 2 added, 1 removed, 0 changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("dry run lacks %q:\n%s", want, out)
		}
	}
	if vips := d.ctl.VIPs(); len(vips) != 1 || vips[0].Key.Port != 80 || vips[0].Key.Addr.String() != "192.0.2.9" {
		t.Fatalf("a dry run changed the daemon: %v", vips)
	}
	out = d.ok("apply", "-f", file)
	if !strings.Contains(out, "applied: 2 added, 1 removed, 0 changed; fingerprint "+apiv1.ShortFingerprint(d.ctl.Fingerprint())) {
		t.Errorf("apply printed:\n%s", out)
	}
	if got := ringCounts(t, d.dp, vip4); got[r1]+got[r2] != 1021 || got[r2] < 2*got[r1] {
		t.Errorf("ring after apply: %v", got)
	}
	if v, err := d.ctl.VIP(vip6); err != nil || v.Flags != lb.VIPSticky {
		t.Errorf("the file's sticky: true: VIP %v, %v", v, err)
	}
	wantRow(t, d.ok("status"), "FINGERPRINT", apiv1.ShortFingerprint(d.ctl.Fingerprint()))

	// Idempotent: the same file, then the export, change nothing.
	if out := d.ok("apply", "-f", file); !strings.Contains(out, "no change: 0 added, 0 removed, 0 changed") {
		t.Errorf("second apply:\n%s", out)
	}
	exported := d.ok("export")
	back := writeFile(t, "export.yaml", exported)
	if out := d.ok("apply", "-f", back); !strings.Contains(out, "no change:") {
		t.Errorf("apply of the export:\n%s\nexport:\n%s", out, exported)
	}
	var set apiv1.ApplyJSON
	d.okJSON(&set, "export")
	if len(set.VIPs) != 2 || set.VIPs[1].HealthCheck == nil || set.VIPs[1].HealthCheck.Interval != "2s" || set.VIPs[1].Description != "resolver" {
		t.Errorf("export -o json: %+v", set)
	}

	// On a fresh daemon: the same export, the same fingerprint.
	fresh := newDaemon(t)
	fresh.ok("apply", "-f", back)
	if again := fresh.ok("export"); again != exported {
		t.Errorf("export after apply on a fresh daemon differs:\n%s\nwant:\n%s", again, exported)
	}
	if fresh.ctl.Fingerprint() != d.ctl.Fingerprint() {
		t.Error("the same set on two daemons, different fingerprints")
	}

	// A change: exact diff.
	changed := strings.Replace(strings.Replace(vipsYAML, "ring_size: 1021", "ring_size: 4099", 1), "weight: 3", "weight: 5", 1)
	changed = strings.Replace(changed, "      - address: 10.0.0.1\n", "      - address: 10.0.0.3\n", 1)
	out = d.ok("apply", "-f", writeFile(t, "changed.yaml", changed))
	for _, want := range []string{"~ vip tcp-192.0.2.1-80\n", "    ring_size: 1021 -> 4099\n", "  + real 10.0.0.3 (weight 1, active)\n", "  - real 10.0.0.1\n",
		"  ~ real 10.0.0.2: weight 3 -> 5, active -> active\n", "applied: 0 added, 0 removed, 1 changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("apply of the change lacks %q:\n%s", want, out)
		}
	}
	var diff apiv1.DiffJSON
	d.okJSON(&diff, "apply", "-f", file, "--dry-run")
	if len(diff.Changed) != 1 || !diff.DryRun || diff.Changed[0].Name != "tcp-192.0.2.1-80" {
		t.Errorf("dry run -o json: %+v", diff)
	}
}

func TestApplyFileErrors(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.9:80", "--real", "10.0.0.9")
	fp := d.ctl.Fingerprint()
	for _, c := range []struct {
		text string
		want []string
	}{
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n    stiky: true\n", []string{"bad.yaml:5: unknown setting \"stiky\""}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n    sticky: maybe\n", []string{"bad.yaml:5: \"maybe\" must be true or false"}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: eighty\n", []string{"bad.yaml:4: \"eighty\" must be a whole number"}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n", []string{"bad.yaml:2: VIP 1 (tcp 192.0.2.1) has no port"}},
		{"vip:\n  - protocol: tcp\n", []string{"bad.yaml:1: unknown setting \"vip\""}},
		{"", []string{"bad.yaml: the file is empty"}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n  - protocol: tcp\n    address: 192.0.2.2\n    port: 80\n    reals:\n      - address: 127.0.0.1\n",
			[]string{"bad.yaml:9: VIP 2 of the set (tcp-192.0.2.2-80): real address 127.0.0.1: a loopback address"}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n    ring_size: 1000\n", []string{"bad.yaml:5:", "ring size 1000"}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n", []string{"bad.yaml:5:", "listed twice"}},
		{"vips:\n  - protocol: tcp\n    address: 192.0.2.1\n    port: 80\n  port: 81\n", []string{"bad.yaml:"}},
	} {
		err := d.fail("apply", "-f", writeFile(t, "bad.yaml", c.text))
		wantErr(t, err, c.want...)
	}
	if d.ctl.Fingerprint() != fp || len(d.ctl.VIPs()) != 1 {
		t.Error("a refused file changed the daemon")
	}
	wantErr(t, d.fail("apply"), "-f FILE")
}

// real set reads the real, then writes it back with If-Match: a change
// made in between is not overwritten but built upon.
func TestRealSetDoesNotOverwriteConcurrentChange(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.1:80", "--ring-size", "1021", "--real", "10.0.0.1", "--real", "10.0.0.2")
	puts, stale := 0, 0
	d.before = func(r *http.Request) {
		if r.Method != http.MethodPut {
			return
		}
		puts++
		if puts <= 2 {
			// Someone else drains the real between our read and our
			// write, twice.
			state := control.RealDraining
			if puts == 2 {
				state = control.RealActive
			}
			if _, _, err := d.ctl.PutReal(vip4, control.Real{Addr: r2, Weight: uint32(10 + puts), State: state}); err != nil {
				t.Error(err)
			}
			stale++
		}
	}
	d.ok("real", "set", "tcp/192.0.2.1:80", "10.0.0.2", "--state", "draining")
	r, _ := desiredReal(t, d.ctl, vip4, r2)
	if puts != 3 || r.Weight != 12 || r.State != control.RealDraining {
		t.Errorf("after %d PUTs (%d overtaken): %+v; want the concurrent weight 12 kept, draining", puts, stale, r)
	}
	// Overtaken every time: it gives up and says so.
	d.before = func(r *http.Request) {
		if r.Method == http.MethodPut {
			puts++
			if _, _, err := d.ctl.PutReal(vip4, control.Real{Addr: r2, Weight: uint32(puts), State: control.RealActive}); err != nil {
				t.Error(err)
			}
		}
	}
	wantErr(t, d.fail("real", "set", "tcp/192.0.2.1:80", "10.0.0.2", "--weight", "99"), "kept changing", "5 attempts")
}

// lbd apply computes the difference (a dry run), then applies it with
// If-Match: the version of the set that difference was computed against.
// A change that comes in between is not overwritten unseen: the write is
// refused (412), nothing of the file is applied, and apply says so.
func TestApplyRefusesConcurrentChange(t *testing.T) {
	d := newDaemon(t)
	d.ok("vip", "add", "tcp/192.0.2.9:80", "--real", "10.0.0.9")
	file := writeFile(t, "vips.yaml", vipsYAML)
	other := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.77"), Port: 443, Proto: lb.TCP}
	concurrent := func() {
		if _, err := d.ctl.CreateVIP(control.VIP{Key: other, Reals: []control.Real{{Addr: netip.MustParseAddr("10.0.0.77"), Weight: 1}}}); err != nil {
			t.Error(err)
		}
	}
	var reads, writes int
	d.before = func(r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/api/v1/vips" {
			return
		}
		if r.URL.Query().Get("dry_run") == "true" {
			reads++
			return
		}
		writes++
		if r.Header.Get("If-Match") == "" {
			t.Error("lbd apply wrote without If-Match")
		}
		if writes == 1 {
			concurrent() // between apply's read and its write
		}
	}
	err := d.fail("apply", "-f", file)
	wantErr(t, err, "changed between lbd apply's read and its write", "nothing was applied", "run lbd apply again")
	if !client.IsStale(err) {
		t.Errorf("refused apply: %v, want the daemon's 412", err)
	}
	if reads != 1 || writes != 1 {
		t.Fatalf("apply read %d times and wrote %d times, want 1 and 1", reads, writes)
	}
	// Nothing of the file: the old VIP and the concurrent one, as they were.
	var keys []string
	for _, v := range d.ctl.VIPs() {
		keys = append(keys, lb.VIPName(v.Key))
	}
	if want := []string{"tcp-192.0.2.9-80", "tcp-192.0.2.77-443"}; !slices.Equal(slices.Sorted(slices.Values(keys)), slices.Sorted(slices.Values(want))) {
		t.Fatalf("after a refused apply the daemon has %v, want %v", keys, want)
	}
	if _, ok := d.dp.VIPMap[vip4]; ok {
		t.Fatal("a refused apply reached the datapath")
	}

	// Again: the new difference includes the concurrent VIP's removal.
	out := d.ok("apply", "-f", file)
	for _, want := range []string{"- vip tcp-192.0.2.77-443\n", "- vip tcp-192.0.2.9-80\n", "applied: 2 added, 2 removed, 0 changed"} {
		if !strings.Contains(out, want) {
			t.Errorf("second apply lacks %q:\n%s", want, out)
		}
	}
	if reads != 2 || writes != 2 {
		t.Fatalf("apply read %d times and wrote %d times, want 2 and 2", reads, writes)
	}
	// The same file once more: the read finds nothing to do, no write.
	if out := d.ok("apply", "-f", file); !strings.Contains(out, "no change: 0 added, 0 removed, 0 changed") || writes != 2 {
		t.Errorf("idempotent apply wrote %d times:\n%s", writes-2, out)
	}

	// A dry run shows the difference and the version it was computed
	// against; --if-match with that version applies exactly it...
	d.ok("vip", "add", "tcp/192.0.2.9:80", "--real", "10.0.0.9")
	dry := d.ok("apply", "-f", file, "--dry-run")
	m := regexp.MustCompile(`computed against set version ([0-9a-f]+): lbd apply --if-match ([0-9a-f]+) `).FindStringSubmatch(dry)
	if m == nil || m[1] != m[2] || m[1] != d.ctl.SetVersion() {
		t.Fatalf("dry run does not name the set's version %s:\n%s", d.ctl.SetVersion(), dry)
	}
	version := m[1]
	// ...or nothing, when the set changed after the dry run.
	d.before = nil
	concurrent()
	fp := d.ctl.Fingerprint()
	wantErr(t, d.fail("apply", "-f", file, "--if-match", version), "no longer at version "+version, "nothing was applied", "--dry-run again")
	if d.ctl.Fingerprint() != fp {
		t.Fatal("a refused --if-match apply changed the daemon")
	}
	if err := d.ctl.DeleteVIP(other); err != nil {
		t.Fatal(err)
	}
	if d.ctl.SetVersion() != version {
		t.Fatalf("set at %s after undoing the concurrent change, want %s", d.ctl.SetVersion(), version)
	}
	out = d.ok("apply", "-f", file, "--if-match", version)
	if !strings.Contains(out, "applied: 0 added, 1 removed, 0 changed") || !strings.Contains(out, "- vip tcp-192.0.2.9-80\n") {
		t.Errorf("apply --if-match of the dry run's version:\n%s\ndry run was:\n%s", out, dry)
	}
	wantErr(t, d.fail("apply", "-f", file, "--if-match", `"x"`), "--if-match", "no quotes")
}
