package tc

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/lbd-dev/lbd/bpf/features"
)

func bpffsDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("/sys/fs/bpf", "lbdtc-test-"+uniq(t))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestPinnedMaps: a second load with the same PinDir shares the VIP set
// and the counters with the first (what a second `lbd real setup` sees).
func TestPinnedMaps(t *testing.T) {
	newTestDecap(t) // root check
	dir := bpffsDir(t)
	opts := Options{MaxVIPs: 8, GUEPort: DefaultGUEPort, PinDir: dir}
	d1, err := LoadDecap(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d1.Close()
	vip := netip.MustParseAddr("10.10.0.1")
	if err := d1.AddVIP(vip); err != nil {
		t.Fatal(err)
	}
	in := encapFrame(t, clientPacket(t, "198.51.100.1", "10.10.0.1", 1, 2, false, "x"), in4)
	if _, _, err := d1.Simulate(in); err != nil {
		t.Fatal(err)
	}
	d1.Close()

	d2, err := LoadDecap(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if got, _ := d2.VIPs(); !slices.Equal(got, []netip.Addr{vip}) {
		t.Fatalf("second load sees VIPs %v, want [%s]", got, vip)
	}
	if s, _ := d2.Stats(); s[StatIPIP4in4] != 1 {
		t.Fatalf("second load sees counters %v, want ipip_4in4 1", s.Map())
	}
	if _, err := LoadDecap(Options{MaxVIPs: 9, GUEPort: DefaultGUEPort, PinDir: dir}); err == nil {
		t.Fatal("load with another MaxVIPs reused the pinned maps")
	}
}

// TestPersistAndDetachProgram: an attachment outlives its process's
// handles (pinned TCX link, clsact filter); DetachProgram finds and
// removes it by name.
func TestPersistAndDetachProgram(t *testing.T) {
	for _, mode := range []Mode{ModeTCX, ModeClsact} {
		t.Run(string(mode), func(t *testing.T) {
			if mode == ModeTCX && !features.KernelAtLeast(6, 6) {
				t.Skip("kernel < 6.6 has no tcx")
			}
			d := newTestDecap(t)
			ns := vethNS(t)
			a, err := attachIn(ns, "vA", d.Program(), AttachOptions{Mode: mode})
			if err != nil {
				t.Fatal(err)
			}
			pin := filepath.Join(bpffsDir(t), "link")
			if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := a.Pin(pin); err != nil {
				t.Fatal(err)
			}
			if err := a.Release(); err != nil {
				t.Fatal(err)
			}
			d.Close() // as if the process had exited

			var progs []AttachedProgram
			if err := ns.do(func() (err error) { progs, err = Attached("vA", Ingress); return }); err != nil {
				t.Fatal(err)
			}
			if len(progs) != 1 || progs[0].Mode != mode || progs[0].Name != "lbd_decap" {
				t.Fatalf("after release: %+v, want lbd_decap via %s", progs, mode)
			}
			var n int
			if err := ns.do(func() (err error) { n, err = DetachProgram("vA", Ingress, "lbd_decap"); return }); err != nil {
				t.Fatal(err)
			}
			if n != 1 {
				t.Fatalf("DetachProgram removed %d, want 1", n)
			}
			if err := ns.do(func() (err error) { progs, err = Attached("vA", Ingress); return }); err != nil {
				t.Fatal(err)
			}
			if len(progs) != 0 {
				t.Fatalf("after DetachProgram: %+v, want nothing", progs)
			}
		})
	}
}
