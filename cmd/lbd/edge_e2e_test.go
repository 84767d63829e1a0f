package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lab"
)

// The edge test (issue 9): two lbd nodes behind a router that runs BIRD 2,
// peers with both over eBGP and spreads the VIP over them with layer-4
// ECMP. One node is taken away (drained, then killed with its link cut)
// and brought back; no established connection may break.

// edgeLab is the two-node lab and an API client per node.
type edgeLab struct {
	t   *testing.T
	lab *lab.Lab
	api []*client.Client
	ctx context.Context
}

func newEdgeLab(t *testing.T) *edgeLab {
	return newEdgeLabWith(t, 2, false)
}

// newEdgeLabWith builds the lab with nodes lbd nodes behind the BIRD
// router; with noLBD the nodes' lbd serve is left to the test
// (lab.StartNode, then connect).
func newEdgeLabWith(t *testing.T, nodes int, noLBD bool) *edgeLab {
	privtest.Require(t)
	bird, err := lab.FindBird()
	if err != nil {
		if privtest.InVMGuest() {
			// The busybox guests of the kernel matrix have no BIRD; the
			// test needs no particular kernel feature beyond the other
			// lab tests, and runs on the host (in CI: required).
			t.Skipf("kernel-matrix guest: %v; this test runs on the host", err)
		}
		privtest.Unavailable(t, err.Error())
	}
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "e" + hex.EncodeToString(b)
	bin, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	apiAddr := ln.Addr().String()
	ln.Close()
	t.Cleanup(func() {
		for range 2 {
			if err := lab.Down(name, nil); err != nil {
				t.Errorf("lab down: %v", err)
			}
		}
		left := labLeftovers(name)
		if _, err := netlink.LinkByName("lbl" + name + "-1"); err == nil {
			left += " interface lbl" + name + "-1"
		}
		if strings.TrimSpace(left) != "" {
			t.Errorf("lab down left: %s", left)
		}
	})
	l, err := lab.Up(lab.Config{Name: name, Clients: 4, Reals: 3, LBNodes: nodes, NoLBD: noLBD, Bird: bird, Binary: bin, Env: []string{"LBD_TEST_MAIN=1"},
		API: apiAddr, Log: tlog{t}, RealLink: os.Getenv("LBD_E2E_REAL_LINK"), Decap: os.Getenv("LBD_E2E_DECAP")})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			files := []string{"bird.log"}
			for _, n := range l.Nodes {
				files = append(files, n.Log)
			}
			for _, f := range files {
				if log, err := os.ReadFile(lab.Dir(name) + "/" + f); err == nil {
					t.Logf("%s:\n%s", f, log)
				}
			}
		}
	})
	e := &edgeLab{t: t, lab: l, ctx: context.Background(), api: make([]*client.Client, len(l.Nodes))}
	if !noLBD {
		for i := range l.Nodes {
			e.connect(i)
		}
	}
	return e
}

// connect makes node i's API client (again, after a restart).
func (e *edgeLab) connect(i int) {
	n := e.lab.Nodes[i]
	tok, err := os.ReadFile(n.TokenFile)
	if err != nil {
		e.t.Fatal(err)
	}
	if e.api[i], err = client.New(n.API, client.Options{Token: strings.TrimSpace(string(tok))}); err != nil {
		e.t.Fatal(err)
	}
}

// waitHops polls the router's kernel route to the VIP (every 2 ms) until
// it has want next hops, and returns how long that took from start.
func (e *edgeLab) waitHops(t *testing.T, want int, start time.Time, within time.Duration) time.Duration {
	t.Helper()
	took, err := e.hopsAfter(want, start, within)
	if err != nil {
		t.Fatal(err)
	}
	return took
}

