package control

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/lbd-dev/lbd/control/maglev"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

var (
	vipA = lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	vipB = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Port: 53, Proto: lb.UDP}
	r1   = netip.MustParseAddr("10.0.0.1")
	r2   = netip.MustParseAddr("10.0.0.2")
	r3   = netip.MustParseAddr("2001:db8:1::3")
)

func newTestController(t *testing.T) (*Controller, *fakedp.Datapath, *memStore) {
	t.Helper()
	dp, st := fakedp.New(), &memStore{}
	return New(dp, st, nil, nil), dp, st
}

func active(a netip.Addr, w uint32) Real { return Real{Addr: a, Weight: w, State: RealActive} }

// wantRing is the ring the controller must install: Maglev over the
// eligible reals, with the fake's IDs.
func wantRing(t *testing.T, dp *fakedp.Datapath, v VIP) []uint32 {
	t.Helper()
	if v.Disabled {
		return []uint32{0}
	}
	var bs []maglev.Backend
	for _, r := range v.Reals {
		if r.Eligible() {
			bs = append(bs, maglev.Backend{Name: r.Addr.String(), ID: uint32(dp.RealMap[r.Addr]), Weight: r.Weight})
		}
	}
	if len(bs) == 0 {
		return []uint32{0}
	}
	size := v.RingSize
	if size == 0 {
		size = maglev.DefaultSize
	}
	table, err := maglev.Build(bs, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// checkInSync asserts that the datapath holds exactly the controller's
// desired state.
func checkInSync(t *testing.T, c *Controller, dp *fakedp.Datapath) {
	t.Helper()
	want := c.VIPs()
	if len(dp.VIPMap) != len(want) {
		t.Fatalf("datapath has %d VIPs, state %d", len(dp.VIPMap), len(want))
	}
	used := map[netip.Addr]bool{}
	for _, v := range want {
		have, ok := dp.VIPMap[v.Key]
		if !ok {
			t.Fatalf("VIP %s missing from datapath", lb.VIPName(v.Key))
		}
		if have.Flags != v.DatapathFlags() {
			t.Errorf("VIP %s flags %#x, want %#x", lb.VIPName(v.Key), have.Flags, v.DatapathFlags())
		}
		for _, r := range v.Reals {
			used[r.Addr] = true
			if _, ok := dp.RealMap[r.Addr]; !ok {
				t.Errorf("real %s not defined", r.Addr)
			}
		}
		if !slices.Equal(dp.Rings[v.Key], wantRing(t, dp, *v)) {
			t.Errorf("VIP %s: ring differs from Maglev of its eligible reals", lb.VIPName(v.Key))
		}
	}
	for a := range dp.RealMap {
		if !used[a] {
			t.Errorf("real %s defined but unused", a)
		}
	}
}

func TestCreateVIPInstallsEverything(t *testing.T) {
	c, dp, st := newTestController(t)
	v, err := c.CreateVIP(VIP{Key: vipA, Flags: lb.VIPSticky, Encap: EncapGUE, Reals: []Real{active(r2, 1), active(r1, 3)}})
	if err != nil {
		t.Fatal(err)
	}
	if v.RingSize != maglev.DefaultSize || v.Reals[0].Addr != r1 {
		t.Errorf("defaults/sorting not applied: %+v", v)
	}
	if dp.VIPMap[vipA].Flags != lb.VIPSticky|lb.VIPGUE {
		t.Errorf("flags %#x", dp.VIPMap[vipA].Flags)
	}
	checkInSync(t, c, dp)
	if st.saves != 1 || st.saved[vipA] == nil || len(st.saved[vipA].Reals) != 2 {
		t.Errorf("state not saved: %+v", st)
	}
	// Weights 1:3 give exactly a quarter of the slots, within rounding.
	_, shares, empty, err := c.Ring(vipA)
	if err != nil {
		t.Fatal(err)
	}
	if empty != 0 || shares[0].Slots+shares[1].Slots != maglev.DefaultSize {
		t.Errorf("ring shares %+v, empty %d", shares, empty)
	}
	if got := float64(shares[0].Slots) / maglev.DefaultSize; got < 0.74 || got > 0.76 {
		t.Errorf("real with weight 3 of 4 holds %.4f of the ring", got)
	}

	if _, err := c.CreateVIP(VIP{Key: vipA}); !errors.Is(err, ErrConflict) {
		t.Errorf("second create: %v, want ErrConflict", err)
	}
}

func TestInvalidInputChangesNothing(t *testing.T) {
	cases := map[string]struct {
		vip   VIP
		field string
	}{
		"ring size":      {VIP{Key: vipA, RingSize: 1000}, "ring_size"},
		"encap":          {VIP{Key: vipA, Encap: "gre"}, "encap"},
		"duplicate real": {VIP{Key: vipA, Reals: []Real{active(r1, 1), active(r1, 2)}}, "reals"},
		"state":          {VIP{Key: vipA, Reals: []Real{{Addr: r1, Weight: 1, State: "up"}}}, "state"},
		"loopback real":  {VIP{Key: vipA, Reals: []Real{active(netip.MustParseAddr("127.0.0.1"), 1)}}, "address"},
		"no address":     {VIP{Key: lb.VIPKey{Proto: lb.TCP, Port: 80}}, "vip"},
		"too many reals": {VIP{Key: vipA, RingSize: 1021, Reals: manyReals(1022)}, "reals"},
		"weight":         {VIP{Key: vipA, Reals: []Real{active(r1, MaxWeight+1)}}, "weight"},
		"GUE to IPv6":    {VIP{Key: vipA, Encap: EncapGUE, Reals: []Real{active(r1, 1), active(r3, 1)}}, "encap"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			c, dp, st := newTestController(t)
			c.SetGUESources(true, false)
			_, err := c.CreateVIP(tc.vip)
			var inv *InvalidError
			if !errors.As(err, &inv) || inv.Field != tc.field {
				t.Fatalf("got %v, want InvalidError on %s", err, tc.field)
			}
			if len(dp.Calls) != 0 || st.saves != 0 || len(c.VIPs()) != 0 {
				t.Errorf("invalid input reached the datapath (%v) or state (%d saves)", dp.Calls, st.saves)
			}
		})
	}
}

func manyReals(n int) []Real {
	out := make([]Real, n)
	for i := range out {
		out[i] = active(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), 1)
	}
	return out
}

