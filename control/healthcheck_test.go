package control

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// switchProber answers probes from a per-real switch (true = healthy).
type switchProber struct {
	mu sync.Mutex
	ok map[netip.Addr]bool
}

func (p *switchProber) Probe(_ context.Context, t health.Target, _ health.Spec) health.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	ok, known := p.ok[t.Real]
	return health.Result{OK: ok || !known, At: time.Now(), Reason: "scripted"}
}

func (p *switchProber) set(a netip.Addr, ok bool) {
	p.mu.Lock()
	p.ok[a] = ok
	p.mu.Unlock()
}

type fakeTunnel struct {
	mu    sync.Mutex
	marks map[uint32]netip.Addr
}

func (f *fakeTunnel) SetReal(m uint32, a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marks[m] = a
	return nil
}

func (f *fakeTunnel) RemoveReal(m uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.marks, m)
	return nil
}

// waitEvent waits for a real_health event of real (any real if invalid)
// entering state, skipping others.
func waitEvent(t *testing.T, ev <-chan Event, real netip.Addr, state health.State) Event {
	t.Helper()
	deadline := time.After(3 * time.Second)
	for {
		select {
		case e := <-ev:
			if e.Type == "real_health" && (!real.IsValid() || e.Real == real.String()) && e.State == string(state) {
				return e
			}
		case <-deadline:
			t.Fatalf("no event: %s %s", real, state)
		}
	}
}

func ringHolds(dp *fakedp.Datapath, key lb.VIPKey) map[datapath.RealID]int {
	n := map[datapath.RealID]int{}
	for _, id := range dp.Rings[key] {
		n[datapath.RealID(id)]++
	}
	return n
}

func TestHealthTakesRealsOutOfTheRingAndBack(t *testing.T) {
	r3 := netip.MustParseAddr("10.0.0.3")
	c, dp, st := newTestController(t)
	mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1), active(r3, 1)},
		Health: health.Spec{Type: health.TCP, Interval: 100 * time.Millisecond, Rise: 2, Fall: 2}, DownFlows: ResetFlows})
	before := slices.Clone(dp.Rings[vipA])
	dp.FlowList = []datapath.Flow{
		{Key: datapath.FlowKey{Client: netip.MustParseAddrPort("198.51.100.1:1000")}, Real: dp.RealMap[r2], VIPNum: dp.VIPMap[vipA].Num},
		{Key: datapath.FlowKey{Client: netip.MustParseAddrPort("198.51.100.1:1001")}, Real: dp.RealMap[r1], VIPNum: dp.VIPMap[vipA].Num},
	}
	saves := st.saves

	p := &switchProber{ok: map[netip.Addr]bool{}}
	tun := &fakeTunnel{marks: map[uint32]netip.Addr{}}
	ev, stop := c.Subscribe(16)
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c.StartHealth(ctx, p, 4, tun)
	if len(tun.marks) != 3 || tun.marks[ProbeMarkBase+uint32(dp.RealMap[r2])] != r2 {
		t.Fatalf("tunnel marks %v", tun.marks)
	}

	fpUp := c.Fingerprint()
	p.set(r2, false)
	e := waitEvent(t, ev, r2, health.Down)
	if c.Fingerprint() == fpUp {
		t.Error("a real went down and the fingerprint stayed: it must show the health state the ring is built with")
	}
	if e.FlowsRemoved != 1 || len(dp.FlowList) != 1 || dp.FlowList[0].Real != dp.RealMap[r1] {
		t.Errorf("reset policy: removed %d, left %+v", e.FlowsRemoved, dp.FlowList)
	}
	holds := ringHolds(dp, vipA)
	if holds[dp.RealMap[r2]] != 0 || holds[dp.RealMap[r1]]+holds[dp.RealMap[r3]] != 1021 {
		t.Errorf("ring with r2 down: %v", holds)
	}
	if s, ok := c.RealHealth(vipA, r2); !ok || s.State != health.Down {
		t.Errorf("health of r2: %+v %v", s, ok)
	}
	if drifts, err := c.Reconcile(); err != nil || len(drifts) != 0 {
		t.Errorf("a down real is no drift: %+v %v", drifts, err)
	}

	p.set(r2, true)
	waitEvent(t, ev, r2, health.Up)
	if c.Fingerprint() != fpUp {
		t.Error("r2 back up: the fingerprint is not the one it had")
	}
	if !slices.Equal(dp.Rings[vipA], before) {
		t.Error("r2 back up: the ring is not the original one")
	}
	if st.saves != saves {
		t.Error("health changes were written to the state file")
	}

	// Removing a real from the VIP removes its check and its tunnel mark.
	if _, err := c.DeleteReal(vipA, r3); err != nil {
		t.Fatal(err)
	}
	if len(tun.marks) != 2 {
		t.Errorf("tunnel marks after removing r3: %v", tun.marks)
	}
	if _, ok := c.RealHealth(vipA, r3); ok {
		t.Error("removed real still checked")
	}
}

func TestAllRealsDownPolicy(t *testing.T) {
	for _, policy := range []AllDown{ServeAll, DropAll} {
		t.Run(string(policy), func(t *testing.T) {
			c, dp, _ := newTestController(t)
			mustCreate(t, c, VIP{Key: vipA, RingSize: 1021, Reals: []Real{active(r1, 1), active(r2, 1)}, AllDown: policy,
				Health: health.Spec{Type: health.TCP, Interval: 100 * time.Millisecond, Rise: 1, Fall: 1}})
			before := slices.Clone(dp.Rings[vipA])
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
			switch policy {
			case ServeAll:
				if !slices.Equal(dp.Rings[vipA], before) {
					t.Error("serve-all: with every real down the ring should hold them all")
				}
			case DropAll:
				if !slices.Equal(dp.Rings[vipA], []uint32{0}) {
					t.Error("drop: with every real down the ring should be empty")
				}
			}
		})
	}
}
