package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/etcdtest"
	"github.com/lbd-dev/lbd/internal/fakedp"
)

type testNode struct {
	n    *Node
	ctl  *control.Controller
	dp   *fakedp.Datapath
	dir  string
	p    *etcdtest.Proxies
	stop func()
}

func startNode(t *testing.T, c *etcdtest.Cluster, name, dir string) *testNode {
	return startNodeWith(t, c, name, dir, false)
}

// startNodeCut starts a node whose proxies are cut before its first dial.
func startNodeCut(t *testing.T, c *etcdtest.Cluster, name, dir string) *testNode {
	return startNodeWith(t, c, name, dir, true)
}

func startNodeWith(t *testing.T, c *etcdtest.Cluster, name, dir string, cut bool) *testNode {
	t.Helper()
	p := c.Proxies(t)
	if cut {
		p.Cut()
	}
	s := open(t, p.Endpoints(), name)
	local, err := control.NewStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	last, err := local.Load()
	if err != nil {
		t.Fatal(err)
	}
	n := NewNode(s, local)
	dp := fakedp.New()
	ctl := control.New(dp, n, last, nil)
	if _, err := ctl.Reconcile(); err != nil {
		t.Fatal(err)
	}
	n.Attach(ctl)
	tn := &testNode{n: n, ctl: ctl, dp: dp, dir: dir, p: p}
	tn.run()
	t.Cleanup(func() { tn.stop() })
	return tn
}

// run starts the node's watch; stop ends it.
func (tn *testNode) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); tn.n.Run(ctx) }()
	tn.stop = func() { cancel(); <-done; tn.stop = func() {} }
}