func TestDrainingAndZeroWeightKeepRealDefinedButOutOfRing(t *testing.T) {
	c, dp, _ := newTestController(t)
	if _, err := c.CreateVIP(VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1), active(r3, 1)}}); err != nil {
		t.Fatal(err)
	}
	id2 := dp.RealMap[r2]
	if _, _, err := c.PutReal(vipA, Real{Addr: r2, Weight: 1, State: RealDraining}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.PutReal(vipA, Real{Addr: r3, Weight: 0, State: RealActive}); err != nil {
		t.Fatal(err)
	}
	checkInSync(t, c, dp)
	if dp.RealMap[r2] != id2 {
		t.Errorf("draining real was redefined (id %d → %d): its flows would be lost", id2, dp.RealMap[r2])
	}
	for _, id := range dp.Rings[vipA] {
		if datapath.RealID(id) != dp.RealMap[r1] {
			t.Fatalf("ring holds real %d; only %s (id %d) is eligible", id, r1, dp.RealMap[r1])
		}
	}
	// Nobody eligible: one empty slot, reals still defined.
	if _, _, err := c.PutReal(vipA, Real{Addr: r1, Weight: 1, State: RealDraining}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dp.Rings[vipA], []uint32{0}) || len(dp.RealMap) != 3 {
		t.Errorf("no eligible reals: ring %v, reals %v", dp.Rings[vipA][:min(3, len(dp.Rings[vipA]))], dp.RealMap)
	}
}

