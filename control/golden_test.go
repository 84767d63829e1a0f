package control

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// dumpMaps renders what the kernel's maps hold, in a stable order, for
// people to read: VIPs with their flags and ring sizes, defined reals (an
// address once per VIP that has it: each pair has its own index), and
// each ring as slots per real.
func dumpMaps(t *testing.T, b *xdp.Balancer) string {
	t.Helper()
	var sb strings.Builder
	vips := b.VIPs()
	slices.SortFunc(vips, func(x, y datapath.VIP) int { return x.Key.Compare(y.Key) })
	byID := b.RealSlots() // one index per (VIP, real)
	sb.WriteString("vips:\n")
	for _, v := range vips {
		fmt.Fprintf(&sb, "  %s flags=%s ring=%d\n", lb.VIPName(v.Key), flagNames(v.Flags), v.RingSize)
	}
	sb.WriteString("reals:\n")
	addrs := make([]netip.Addr, 0, len(byID))
	for _, a := range byID {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	for _, a := range addrs {
		fmt.Fprintf(&sb, "  %s\n", a)
	}
	for _, v := range vips {
		ring, err := b.Ring(v.Key)
		if err != nil {
			t.Fatal(err)
		}
		counts := map[string]int{}
		for _, id := range ring {
			name := "empty"
			if id != 0 {
				a, ok := byID[datapath.RealID(id)]
				if !ok {
					t.Fatalf("ring of %s holds undefined real %d", lb.VIPName(v.Key), id)
				}
				name = a.String()
			}
			counts[name]++
		}
		names := make([]string, 0, len(counts))
		for n := range counts {
			names = append(names, n)
		}
		slices.Sort(names)
		fmt.Fprintf(&sb, "ring %s:", lb.VIPName(v.Key))
		for _, n := range names {
			fmt.Fprintf(&sb, " %s=%d", n, counts[n])
		}
		sb.WriteString("\n")
	}
	return sb.String()
}

func flagNames(f lb.VIPFlags) string {
	var names []string
	for _, x := range []struct {
		f    lb.VIPFlags
		name string
	}{{lb.VIPSticky, "sticky"}, {lb.VIPNoLRU, "no-lru"}, {lb.VIPGUE, "gue"}} {
		if f&x.f != 0 {
			names = append(names, x.name)
		}
	}
	if len(names) == 0 {
		return "-"
	}
	return strings.Join(names, ",")
}

// TestGoldenScript runs an operator's script against the real maps and
// compares a dump of the maps after every step with
// testdata/golden/script.txt (go test -run Golden -update rewrites it).
func TestGoldenScript(t *testing.T) {
	privtest.Require(t)
	b, err := xdp.Load(xdp.Limits{MaxVIPs: 8, MaxReals: 16, MaxFlows: 64})
	privtest.CheckNotSupported(t, "load balancer", err)
	defer b.Close()
	c := New(b, &memStore{}, nil, nil)

	a := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	v6 := lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::10"), Port: 0, Proto: lb.UDP}
	steps := []struct {
		name string
		do   func() error
	}{
		{"create tcp-192.0.2.1-80 with three reals, weights 1:1:2", func() error {
			_, err := c.CreateVIP(VIP{Key: a, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1), active(netip.MustParseAddr("10.0.0.3"), 2)}})
			return err
		}},
		{"create port-less udp-2001:db8::10-0, sticky, sharing 10.0.0.1, plus an IPv6 real", func() error {
			_, err := c.CreateVIP(VIP{Key: v6, Flags: lb.VIPSticky, RingSize: 1021, Reals: []Real{active(r1, 1), active(r3, 1)}})
			return err
		}},
		{"drain 10.0.0.2 (keeps its definition, leaves the ring)", func() error {
			_, _, err := c.PutReal(a, Real{Addr: r2, Weight: 1, State: RealDraining})
			return err
		}},
		{"weight 0 for 10.0.0.3 (same as draining)", func() error {
			_, _, err := c.PutReal(a, active(netip.MustParseAddr("10.0.0.3"), 0))
			return err
		}},
		{"replace the reals of tcp-192.0.2.1-80 with 10.0.0.4 and 10.0.0.5 (10.0.0.2 and .3 are undefined)", func() error {
			_, err := c.SetReals(a, []Real{active(netip.MustParseAddr("10.0.0.4"), 1), active(netip.MustParseAddr("10.0.0.5"), 3)})
			return err
		}},
		{"no-lru and GUE on tcp-192.0.2.1-80, larger ring", func() error {
			gue, size := EncapGUE, uint32(4099)
			_, err := c.UpdateVIP(a, VIPUpdate{SetFlags: lb.VIPNoLRU, Encap: &gue, RingSize: &size})
			return err
		}},
		{"remove 10.0.0.1 from udp-2001:db8::10-0 (no VIP uses it now: undefined)", func() error {
			_, err := c.DeleteReal(v6, r1)
			return err
		}},
		{"delete tcp-192.0.2.1-80", func() error { return c.DeleteVIP(a) }},
	}
	var got strings.Builder
	for i, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("step %d (%s): %v", i+1, s.name, err)
		}
		fmt.Fprintf(&got, "## %d. %s\n%s\n", i+1, s.name, dumpMaps(t, b))
		if drifts, err := c.Reconcile(); err != nil || len(drifts) != 0 {
			t.Fatalf("step %d: maps differ from the desired state: %+v %v", i+1, drifts, err)
		}
	}
	path := filepath.Join("testdata", "golden", "script.txt")
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to create it)", err)
	}
	if got.String() != string(want) {
		t.Errorf("maps differ from %s (go test -run Golden -update rewrites it; review the diff):\n%s", path, got.String())
	}
}