// waitApplied waits (bounded) until every node applied rev.
func waitApplied(t *testing.T, rev int64, nodes ...*testNode) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for _, tn := range nodes {
		for tn.n.Applied() < rev {
			if time.Now().After(deadline) {
				t.Fatalf("node %s at revision %d, want %d", tn.n.s.Node(), tn.n.Applied(), rev)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}
}

func fingerprints(nodes []*testNode) []string {
	var fps []string
	for _, tn := range nodes {
		fps = append(fps, tn.ctl.Fingerprint())
	}
	return fps
}

func sameFingerprints(t *testing.T, nodes []*testNode) {
	t.Helper()
	fps := fingerprints(nodes)
	if len(slices.Compact(slices.Clone(fps))) != 1 {
		t.Fatalf("fingerprints differ: %v", fps)
	}
}

func TestFleetNodes(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var nodes []*testNode
	for i := range 3 {
		nodes = append(nodes, startNode(t, c, fmt.Sprintf("n%d", i), filepath.Join(t.TempDir(), "state")))
	}
	for _, tn := range nodes {
		waitSynced(t, tn)
	}
	v := vip(1)

	t.Run("write through one node, all converge", func(t *testing.T) {
		if _, err := nodes[0].ctl.CreateVIP(*v); err != nil {
			t.Fatal(err)
		}
		waitApplied(t, nodes[0].n.Applied(), nodes...)
		sameFingerprints(t, nodes)
		for _, tn := range nodes {
			got, err := tn.ctl.VIP(v.Key)
			if err != nil || len(got.Reals) != 2 {
				t.Fatalf("node %s: %v %+v", tn.n.s.Node(), err, got)
			}
		}
		// Every node persisted the same state file.
		want, _ := os.ReadFile(filepath.Join(nodes[0].dir, control.StateFileName))
		for _, tn := range nodes[1:] {
			got, _ := os.ReadFile(filepath.Join(tn.dir, control.StateFileName))
			if string(got) != string(want) {
				t.Fatalf("node %s state file differs:\n%s\nwant\n%s", tn.n.s.Node(), got, want)
			}
		}
	})

	t.Run("100 changes: write to last node applied", func(t *testing.T) {
		var lat []time.Duration
		for i := range 100 {
			w := uint32(1 + i%50)
			start := time.Now()
			if _, err := nodes[i%3].ctl.SetReals(v.Key, []control.Real{{Addr: netip.MustParseAddr("10.0.0.1"), Weight: w}, {Addr: netip.MustParseAddr("10.0.0.2"), Weight: 100}}); err != nil {
				t.Fatal(err)
			}
			waitApplied(t, nodes[i%3].n.Applied(), nodes...)
			lat = append(lat, time.Since(start))
		}
		sameFingerprints(t, nodes)
		slices.Sort(lat)
		t.Logf("write -> last node applied over %d changes: p50 %v p99 %v max %v", len(lat), lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1])
	})

	t.Run("behind node refuses with conflict, converges, then writes", func(t *testing.T) {
		nodes[2].p.Cut()
		if _, err := nodes[0].ctl.CreateVIP(*vip(2)); err != nil {
			t.Fatal(err)
		}
		before := nodes[2].ctl.Fingerprint()
		if _, err := nodes[2].ctl.CreateVIP(*vip(3)); err == nil {
			t.Fatal("a node cut off from etcd made a change")
		}
		if nodes[2].ctl.Fingerprint() != before {
			t.Fatal("a refused change moved the cut-off node's state")
		}
		// Still forwarding with the last applied state.
		if _, err := nodes[2].ctl.VIP(v.Key); err != nil {
			t.Fatal(err)
		}
		nodes[2].p.Heal()
		waitApplied(t, nodes[0].n.Applied(), nodes...)
		sameFingerprints(t, nodes)
		// Behind by a write it has not seen (its watch stopped): 409
		// (ErrConflict), nothing moves, nothing reaches etcd.
		nodes[1].stop()
		if _, err := nodes[0].ctl.CreateVIP(*vip(4)); err != nil {
			t.Fatal(err)
		}
		before = nodes[1].ctl.Fingerprint()
		rev := nodes[0].n.Applied()
		if _, err := nodes[1].ctl.CreateVIP(*vip(5)); !errors.Is(err, control.ErrConflict) {
			t.Fatalf("write on a node behind: %v, want ErrConflict", err)
		}
		if nodes[1].ctl.Fingerprint() != before {
			t.Fatal("a refused change moved the node's state")
		}
		if d, err := nodes[0].n.s.Get(context.Background()); err != nil || d.Revision != rev {
			t.Fatalf("etcd at revision %d (%v) after a refused write, want %d", d.Revision, err, rev)
		}
		nodes[1].run()
		waitApplied(t, rev, nodes...)
		if _, err := nodes[1].ctl.CreateVIP(*vip(6)); err != nil {
			t.Fatalf("write after catching up: %v", err)
		}
		waitApplied(t, nodes[1].n.Applied(), nodes...)
		sameFingerprints(t, nodes)
	})

	t.Run("restart cut off keeps the last applied state and holds", func(t *testing.T) {
		fp := nodes[2].ctl.Fingerprint()
		nodes[2].stop()
		tn := startNodeCut(t, c, "n2", nodes[2].dir)
		if tn.ctl.Fingerprint() != fp {
			t.Fatal("restarted node lost its last applied state")
		}
		time.Sleep(300 * time.Millisecond)
		if tn.n.Synced() {
			t.Fatal("a node that never reached etcd calls itself synced")
		}
		if _, err := nodes[0].ctl.CreateVIP(*vip(7)); err != nil {
			t.Fatal(err)
		}
		tn.p.Heal()
		waitSynced(t, tn)
		waitApplied(t, nodes[0].n.Applied(), nodes[0], nodes[1], tn)
		sameFingerprints(t, []*testNode{nodes[0], nodes[1], tn})
	})
}

func waitSynced(t *testing.T, tn *testNode) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !tn.n.Synced() {
		if time.Now().After(deadline) {
			t.Fatalf("node %s never synced", tn.n.s.Node())
		}
		time.Sleep(time.Millisecond)
	}
}