func (e *edgeLab) hopsAfter(want int, start time.Time, within time.Duration) (time.Duration, error) {
	for {
		hops, err := e.lab.VIPNextHops(lab.VIP4)
		if err != nil {
			return 0, err
		}
		if len(hops) == want {
			return time.Since(start), nil
		}
		if time.Since(start) > within {
			return 0, fmt.Errorf("router's route to %s has next hops %v after %v, want %d", lab.VIP4, hops, within, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pingers keep every established connection busy (one ping after the
// other on each) until stopped, and count the pings that failed.
type pingers struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup
	errMu      sync.Mutex
	errs       []string
}

func startPingers(conns []*lab.Conn) *pingers {
	p := &pingers{stop: make(chan struct{})}
	for i, c := range conns {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			for k := 0; k < 100000; k++ { // bounded; stopped long before
				select {
				case <-p.stop:
					return
				default:
				}
				if err := c.Ping(fmt.Sprintf("busy %d %d", i, k)); err != nil {
					p.failed.Add(1)
					p.errMu.Lock()
					p.errs = append(p.errs, err.Error())
					p.errMu.Unlock()
					return // a broken connection stays broken
				}
				p.ok.Add(1)
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	return p
}

func (p *pingers) finish() {
	close(p.stop)
	p.wg.Wait()
}

// vipStats returns node i's counters of the TCP VIP.
func (e *edgeLab) vipStats(t *testing.T, i int) apiv1.VIPStatsJSON {
	t.Helper()
	s, err := e.api[i].VIPStats(e.ctx, vipAPIName("tcp", lab.VIP4))
	if err != nil {
		t.Fatalf("node %d: %v", i, err)
	}
	return s
}

// snapshot is both nodes' counters of the VIP.
func (e *edgeLab) snapshot(t *testing.T, nodes ...int) []apiv1.VIPStatsJSON {
	t.Helper()
	out := make([]apiv1.VIPStatsJSON, len(e.lab.Nodes))
	for _, i := range nodes {
		out[i] = e.vipStats(t, i)
	}
	return out
}

// settle waits until no node forwards anything for 300 ms (at most 5 s).
func (e *edgeLab) settle(t *testing.T, nodes ...int) {
	t.Helper()
	last := ""
	for range 50 {
		var b strings.Builder
		for _, i := range nodes {
			st, err := e.api[i].Stats(e.ctx)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%d ", st.Global.Counters["tx"])
		}
		if b.String() == last {
			return
		}
		last = b.String()
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("lbd nodes still forwarding after 5 s of no traffic (tx %s)", last)
}

// flowPackets returns node i's packet count of each flow of the VIP, by
// client address and port.
func (e *edgeLab) flowPackets(t *testing.T, i int) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	cursor := ""
	for range 100 {
		p, err := e.api[i].Flows(e.ctx, client.FlowQuery{VIP: vipAPIName("tcp", lab.VIP4), Limit: 1000, Cursor: cursor})
		if err != nil {
			t.Fatalf("node %d flows: %v", i, err)
		}
		for _, f := range p.Flows {
			out[f.Client] = f.Packets
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	return out
}

// carriers pings every connection once and returns how many went through
// each node: the node whose connection table counted the ping's packets.
func (e *edgeLab) carriers(t *testing.T, when string, conns []*lab.Conn, nodes ...int) map[int]int {
	t.Helper()
	before := map[int]map[string]uint64{}
	for _, i := range nodes {
		before[i] = e.flowPackets(t, i)
	}
	pingEach(t, when, conns)
	e.settle(t, nodes...)
	out := map[int]int{}
	for _, i := range nodes {
		after := e.flowPackets(t, i)
		for _, c := range conns {
			k := c.LocalAddr().String()
			if after[k] > before[i][k] {
				out[i]++
			}
		}
	}
	t.Logf("%s: connections through node 0: %d, node 1: %d (of %d)", when, out[0], out[1], len(conns))
	return out
}

// pingEach pings every connection and counts the failures.
func pingEach(t *testing.T, when string, conns []*lab.Conn) int {
	t.Helper()
	bad := 0
	for i, c := range conns {
		if err := c.Ping(fmt.Sprintf("%s %d", when, i)); err != nil {
			bad++
			t.Errorf("%s: connection %d broke: %v", when, i, err)
		}
	}
	t.Logf("%s: %d of %d established connections broke", when, bad, len(conns))
	return bad
}

// load opens short connections from every client, one after the other
// per client, until stopped, and counts those that failed.
type load struct {
	ok, failed atomic.Int64
	slowest    atomic.Int64 // ns
	stop       chan struct{}
	wg         sync.WaitGroup
	errMu      sync.Mutex
	errs       []string
}

func startLoad(l *lab.Lab) *load {
	ld := &load{stop: make(chan struct{})}
	for i := range l.Clients {
		ld.wg.Add(1)
		go func() {
			defer ld.wg.Done()
			for n := 0; n < 100000; n++ { // bounded; stopped long before
				select {
				case <-ld.stop:
					return
				default:
				}
				t0 := time.Now()
				c, err := l.Dial(i, lab.VIP4)
				if err == nil {
					err = c.Ping("load")
					c.Close()
				}
				if d := int64(time.Since(t0)); d > ld.slowest.Load() {
					ld.slowest.Store(d)
				}
				if err != nil {
					ld.failed.Add(1)
					ld.errMu.Lock()
					ld.errs = append(ld.errs, err.Error())
					ld.errMu.Unlock()
					continue
				}
				ld.ok.Add(1)
			}
		}()
	}
	return ld
}

func (ld *load) finish() {
	close(ld.stop)
	ld.wg.Wait()
}

// TestEdgeECMP: two lbd nodes with the same VIP behind a BGP ECMP router.
// Both announce, the router has two next hops, and new connections spread
// over both. Node 0 is then drained and, separately, killed with its link
// cut: its route goes (measured), the established connections it carried
// go on through node 1 (which has never seen them but picks the same real
// from the same Maglev ring), short connections opened meanwhile all
// complete, and new connections reach node 1 alone. Brought back, node 0
// is announced again and takes new connections.
func TestEdgeECMP(t *testing.T) {
	e := newEdgeLab(t)
	l := e.lab
	t.Logf("mode: reals by %s, decapsulation %s", l.RealLink, l.Decap)
	const a, b = 0, 1 // node a goes away, node b stays
	var reals []apiv1.RealJSON
	for _, r := range l.Reals {
		reals = append(reals, apiv1.RealJSON{Address: r.Addr4.String()})
	}
	start := time.Now()
	for i := range l.Nodes {
		if _, _, err := e.api[i].PutVIP(e.ctx, vipAPIName("tcp", lab.VIP4), apiv1.VIPSettingsJSON{Reals: reals, RingSize: 65537}); err != nil {
			t.Fatalf("node %d: put VIP: %v", i, err)
		}
	}
	took := e.waitHops(t, 2, start, 20*time.Second)
	hops, _ := l.VIPNextHops(lab.VIP4)
	t.Logf("EDGE both nodes announce: the router has next hops %v %v after the VIPs were created", hops, took.Round(time.Millisecond))

	// Spread: every connection is one new flow on exactly one node.
	before := e.snapshot(t, a, b)
	const perClient = 100
	counts, err := l.ShortTCP(lab.VIP4, perClient)
	if err != nil {
		t.Fatalf("%s: %v", counts, err)
	}
	e.settle(t, a, b)
	after := e.snapshot(t, a, b)
	n := perClient * len(l.Clients)
	// A connection counts two LRU misses: its SYN (not recorded) and the
	// ACK that records it.
	flowsA, flowsB := (after[a].LRUMisses-before[a].LRUMisses)/2, (after[b].LRUMisses-before[b].LRUMisses)/2
	t.Logf("EDGE spread: %d connections, node 0 %d new connections, node 1 %d; reals %s", n, flowsA, flowsB, counts)
	if got := after[a].LRUMisses - before[a].LRUMisses + after[b].LRUMisses - before[b].LRUMisses; got != 2*uint64(n) {
		t.Errorf("LRU misses on the nodes sum to %d, want %d (two per connection: the SYN and the ACK that records it)", got, 2*n)
	}
	if flowsA < uint64(n)/4 || flowsB < uint64(n)/4 {
		t.Errorf("connections spread badly over the nodes: %d and %d of %d", flowsA, flowsB, n)
	}

	// Long-lived connections, over both nodes.
	before = e.snapshot(t, a, b)
	var conns []*lab.Conn
	for range 15 {
		for i := range l.Clients {
			c, err := l.Dial(i, lab.VIP4)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	after = e.snapshot(t, a, b)
	onA := (after[a].LRUMisses - before[a].LRUMisses) / 2 // two misses per connection
	t.Logf("%d long-lived connections: %d through node 0, %d through node 1; reals %s", len(conns), onA, (after[b].LRUMisses-before[b].LRUMisses)/2, perReal(conns))
	if onA == 0 {
		t.Fatal("no long-lived connection goes through node 0: nothing to move")
	}
	if got := e.carriers(t, "both nodes up", conns, a, b); got[a]+got[b] != len(conns) || got[a] == 0 {
		t.Fatalf("connections through the nodes: %v, want %d in all and some through node 0", got, len(conns))
	}

	t.Run("drain", func(t *testing.T) {
		busy := startPingers(conns)
		time.Sleep(200 * time.Millisecond)
		start := time.Now()
		if _, err := e.api[a].Drain(e.ctx); err != nil {
			t.Fatal(err)
		}
		took := e.waitHops(t, 1, start, 10*time.Second)
		hops, _ := l.VIPNextHops(lab.VIP4)
		t.Logf("EDGE drain: route down to %v %v after POST /api/v1/drain", hops, took.Round(time.Millisecond))
		if len(hops) != 1 || hops[0] != l.Nodes[b].Addr {
			t.Fatalf("next hops %v after draining node 0, want node 1's %s", hops, l.Nodes[b].Addr)
		}
		time.Sleep(500 * time.Millisecond)
		busy.finish()
		t.Logf("EDGE drain: busy connections across the withdrawal: %d pings answered, %d connections broke", busy.ok.Load(), busy.failed.Load())
		if busy.failed.Load() > 0 {
			t.Errorf("%d busy connections broke across the drain: %v", busy.failed.Load(), busy.errs[:min(len(busy.errs), 5)])
		}
		e.settle(t, a, b)
		before := e.snapshot(t, a, b)
		if got := e.carriers(t, "node 0 drained", conns, a, b); got[b] != len(conns) || got[a] != 0 {
			t.Errorf("connections through the nodes with node 0 drained: %v, want all %d through node 1", got, len(conns))
		}
		mid := e.snapshot(t, a, b)
		counts, err := l.ShortTCP(lab.VIP4, 25)
		if err != nil {
			t.Fatalf("new connections with node 0 drained: %s: %v", counts, err)
		}
		e.settle(t, a, b)
		after := e.snapshot(t, a, b)
		if got := after[a].Packets - before[a].Packets; got != 0 {
			t.Errorf("node 0 is drained but got %d packets", got)
		}
		if got := after[b].LRUMisses - mid[b].LRUMisses; got != uint64(2*25*len(l.Clients)) {
			t.Errorf("node 1 got %d LRU misses, want %d (two for every new connection: the SYN and the ACK that records it)", got, 2*25*len(l.Clients))
		}
		start = time.Now()
		if _, err := e.api[a].Undrain(e.ctx); err != nil {
			t.Fatal(err)
		}
		took = e.waitHops(t, 2, start, 10*time.Second)
		t.Logf("EDGE undrain: two next hops again %v after POST /api/v1/drain?undo", took.Round(time.Millisecond))
		e.carriers(t, "node 0 back from drain", conns, a, b)
		e.checkTakesTraffic(t, a)
	})

	t.Run("kill", func(t *testing.T) {
		onA := e.carriers(t, "before the loss", conns, a, b)[a]
		t.Logf("EDGE kill: %d of %d established connections go through node 0", onA, len(conns))
		busy := startPingers(conns)
		ld := startLoad(l)
		time.Sleep(300 * time.Millisecond)
		// A lost node: its link goes (the router sees it at once) and
		// its lbd dies. A killed lbd alone would not do: its XDP program
		// stays attached and forwards on (hitless restarts).
		start := time.Now()
		withdrawn := make(chan error, 1)
		var took time.Duration
		go func() {
			var err error
			took, err = e.hopsAfter(1, start, 15*time.Second)
			withdrawn <- err
		}()
		if err := l.SetNodeLink(a, false); err != nil {
			t.Fatal(err)
		}
		if err := l.StopNode(a, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if err := <-withdrawn; err != nil {
			t.Fatal(err)
		}
		hops, _ := l.VIPNextHops(lab.VIP4)
		t.Logf("EDGE kill: route down to %v %v after node 0's link went down (and its lbd got SIGKILL)", hops, took.Round(time.Millisecond))
		if len(hops) != 1 || hops[0] != l.Nodes[b].Addr {
			t.Fatalf("next hops %v after losing node 0, want node 1's %s", hops, l.Nodes[b].Addr)
		}
		time.Sleep(time.Second)
		ld.finish()
		busy.finish()
		t.Logf("EDGE kill: busy connections across the loss: %d pings answered, %d of %d connections broke; short connections during the loss: %d ok, %d failed, slowest %v",
			busy.ok.Load(), busy.failed.Load(), len(conns), ld.ok.Load(), ld.failed.Load(), time.Duration(ld.slowest.Load()).Round(time.Millisecond))
		if busy.failed.Load() > 0 {
			t.Errorf("%d busy connections broke when node 0 was lost: %v", busy.failed.Load(), busy.errs[:min(len(busy.errs), 5)])
		}
		if ld.failed.Load() > 0 {
			t.Errorf("%d short connections failed while node 0 was lost: %v", ld.failed.Load(), ld.errs[:min(len(ld.errs), 5)])
		}
		if ld.ok.Load() == 0 {
			t.Error("the load opened no connection")
		}
		e.settle(t, b)
		if got := e.carriers(t, "node 0 lost", conns, b); got[b] != len(conns) {
			t.Errorf("%d of %d connections go through node 1 with node 0 lost", got[b], len(conns))
		}

		// Back: link up, lbd restarted (its pins kept the datapath).
		start = time.Now()
		if err := l.SetNodeLink(a, true); err != nil {
			t.Fatal(err)
		}
		if err := l.StartNode(a); err != nil {
			t.Fatal(err)
		}
		e.connect(a)
		took = e.waitHops(t, 2, start, 20*time.Second)
		t.Logf("EDGE back: two next hops again %v after link up and lbd start", took.Round(time.Millisecond))
		e.carriers(t, "node 0 back", conns, a, b)
		e.checkTakesTraffic(t, a)
	})

	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

// checkTakesTraffic: new connections reach node i again.
func (e *edgeLab) checkTakesTraffic(t *testing.T, i int) {
	t.Helper()
	before := e.vipStats(t, i)
	counts, err := e.lab.ShortTCP(lab.VIP4, 25)
	if err != nil {
		t.Fatalf("%s: %v", counts, err)
	}
	got := (e.vipStats(t, i).LRUMisses - before.LRUMisses) / 2 // the SYN's miss and the ACK's
	t.Logf("node %d back: %d of %d new connections through it", i, got, 25*len(e.lab.Clients))
	if got == 0 {
		t.Errorf("node %d is announced again but takes no new connection", i)
	}
}