func TestRealsSharedBetweenVIPs(t *testing.T) {
	c, dp, _ := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1)}})
	mustCreate(t, c, VIP{Key: vipB, RingSize: 1021, Reals: []Real{active(r1, 1), active(r3, 1)}})
	if _, err := c.DeleteReal(vipA, r1); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.RealMap[r1]; !ok {
		t.Fatal("real still used by VIP B was undefined")
	}
	if err := c.DeleteVIP(vipB); err != nil {
		t.Fatal(err)
	}
	checkInSync(t, c, dp)
	if _, ok := dp.RealMap[r1]; ok {
		t.Fatal("real used by no VIP still defined")
	}
	if _, err := c.DeleteReal(vipA, r3); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete absent real: %v", err)
	}
	if err := c.DeleteVIP(vipB); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete absent VIP: %v", err)
	}
}

func mustCreate(t *testing.T, c *Controller, v VIP) {
	t.Helper()
	if _, err := c.CreateVIP(v); err != nil {
		t.Fatal(err)
	}
}

// snapshot copies the fake's observable state.
type snapshot struct {
	vips  map[lb.VIPKey]datapath.VIP
	rings map[lb.VIPKey][]uint32
	reals map[netip.Addr]datapath.RealID
}

func snap(dp *fakedp.Datapath) snapshot {
	s := snapshot{map[lb.VIPKey]datapath.VIP{}, map[lb.VIPKey][]uint32{}, map[netip.Addr]datapath.RealID{}}
	for k, v := range dp.VIPMap {
		s.vips[k] = v
	}
	for k, v := range dp.Rings {
		s.rings[k] = slices.Clone(v)
	}
	for k, v := range dp.RealMap {
		s.reals[k] = v
	}
	return s
}

func sameSnap(t *testing.T, a, b snapshot) {
	t.Helper()
	if len(a.vips) != len(b.vips) || len(a.reals) != len(b.reals) {
		t.Fatalf("datapath changed: %d→%d VIPs, %d→%d reals", len(a.vips), len(b.vips), len(a.reals), len(b.reals))
	}
	for k, v := range a.vips {
		if b.vips[k].Flags != v.Flags || b.vips[k].Num != v.Num || b.vips[k].Gen != v.Gen || !slices.Equal(a.rings[k], b.rings[k]) {
			t.Errorf("VIP %s changed", lb.VIPName(k))
		}
	}
	for k, id := range a.reals {
		if b.reals[k] != id {
			t.Errorf("real %s changed id %d → %d", k, id, b.reals[k])
		}
	}
}

// Every way a change can fail leaves the datapath and the state as they
// were, and says so.
func TestFailedChangesRollBack(t *testing.T) {
	steps := []struct {
		name string
		op   func(c *Controller) error
		fail string // operation prefix that fails
	}{
		{"add real, ring swap fails", func(c *Controller) error {
			_, _, err := c.PutReal(vipA, active(r3, 2))
			return err
		}, "SetRing"},
		{"add real, defining it fails", func(c *Controller) error {
			_, _, err := c.PutReal(vipA, active(r3, 2))
			return err
		}, "AddReal"},
		{"create VIP, ring fails", func(c *Controller) error {
			_, err := c.CreateVIP(VIP{Key: vipB, Reals: []Real{active(r3, 1)}})
			return err
		}, "SetRing"},
		{"flags change fails", func(c *Controller) error {
			_, err := c.UpdateVIP(vipA, VIPUpdate{SetFlags: lb.VIPNoLRU})
			return err
		}, "SetVIPFlags"},
		{"delete VIP fails", func(c *Controller) error { return c.DeleteVIP(vipA) }, "RemoveVIP"},
		{"replace reals, ring fails", func(c *Controller) error {
			_, err := c.SetReals(vipA, []Real{active(r3, 1)})
			return err
		}, "SetRing"},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			c, dp, st := newTestController(t)
			mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1)}})
			before, stateBefore, savedBefore := snap(dp), c.VIPs(), maps.Clone(st.saved)
			armed := true
			dp.Fail = func(op string) error {
				if armed && strings.HasPrefix(op, s.fail) {
					armed = false // fail once: the rollback may do the same operation
					return fakedp.ErrInjected
				}
				return nil
			}
			err := s.op(c)
			var ae *ApplyError
			if !errors.As(err, &ae) || !ae.RolledBack || !errors.Is(err, fakedp.ErrInjected) {
				t.Fatalf("got %v, want a rolled-back ApplyError wrapping the failure", err)
			}
			sameSnap(t, before, snap(dp))
			if !maps.EqualFunc(st.saved, savedBefore, func(a, b *VIP) bool { return reflect.DeepEqual(a, b) }) {
				t.Errorf("the saved state kept the failed change: %+v", st.saved)
			}
			if got := c.VIPs(); len(got) != len(stateBefore) || len(got[0].Reals) != len(stateBefore[0].Reals) {
				t.Error("desired state changed")
			}
		})
	}
}

