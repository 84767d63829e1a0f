package control

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// A disabled VIP keeps its datapath entry (number, flags, counters, reals'
// indices, connection table entries) and gets an empty ring: new flows
// find no real. Enabling it restores the exact ring it had.
func TestDisabledVIPEmptiesItsRingAndKeepsTheRest(t *testing.T) {
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 3)}})
	before := slices.Clone(dp.Rings[vipA])
	entry := dp.VIPMap[vipA]
	ids := map[datapath.RealID]bool{dp.RealMap[r1]: true, dp.RealMap[r2]: true}
	dp.VIPCounters[vipA] = datapath.VIPStats{Packets: 100, Bytes: 10000}
	flow := datapath.Flow{Key: datapath.FlowKey{Proto: lb.TCP}, Real: dp.RealMap[r1], VIPNum: entry.Num, Packets: 3}
	dp.FlowList = []datapath.Flow{flow}
	ev, stop := c.Subscribe(16)
	defer stop()

	on, off := true, false
	v, err := c.UpdateVIP(vipA, VIPUpdate{Disabled: &on})
	if err != nil || !v.Disabled {
		t.Fatalf("disable: %+v %v", v, err)
	}
	select {
	case e := <-ev:
		if e.Type != "vip_changed" || e.VIP != lb.VIPName(vipA) {
			t.Errorf("event %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no vip_changed event")
	}
	if !slices.Equal(dp.Rings[vipA], []uint32{0}) {
		t.Fatalf("disabled VIP's ring has %d slots, want one empty slot", len(dp.Rings[vipA]))
	}
	// a new flow hashes to an empty slot, whatever its hash
	for _, h := range []uint32{0, 1, 7, 1020, 0xffffffff} {
		if id := dp.Rings[vipA][h%uint32(len(dp.Rings[vipA]))]; id != 0 {
			t.Errorf("hash %d: real %d", h, id)
		}
	}
	if got := dp.VIPMap[vipA]; got.Num != entry.Num || got.Flags != entry.Flags {
		t.Errorf("VIP entry %+v, was %+v", got, entry)
	}
	if dp.VIPCounters[vipA].Packets != 100 || !ids[dp.RealMap[r1]] || !ids[dp.RealMap[r2]] {
		t.Errorf("counters or real indices lost: %+v %v", dp.VIPCounters[vipA], dp.RealMap)
	}
	if len(dp.FlowList) != 1 || dp.FlowList[0] != flow {
		t.Errorf("established flows touched: %+v", dp.FlowList)
	}
	if !st.saved[vipA].Disabled {
		t.Error("disabled not saved")
	}
	checkInSync(t, c, dp)
	_, shares, empty, err := c.Ring(vipA)
	if err != nil || empty != 1 || len(shares) != 0 && shares[0].Slots != 0 {
		t.Errorf("ring summary: %+v empty %d %v", shares, empty, err)
	}
	// the reconcile agrees that the empty ring is the right one
	if drifts, err := c.Reconcile(); err != nil || len(drifts) != 0 {
		t.Errorf("reconcile of a disabled VIP: %+v %v", drifts, err)
	}
	// a ring written behind lbd's back is emptied again
	dp.Rings[vipA] = slices.Clone(before)
	if drifts, err := c.Reconcile(); err != nil || len(drifts) != 1 || !slices.Equal(dp.Rings[vipA], []uint32{0}) {
		t.Errorf("drift of a disabled VIP's ring: %+v %v, ring of %d", drifts, err, len(dp.Rings[vipA]))
	}
	// a change of the reals while disabled keeps the ring empty
	if _, _, err := c.PutReal(vipA, active(r3, 1)); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dp.Rings[vipA], []uint32{0}) {
		t.Error("adding a real to a disabled VIP filled its ring")
	}
	if _, err := c.DeleteReal(vipA, r3); err != nil {
		t.Fatal(err)
	}

	v, err = c.UpdateVIP(vipA, VIPUpdate{Disabled: &off})
	if err != nil || v.Disabled {
		t.Fatalf("enable: %+v %v", v, err)
	}
	if !slices.Equal(dp.Rings[vipA], before) {
		t.Error("enabled again: the ring differs from the one before")
	}
	if dp.VIPMap[vipA].Num != entry.Num || dp.VIPCounters[vipA].Packets != 100 {
		t.Errorf("enabled again: entry %+v counters %+v", dp.VIPMap[vipA], dp.VIPCounters[vipA])
	}
	checkInSync(t, c, dp)
	if drifts, err := c.Reconcile(); err != nil || len(drifts) != 0 {
		t.Errorf("reconcile after enabling: %+v %v", drifts, err)
	}
}

