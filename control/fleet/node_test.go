package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/etcdtest"
	"github.com/lbd-dev/lbd/internal/fakedp"
)

type testNode struct {
	n    *Node
	ctl  *control.Controller
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
	ctl := control.New(fakedp.New(), n, last, nil)
	if _, err := ctl.Reconcile(); err != nil {
		t.Fatal(err)
	}
	n.Attach(ctl)
	tn := &testNode{n: n, ctl: ctl, dir: dir, p: p}
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
		waitApplied(t, nodes[0].n.Applied(), tn)
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