func TestFailedSaveRollsBackDatapath(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1)}})
	before := snap(dp)
	st.err = errors.New("disk full")
	_, err := c.SetReals(vipA, []Real{active(r2, 1), active(r3, 1)})
	var ae *ApplyError
	if !errors.As(err, &ae) || !ae.RolledBack || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("got %v", err)
	}
	sameSnap(t, before, snap(dp))
	st.err = nil
	if _, err := c.CreateVIP(VIP{Key: vipB}); err != nil {
		t.Fatal(err)
	}
	if len(st.saved) != 2 || len(st.saved[vipA].Reals) != 1 || st.saved[vipA].Reals[0].Addr != r1 {
		t.Errorf("saved state after recovery: %+v", st.saved[vipA])
	}
}

func TestLimitIsReported(t *testing.T) {
	c, dp, _ := newTestController(t)
	dp.MaxVIPs = 1
	mustCreate(t, c, VIP{Key: vipA})
	_, err := c.CreateVIP(VIP{Key: vipB})
	var ae *ApplyError
	if !errors.As(err, &ae) || !ae.RolledBack || !errors.Is(err, datapath.ErrLimit) {
		t.Fatalf("got %v, want rolled-back ApplyError wrapping ErrLimit", err)
	}
	if len(c.VIPs()) != 1 {
		t.Error("VIP over the limit entered the state")
	}
}

func TestReconcileInstallsAndRepairsDrift(t *testing.T) {
	desired := map[lb.VIPKey]*VIP{
		vipA: {Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 2)}},
		vipB: {Key: vipB, RingSize: 4099, Flags: lb.VIPNoLRU, Reals: []Real{active(r3, 1)}},
	}
	for _, v := range desired {
		v.normalize()
	}
	dp := fakedp.New()
	// Left over from an earlier run: a VIP the state no longer has, and
	// an unused real.
	stray := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.99"), Port: 443, Proto: lb.TCP}
	_ = dp.AddVIP(stray, 0)
	_, _ = dp.AddReal(netip.MustParseAddr("10.9.9.9"))

	c := New(dp, &memStore{}, desired, nil)
	drifts, err := c.Reconcile()
	if err != nil {
		t.Fatal(err)
	}
	checkInSync(t, c, dp)
	// A and B added (vips), their reals defined (reals) and rings
	// written (rings), the stray VIP removed, the unused real undefined.
	var got []string
	for _, d := range drifts {
		got = append(got, d.VIP+" "+d.Map)
	}
	want := []string{"tcp-192.0.2.1-80 vips", "tcp-192.0.2.1-80 reals", "tcp-192.0.2.1-80 rings", "tcp-192.0.2.99-443 vips",
		"udp-2001:db8::1-53 vips", "udp-2001:db8::1-53 reals", "udp-2001:db8::1-53 rings", " reals"}
	if !slices.Equal(got, want) {
		t.Errorf("drifts %q, want %q", got, want)
	}

	// In sync: nothing to do, no mutation.
	dp.Calls = nil
	if drifts, err := c.Reconcile(); err != nil || len(drifts) != 0 || len(dp.Calls) != 0 {
		t.Fatalf("second reconcile: %+v %v, calls %v", drifts, err, dp.Calls)
	}

	// Someone overwrote a ring slot and a flag behind lbd's back.
	dp.Rings[vipA][7] = uint32(dp.RealMap[r3])
	v := dp.VIPMap[vipB]
	v.Flags = 0
	dp.VIPMap[vipB] = v
	drifts, err = c.Reconcile()
	if err != nil || len(drifts) != 2 {
		t.Fatalf("drift repair: %+v %v", drifts, err)
	}
	checkInSync(t, c, dp)
}