// Disabled wins over the all-down policy: serve-all (fail open) does not
// put the reals back in a disabled VIP's ring, and a VIP whose ring was
// already empty (every real draining) gets the disabled signature, so
// the reconcile stays consistent either way.
func TestDisabledIgnoresAllDownAndEmptyRings(t *testing.T) {
	c, dp, _ := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, AllDown: ServeAll, Reals: []Real{active(r1, 1), active(r2, 1)},
		Health: health.Spec{Type: health.TCP, Interval: 100 * time.Millisecond, Rise: 1, Fall: 1}})
	mustCreate(t, c, VIP{Key: vipB, RingSize: 1021, Reals: []Real{{Addr: r3, Weight: 1, State: RealDraining}}})
	on := true
	if _, err := c.UpdateVIP(vipA, VIPUpdate{Disabled: &on}); err != nil {
		t.Fatal(err)
	}
	emptyB := slices.Clone(dp.Rings[vipB])
	c.mu.Lock()
	sigB := c.ringSums[vipB].sig
	c.mu.Unlock()
	if _, err := c.UpdateVIP(vipB, VIPUpdate{Disabled: &on}); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	sigB2 := c.ringSums[vipB].sig
	c.mu.Unlock()
	if sigB == sigB2 || !slices.Equal(emptyB, []uint32{0}) || !slices.Equal(dp.Rings[vipB], emptyB) {
		t.Errorf("disabling an empty VIP: signature %q -> %q, ring %v -> %v", sigB, sigB2, emptyB, dp.Rings[vipB])
	}
	// every real of A goes down: serve-all would fail open, disabled does not
	p := &switchProber{ok: map[netip.Addr]bool{r1: false, r2: false}}
	ev, stop := c.Subscribe(16)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.StartHealth(ctx, p, 4, nil)
	seen := map[string]bool{}
	for len(seen) < 2 {
		e := waitEvent(t, ev, netip.Addr{}, health.Down)
		seen[e.Real] = true
	}
	if !slices.Equal(dp.Rings[vipA], []uint32{0}) {
		t.Error("serve-all filled a disabled VIP's ring")
	}
	if drifts, err := c.Reconcile(); err != nil || len(drifts) != 0 {
		t.Errorf("reconcile: %+v %v", drifts, err)
	}
}

// The state file keeps disabled (omitted for enabled VIPs), and a restart
// from it installs the empty ring.
func TestDisabledSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	vips := map[lb.VIPKey]*VIP{
		vipA: {Key: vipA, RingSize: 1021, Disabled: true, Reals: []Real{active(r1, 1)}},
		vipB: {Key: vipB, RingSize: 1021, Reals: []Real{active(r3, 1)}},
	}
	for _, v := range vips {
		v.normalize()
	}
	if err := s.Save(vips); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), `"disabled"`); n != 1 || !strings.Contains(string(raw), `"disabled": true`) {
		t.Errorf("state file has %d disabled fields:\n%s", n, raw)
	}
	got, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if !got[vipA].Disabled || got[vipB].Disabled {
		t.Fatalf("loaded %+v %+v", got[vipA], got[vipB])
	}
	dp := fakedp.New()
	c := New(dp, &memStore{}, got, nil)
	if _, err := c.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dp.Rings[vipA], []uint32{0}) || len(dp.Rings[vipB]) != 1021 {
		t.Errorf("after restart: rings of %d and %d slots", len(dp.Rings[vipA]), len(dp.Rings[vipB]))
	}
	checkInSync(t, c, dp)
}
