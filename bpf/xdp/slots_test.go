package xdp

import (
	"errors"
	"net/netip"
	"slices"
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

// TestAddRealSlots: many indices in one call. Each gets its address in
// the reals map (as the kernel reads it back) and zeroed counters, even
// where a freed index had some; a call that does not fit takes none.
func TestAddRealSlots(t *testing.T) {
	privtest.Require(t)
	b, err := Load(Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 256})
	privtest.CheckNotSupported(t, "load balancer", err)
	defer b.Close()
	first, err := b.AddRealSlots([]netip.Addr{netip.MustParseAddr("10.0.0.9")})
	if err != nil {
		t.Fatal(err)
	}
	per := make([]balancerRealCounters, ebpf.MustPossibleCPU())
	per[len(per)-1] = balancerRealCounters{Packets: 3, Bytes: 300}
	if err := b.objs.RealStats.Update(uint32(first[0]), per, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RemoveRealSlots(first); err != nil {
		t.Fatal(err)
	}

	addrs := []netip.Addr{
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("2001:db8::1"),
		netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.3"),
		netip.MustParseAddr("10.0.0.4"), netip.MustParseAddr("10.0.0.5"),
		netip.MustParseAddr("10.0.0.6"), // 7 usable indices in all
	}
	// 8 do not fit: none is taken
	if _, err := b.AddRealSlots(append(slices.Clone(addrs), netip.MustParseAddr("10.0.0.8"))); !errors.Is(err, ErrLimit) {
		t.Fatalf("8 indices of 7: %v, want ErrLimit", err)
	}
	if s := b.RealSlots(); len(s) != 0 {
		t.Fatalf("a refused call left indices %v", s)
	}
	ids, err := b.AddRealSlots(addrs)
	if err != nil {
		t.Fatal(err)
	}
	if len(ids) != len(addrs) {
		t.Fatalf("%d indices for %d addresses", len(ids), len(addrs))
	}
	state, err := b.ReadMaps()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[RealID]bool{}
	for k, id := range ids {
		if seen[id] || id == 0 {
			t.Errorf("index %d given twice or zero (%v)", id, ids)
		}
		seen[id] = true
		if got := state.Reals[id]; got != addrs[k] {
			t.Errorf("reals[%d] = %v in the kernel, want %v", id, got, addrs[k])
		}
		if st, err := b.RealStats(id); err != nil || st != (RealStats{}) {
			t.Errorf("index %d starts with counters %+v (%v)", id, st, err)
		}
	}
	if len(state.Reals) != len(addrs) {
		t.Errorf("the kernel's reals map has %d entries, want %d", len(state.Reals), len(addrs))
	}
	if _, err := b.AddRealSlots([]netip.Addr{netip.MustParseAddr("10.0.0.7")}); !errors.Is(err, ErrLimit) {
		t.Errorf("an eighth index: %v, want ErrLimit", err)
	}
}