// A real removed from one VIP but used by another stays defined (for the
// other VIP: each pair has its own index); the removed VIP's flows to it
// must still leave the connection table (the other VIP's stay).
func TestRemovedSharedRealLosesOnlyThisVIPsFlows(t *testing.T) {
	c, dp, _ := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1)}})
	mustCreate(t, c, VIP{Key: vipB, RingSize: 1021, Reals: []Real{active(r1, 1)}})
	flow := func(key lb.VIPKey, port uint16, real netip.Addr) datapath.Flow {
		return datapath.Flow{Key: datapath.FlowKey{Client: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), port)},
			VIPNum: dp.VIPMap[key].Num, Real: c.slots[RealKey{key, real}]}
	}
	dp.FlowList = []datapath.Flow{flow(vipA, 1, r1), flow(vipA, 2, r2), flow(vipB, 3, r1)}
	if _, err := c.DeleteReal(vipA, r1); err != nil {
		t.Fatal(err)
	}
	if _, ok := dp.RealMap[r1]; !ok {
		t.Fatal("r1 is still used by VIP B and must stay defined")
	}
	var left []uint16
	for _, f := range dp.FlowList {
		left = append(left, f.Key.Client.Port())
	}
	if !slices.Equal(left, []uint16{2, 3}) {
		t.Errorf("flows left %v, want VIP A's flow to r2 and VIP B's flow to r1", left)
	}
}

// A change whose state cannot be saved is refused before the datapath is
// touched: save first.
func TestUnsavableChangeTouchesNothing(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1)}})
	st.err = fmt.Errorf("%w: injected", ErrNoSpace)
	dp.Calls = nil
	err := c.DeleteVIP(vipA)
	var ae *ApplyError
	if !errors.As(err, &ae) || !ae.RolledBack || !errors.Is(err, ErrNoSpace) {
		t.Fatalf("got %v, want a rolled-back ApplyError wrapping ErrNoSpace", err)
	}
	if len(dp.Calls) != 0 {
		t.Errorf("the datapath was changed before the save: %v", dp.Calls)
	}
}

// partialRemove is a datapath whose RemoveVIP fails after the VIP is gone
// (as the real one can, between its map writes).
type partialRemove struct{ *fakedp.Datapath }

func (p partialRemove) RemoveVIP(key lb.VIPKey) error {
	_ = p.Datapath.RemoveVIP(key)
	return fakedp.ErrInjected
}

// A rollback of a removal that went half-way reinstalls the VIP under its
// number and generation: its counters and flows stay its own.
func TestRollbackKeepsVIPNumberAndGeneration(t *testing.T) {
	dp, st := fakedp.New(), &memStore{}
	c := New(partialRemove{dp}, st, nil, nil)
	mustCreate(t, c, VIP{Key: vipB})
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1)}})
	before, savedBefore := snap(dp), maps.Clone(st.saved)
	err := c.DeleteVIP(vipA)
	var ae *ApplyError
	if !errors.As(err, &ae) || !ae.RolledBack {
		t.Fatalf("got %v, want a rolled-back ApplyError", err)
	}
	sameSnap(t, before, snap(dp))
	if !maps.EqualFunc(st.saved, savedBefore, func(a, b *VIP) bool { return reflect.DeepEqual(a, b) }) {
		t.Errorf("the saved state kept the failed change: %+v", st.saved)
	}
}
