package xdp

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/internal/privtest"
)

// TestRealSlots: one address can have several indices; removing some
// deletes the connection table entries that name them (and only those)
// and returns their counters; a freed index is reused only after the
// others, with its counters zeroed.
func TestRealSlots(t *testing.T) {
	privtest.Require(t)
	b, err := Load(Limits{MaxVIPs: 4, MaxReals: 4, MaxFlows: 256})
	privtest.CheckNotSupported(t, "load balancer", err)
	defer b.Close()
	addr := netip.MustParseAddr("10.0.0.1")
	x, err := b.AddRealSlot(addr)
	if err != nil {
		t.Fatal(err)
	}
	y, err := b.AddRealSlot(addr)
	if err != nil || y == x {
		t.Fatalf("second index of %s: %d %v (first %d)", addr, y, err, x)
	}
	// entries naming x and y in the connection table, and counters for x
	for i, id := range []RealID{x, y, x, y} {
		k := balancerFlowKey{Src: [4]uint32{uint32(i)}, Sport: 1, Dport: 80, Proto: 6, Family: 4}
		if err := b.objs.Conns.Update(&k, &balancerFlowState{Real: uint32(id)}, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
	}
	per := make([]balancerRealCounters, ebpf.MustPossibleCPU())
	per[0] = balancerRealCounters{Packets: 7, Bytes: 700}
	if err := b.objs.RealStats.Update(uint32(x), per, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	final, err := b.RemoveRealSlots([]RealID{x})
	if err != nil {
		t.Fatal(err)
	}
	if final[x] != (RealStats{Packets: 7, Bytes: 700}) {
		t.Errorf("final counters of %d: %+v", x, final[x])
	}
	var left []RealID
	for f, err := range b.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, f.Real)
	}
	if len(left) != 2 {
		t.Errorf("entries left name %v, want only %d, twice", left, y)
	}
	for _, id := range left {
		if id != y {
			t.Errorf("an entry still names removed index %d", id)
		}
	}
	if slots := b.RealSlots(); len(slots) != 1 || slots[y] != addr {
		t.Errorf("slots %v, want %d only", slots, y)
	}
	// 3 usable indices: the next is the one never used, then x again
	z, err := b.AddRealSlot(netip.MustParseAddr("10.0.0.2"))
	if err != nil || z == x || z == y {
		t.Fatalf("next index %d %v, want the unused one (x=%d y=%d)", z, err, x, y)
	}
	w, err := b.AddRealSlot(netip.MustParseAddr("10.0.0.3"))
	if err != nil || w != x {
		t.Fatalf("index %d %v, want the freed %d", w, err, x)
	}
	if st, _ := b.RealStats(w); st != (RealStats{}) {
		t.Errorf("reused index %d starts with counters %+v", w, st)
	}
	if _, err := b.AddRealSlot(netip.MustParseAddr("10.0.0.4")); err == nil {
		t.Error("a fourth index in a map of 3")
	}
}