// A node that cannot run the fleet's state (here: its datapath has room
// for two VIPs, the fleet asks for three) keeps forwarding with what it
// ran, does not write its old state back to etcd when it rolls back,
// and, its fingerprint differing from the fleet's, holds its
// announcement after the withdraw time; when the fleet comes back to a
// state it can run, it applies it and announces again. The announcer is
// told at once both times.
func TestFleetNodeThatCannotApply(t *testing.T) {
	c := etcdtest.Start(t, 3)
	var nodes []*testNode
	var loops []*Loop
	// told records, per node, when the announcer was kicked and whether
	// the node held then.
	type tell struct {
		at   time.Time
		held bool
	}
	var mu sync.Mutex
	told := make([][]tell, 3)
	safety := Safety{StaleAfter: 3 * time.Second, WithdrawAfter: time.Second}
	for i := range 3 {
		tn := startNode(t, c, fmt.Sprintf("n%d", i), filepath.Join(t.TempDir(), "state"))
		if i == 2 {
			tn.dp.MaxVIPs = 2
		}
		l := &Loop{Node: tn.n, Every: 100 * time.Millisecond, Safety: safety, Health: HealthLocal}
		l.SetBGP(func() string { return "test" }, func() {
			held := l.Hold() != nil
			mu.Lock()
			told[i] = append(told[i], tell{time.Now(), held})
			mu.Unlock()
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); l.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		nodes, loops = append(nodes, tn), append(loops, l)
	}
	for _, tn := range nodes {
		waitSynced(t, tn)
	}
	// waitHold waits (bounded) until the announcer of node i was told,
	// after since, that the node holds (or not); it returns when.
	waitHold := func(i int, held bool, since time.Time) time.Time {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for {
			mu.Lock()
			for _, k := range told[i] {
				if !k.at.Before(since) && k.held == held {
					mu.Unlock()
					return k.at
				}
			}
			mu.Unlock()
			if time.Now().After(deadline) {
				mu.Lock()
				defer mu.Unlock()
				t.Fatalf("node %d: the announcer was not told held=%v since %v; hold now: %v; told: %v", i, held, since, loops[i].Hold(), told[i])
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	t0 := time.Now().Add(-time.Minute)
	for i := range nodes {
		waitHold(i, false, t0)
	}
	for _, k := range []int{1, 2} {
		if _, err := nodes[0].ctl.CreateVIP(*vip(k)); err != nil {
			t.Fatal(err)
		}
	}
	waitApplied(t, nodes[0].n.Applied(), nodes...)
	sameFingerprints(t, nodes)
	ran := nodes[2].ctl.Fingerprint()
	ranRev := nodes[2].n.Applied()

	// The third VIP: nodes 0 and 1 run it, node 2 cannot.
	changed := time.Now()
	if _, err := nodes[0].ctl.CreateVIP(*vip(3)); err != nil {
		t.Fatal(err)
	}
	rev := nodes[0].n.Applied()
	waitApplied(t, rev, nodes[0], nodes[1])
	held := waitHold(2, true, changed)
	if got := held.Sub(changed); got < safety.WithdrawAfter {
		t.Errorf("node 2 held after %v, before the withdraw time %v", got, safety.WithdrawAfter)
	}
	if err := loops[2].Hold(); !strings.Contains(err.Error(), "differs from the fleet") {
		t.Errorf("node 2 holds because %v, want its fingerprint differing", err)
	}
	t.Logf("a node that cannot apply the fleet's state holds %v after the change (withdraw time %v)", held.Sub(changed).Round(time.Millisecond), safety.WithdrawAfter)
	if nodes[2].ctl.Fingerprint() != ran || nodes[2].n.Applied() != ranRev {
		t.Fatalf("node 2 runs revision %d, want the last it could (%d), unchanged", nodes[2].n.Applied(), ranRev)
	}
	if _, err := nodes[2].ctl.VIP(vip(2).Key); err != nil {
		t.Fatalf("node 2 lost what it ran: %v", err)
	}
	// Its rollback stayed local: etcd still has the fleet's three VIPs.
	d, err := nodes[1].n.s.Get(context.Background())
	if err != nil || d.Revision != rev || len(d.VIPs) != 3 {
		t.Fatalf("etcd at revision %d with %d VIPs (%v), want the fleet's %d with 3", d.Revision, len(d.VIPs), err, rev)
	}
	if loops[0].Hold() != nil || loops[1].Hold() != nil {
		t.Fatalf("the nodes that run the fleet's state hold: %v, %v", loops[0].Hold(), loops[1].Hold())
	}
	local, err := control.NewStore(nodes[2].dir)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := local.Load(); err != nil || len(st) != 2 {
		t.Fatalf("node 2's state file has %d VIPs (%v), want the 2 it runs", len(st), err)
	}

	// Back to a state node 2 can run: it applies it and announces again.
	back := time.Now()
	if err := nodes[1].ctl.DeleteVIP(vip(3).Key); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, nodes[1].n.Applied(), nodes...)
	waitHold(2, false, back)
	sameFingerprints(t, nodes)
}
