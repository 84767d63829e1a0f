package fleet

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/etcdtest"
	"github.com/lbd-dev/lbd/internal/fakedp"
	"github.com/lbd-dev/lbd/lb"
)

// prober fails the probes of the reals it is told to.
type prober struct {
	mu   sync.Mutex
	fail map[netip.Addr]bool
}

func (p *prober) Probe(_ context.Context, t health.Target, _ health.Spec) health.Result {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail[t.Real] {
		return health.Result{OK: false, Reason: "test: refused", At: time.Now()}
	}
	return health.Result{OK: true, At: time.Now()}
}

func (p *prober) set(a netip.Addr, fail bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fail[a] = fail
}

type healthNode struct {
	*testNode
	p *prober
}

// startHealthFleet starts three nodes with health checks and fleet loops
// in the given mode.
func startHealthFleet(t *testing.T, c *etcdtest.Cluster, fleetName string, mode HealthMode) []healthNode {
	t.Helper()
	var out []healthNode
	for i := range 3 {
		p := c.Proxies(t)
		s, err := Open(Config{Endpoints: p.Endpoints(), Fleet: fleetName, Node: fmt.Sprintf("n%d", i), DialTimeout: time.Second, ReportTTL: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		local, err := control.NewStore(filepath.Join(t.TempDir(), "state"))
		if err != nil {
			t.Fatal(err)
		}
		n := NewNode(s, local)
		ctl := control.New(fakedp.New(), n, nil, nil)
		if _, err := ctl.Reconcile(); err != nil {
			t.Fatal(err)
		}
		n.Attach(ctl)
		ctl.SetSharedHealth(mode == HealthQuorum)
		ctx, cancel := context.WithCancel(context.Background())
		pr := &prober{fail: map[netip.Addr]bool{}}
		ctl.StartHealth(ctx, pr, 8, nil)
		loop := &Loop{Node: n, Every: 100 * time.Millisecond, Safety: Safety{StaleAfter: 3 * time.Second}, Health: mode}
		var wg sync.WaitGroup
		wg.Go(func() { n.Run(ctx) })
		wg.Go(func() { loop.Run(ctx) })
		tn := &testNode{n: n, ctl: ctl, p: p, stop: func() { cancel(); wg.Wait() }}
		t.Cleanup(func() { tn.stop() })
		out = append(out, healthNode{tn, pr})
	}
	return out
}

func checkedVIP() control.VIP {
	v := *vip(9)
	v.Health = health.Spec{Type: health.TCP, Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Rise: 1, Fall: 2}
	return v
}

// inRing tells whether addr has slots in the node's ring of key.
func inRing(t *testing.T, ctl *control.Controller, key lb.VIPKey, addr netip.Addr) bool {
	t.Helper()
	_, shares, _, err := ctl.Ring(key)
	if err != nil {
		t.Fatal(err)
	}
	return slices.ContainsFunc(shares, func(s control.RingShare) bool { return s.Real == addr && s.Slots > 0 })
}

// waitRings waits (bounded) until every node's ring has (or lacks) addr,
// and returns how long it took.
func waitRings(t *testing.T, nodes []healthNode, key lb.VIPKey, addr netip.Addr, in bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	for _, n := range nodes {
		for inRing(t, n.ctl, key, addr) != in {
			if time.Now().After(deadline) {
				t.Fatalf("node %s: real %s in ring %v, want %v", n.n.s.Node(), addr, !in, in)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return time.Since(start)
}

func TestFleetQuorumHealth(t *testing.T) {
	c := etcdtest.Start(t, 3)
	quorum := startHealthFleet(t, c, "q", HealthQuorum)
	local := startHealthFleet(t, c, "l", HealthLocal)
	v := checkedVIP()
	bad := netip.MustParseAddr("10.0.0.2")
	for _, fl := range [][]healthNode{quorum, local} {
		for _, n := range fl {
			waitSynced(t, n.testNode)
		}
		if _, err := fl[0].ctl.CreateVIP(v); err != nil {
			t.Fatal(err)
		}
		waitApplied(t, fl[0].n.Applied(), fl[0].testNode, fl[1].testNode, fl[2].testNode)
		waitRings(t, fl, v.Key, bad, true)
	}

	// One node of three sees the real down: no quorum, no ring changes.
	quorum[0].p.set(bad, true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		rs, err := quorum[1].n.s.Reports(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if i := slices.IndexFunc(rs, func(r Report) bool { return r.Node == "n0" }); i >= 0 && len(rs[i].Down) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node 0 never reported its observation")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Two loop rounds after the report, every ring still has the real.
	time.Sleep(300 * time.Millisecond)
	for _, n := range quorum {
		if !inRing(t, n.ctl, v.Key, bad) {
			t.Fatalf("node %s dropped a real only one node of three sees down", n.n.s.Node())
		}
	}
	fps := fingerprints([]*testNode{quorum[0].testNode, quorum[1].testNode, quorum[2].testNode})
	if len(slices.Compact(slices.Clone(fps))) != 1 {
		t.Fatalf("fingerprints differ while one node disagrees on health: %v", fps)
	}
	quorum[0].p.set(bad, false)
	time.Sleep(300 * time.Millisecond)

	// The real's server stops (every node's probes fail): detection time
	// to the last ring without it, quorum and local, interleaved.
	var dq, dl []time.Duration
	for range 3 {
		for _, n := range quorum {
			n.p.set(bad, true)
		}
		dq = append(dq, waitRings(t, quorum, v.Key, bad, false))
		fps := fingerprints([]*testNode{quorum[0].testNode, quorum[1].testNode, quorum[2].testNode})
		if len(slices.Compact(slices.Clone(fps))) != 1 {
			t.Fatalf("fingerprints differ after the quorum dropped the real: %v", fps)
		}
		for _, n := range local {
			n.p.set(bad, true)
		}
		dl = append(dl, waitRings(t, local, v.Key, bad, false))
		for _, fl := range [][]healthNode{quorum, local} {
			for _, n := range fl {
				n.p.set(bad, false)
			}
			waitRings(t, fl, v.Key, bad, true)
		}
	}
	t.Logf("detection (probe interval 100ms, fall 2, report interval 100ms), last ring without the real: quorum %v, local %v", dq, dl)
}
