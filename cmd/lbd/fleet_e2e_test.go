package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/internal/etcdtest"
	"github.com/lbd-dev/lbd/lab"
)

// The fleet test (issue 16.2): three lbd nodes behind the BIRD ECMP
// router, one desired state in a real three-member etcd. Changes through
// one node reach every ring; etcd loses a member; one node is cut off
// from etcd (it keeps forwarding, goes stale, withdraws), then healed; a
// real dies and a quorum of the nodes' probes drops it from every ring.
// Long-lived connections through the router break only with their real.

// connWatch keeps every connection busy and records which broke.
type connWatch struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	broken map[int]string // connection -> its real
	ok     int
}

func watchConns(conns []*lab.Conn) *connWatch {
	w := &connWatch{stop: make(chan struct{}), broken: map[int]string{}}
	for i, c := range conns {
		w.wg.Go(func() {
			for k := 0; k < 1000000; k++ { // bounded; stopped long before
				select {
				case <-w.stop:
					return
				default:
				}
				if err := c.Ping(fmt.Sprintf("fleet %d %d", i, k)); err != nil {
					w.mu.Lock()
					w.broken[i] = c.Real
					w.mu.Unlock()
					return
				}
				w.mu.Lock()
				w.ok++
				w.mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	return w
}

func (w *connWatch) finish() (ok int, broken map[int]string) {
	close(w.stop)
	w.wg.Wait()
	return w.ok, w.broken
}

// fleetStatus is node i's GET /api/v1/fleet.
func (e *edgeLab) fleetStatus(t *testing.T, i int) apiv1.FleetStatusJSON {
	t.Helper()
	st, err := e.api[i].Fleet(e.ctx)
	if err != nil {
		t.Fatalf("node %d: fleet status: %v", i, err)
	}
	return st
}

// fingerprints are the nodes' /status fingerprints.
func (e *edgeLab) fingerprints(t *testing.T, nodes ...int) []string {
	t.Helper()
	var fps []string
	for _, i := range nodes {
		st, err := e.api[i].Status(e.ctx)
		if err != nil {
			t.Fatalf("node %d: status: %v", i, err)
		}
		fps = append(fps, st.Fingerprint)
	}
	return fps
}

// waitSame waits (bounded) until the nodes' fingerprints are equal (and,
// if want is not empty, equal to want); it returns how long it took.
func (e *edgeLab) waitSame(t *testing.T, want string, start time.Time, nodes ...int) time.Duration {
	t.Helper()
	for {
		fps := e.fingerprints(t, nodes...)
		if len(slices.Compact(slices.Clone(fps))) == 1 && (want == "" || fps[0] == want) {
			return time.Since(start)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("fingerprints %v after 20s, want all %q", fps, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestEdgeFleet(t *testing.T) {
	c := etcdtest.Start(t, 3)
	e := newEdgeLabWith(t, 3, true)
	l := e.lab
	var proxies []*etcdtest.Proxies
	for i := range l.Nodes {
		p := c.Proxies(t)
		proxies = append(proxies, p)
		if err := l.StartNode(i, nodeArgs(i, p.Endpoints()...)...); err != nil {
			t.Fatal(err)
		}
		e.connect(i)
	}
	all := []int{0, 1, 2}
	var reals []apiv1.RealJSON
	for _, r := range l.Reals {
		reals = append(reals, apiv1.RealJSON{Address: r.Addr4.String()})
	}
	for _, i := range all {
		waitFleetSynced(t, e, i)
	}

	t.Run("lbd apply of 100 VIPs, then a changed file", func(t *testing.T) {
		dir := t.TempDir()
		tok := l.Nodes[0].TokenFile
		apply := func(set string) (string, time.Duration) {
			t.Helper()
			file := filepath.Join(dir, "vips.yaml")
			if err := os.WriteFile(file, []byte(set), 0o600); err != nil {
				t.Fatal(err)
			}
			root := newRootCommand()
			var out bytes.Buffer
			root.SetOut(&out)
			root.SetErr(&out)
			root.SetArgs([]string{"apply", "-f", file, "--server", "http://" + l.Nodes[0].API, "--token-file", tok})
			start := time.Now()
			if err := root.ExecuteContext(e.ctx); err != nil {
				t.Fatalf("lbd apply: %v\n%s", err, out.String())
			}
			return out.String(), e.waitSame(t, e.fingerprints(t, 0)[0], start, all...)
		}
		first, took1 := apply(hundredVIPs(0, 100, 1))
		if !strings.Contains(first, "applied: 100 added, 0 removed, 0 changed") {
			t.Fatalf("first apply:\n%s", first)
		}
		// VIPs 0-9 go, 10-19 change weight, 100-109 come.
		second, took2 := apply(hundredVIPs(10, 20, 3) + hundredVIPs(20, 110, 1)[len("vips:\n"):])
		if !strings.Contains(second, "applied: 10 added, 10 removed, 10 changed") {
			t.Fatalf("second apply:\n%s", second)
		}
		for _, i := range all {
			if st, err := e.api[i].Status(e.ctx); err != nil || st.VIPs != 100 {
				t.Fatalf("node %d after the second apply: %d VIPs (%v), want 100", i, st.VIPs, err)
			}
		}
		t.Logf("FLEET lbd apply through node 0 -> every node converged: 100 VIPs %v; then 10 added, 10 removed, 10 changed %v", took1.Round(time.Millisecond), took2.Round(time.Millisecond))
	})

	vip := vipAPIName("tcp", lab.VIP4)
	start := time.Now()
	if _, _, err := e.api[0].PutVIP(e.ctx, vip, apiv1.VIPSettingsJSON{Reals: reals, RingSize: 65537,
		HealthCheck: &apiv1.HealthCheckJSON{Type: "tcp", Interval: "200ms", Timeout: "100ms", Rise: 1, Fall: 2}}); err != nil {
		t.Fatalf("put VIP through node 0: %v", err)
	}
	took := e.waitHops(t, 3, start, 30*time.Second)
	t.Logf("FLEET all three nodes announce %v after the VIP was written through node 0", took.Round(time.Millisecond))
	e.waitSame(t, "", time.Now(), all...)

	// 100 changes of the VIP's ring, each written through node 0 (before
	// the long-lived connections: a ring change moves flows that ECMP
	// later re-hashes to a node without their entry, by design).
	t.Run("changes through node 0 converge", func(t *testing.T) {
		var lat []time.Duration
		for k := range 100 {
			rs := slices.Clone(reals)
			w := uint32(1 + (k+1)%20) // the last change (k = 99) leaves equal weights
			rs[0].Weight = &w
			start := time.Now()
			if _, err := e.api[0].ReplaceReals(e.ctx, vip, rs); err != nil {
				t.Fatal(err)
			}
			want := e.fingerprints(t, 0)[0]
			lat = append(lat, e.waitSame(t, want, start, all...))
		}
		slices.Sort(lat)
		t.Logf("FLEET write through node 0 -> last node's ring live, 100 changes: p50 %v p99 %v", lat[50].Round(time.Microsecond), lat[98].Round(time.Microsecond))
		newConns := func() {
			if counts, err := l.ShortTCP(lab.VIP4, 10); err != nil {
				t.Fatalf("after 100 changes: new connections: %s: %v", counts, err)
			}
		}
		newConns()
	})

	// Long-lived connections over the three nodes.
	var conns []*lab.Conn
	for range 10 {
		for i := range l.Clients {
			cn, err := l.Dial(i, lab.VIP4)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, cn)
		}
	}
	t.Cleanup(func() {
		for _, cn := range conns {
			cn.Close()
		}
	})
	if got := e.carriers(t, "three nodes up", conns, all...); got[0]+got[1]+got[2] != len(conns) {
		t.Fatalf("connections through the nodes: %v, want %d in all", got, len(conns))
	}
	busy := watchConns(conns)
	// Later changes go to another VIP: they must reach every node
	// without touching the ring the long-lived connections follow.
	other := fmt.Sprintf("tcp-%s-%d", lab.VIP4, 9999)
	changeOther := func(t *testing.T, via int, weight uint32) string {
		t.Helper()
		rs := slices.Clone(reals)
		rs[0].Weight = &weight
		if _, _, err := e.api[via].PutVIP(e.ctx, other, apiv1.VIPSettingsJSON{Reals: rs}); err != nil {
			t.Fatalf("change through node %d: %v", via, err)
		}
		return e.fingerprints(t, via)[0]
	}
	newConns := func(when string) {
		t.Helper()
		counts, err := l.ShortTCP(lab.VIP4, 10)
		if err != nil {
			t.Fatalf("%s: new connections: %s: %v", when, counts, err)
		}
	}

	t.Run("the etcd leader dies", func(t *testing.T) {
		// The leader: the change waits out an election.
		lead := c.Leader()
		c.Kill(lead)
		defer c.Restart(lead)
		start := time.Now()
		want := changeOther(t, 1, 7)
		t.Logf("FLEET etcd leader m%d killed: a change through node 1 took %v, every node converged after %v", lead,
			time.Since(start).Round(time.Millisecond), e.waitSame(t, want, start, all...).Round(time.Millisecond))
	})

	t.Run("partition and heal", func(t *testing.T) {
		cut := time.Now()
		proxies[2].Cut()
		for !e.fleetStatus(t, 2).Stale {
			if time.Since(cut) > 20*time.Second {
				t.Fatal("node 2 never reports itself stale")
			}
			time.Sleep(5 * time.Millisecond)
		}
		stale := time.Since(cut)
		withdrawn, err := e.hopsAfter(2, cut, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		hops, _ := l.VIPNextHops(lab.VIP4)
		if slices.Contains(hops, l.Nodes[2].Addr) {
			t.Fatalf("next hops %v still hold the cut-off node", hops)
		}
		// A change while node 2 is cut off: the others converge.
		e.waitSame(t, changeOther(t, 0, 9), time.Now(), 0, 1)
		newConns("node 2 cut off")
		healed := time.Now()
		proxies[2].Heal()
		want := e.fingerprints(t, 0)[0]
		caught := e.waitSame(t, want, healed, all...)
		back := e.waitHops(t, 3, healed, 30*time.Second)
		t.Logf("FLEET partition: stale after %v, withdrawn after %v; heal: caught up after %v, announced again after %v",
			stale.Round(time.Millisecond), withdrawn.Round(time.Millisecond), caught.Round(time.Millisecond), back.Round(time.Millisecond))
		newConns("healed")
	})

	// Node 2 restarts while the fleet moves on, with no way to etcd: it
	// forwards with its state file, its BGP session comes up, and it
	// announces nothing until it took the fleet's state. It restarts cold
	// (pins removed) with room for exactly the fleet's VIPs, for the next
	// step.
	var fleetVIPs int
	t.Run("a node restarts cut off: no route from it until it runs the fleet's state", func(t *testing.T) {
		if err := l.StopNode(2, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		e.waitHops(t, 2, time.Now(), 30*time.Second)
		if err := xdp.Cleanup(l.Nodes[2].PinDir); err != nil {
			t.Fatal(err)
		}
		want := changeOther(t, 0, 11)
		e.waitSame(t, want, time.Now(), 0, 1)
		st, err := e.api[0].Status(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		fleetVIPs = st.VIPs
		proxies[2].Cut()
		if err := l.StartNode(2, append(nodeArgs(2, proxies[2].Endpoints()...), "--max-vips", strconv.Itoa(fleetVIPs))...); err != nil {
			t.Fatal(err)
		}
		e.connect(2)
		bgp := e.waitBGPUp(t, 2)
		p := prefixOf(bgp, lab.VIP4)
		if p == nil || p.Announced || !strings.Contains(p.Reason, "not applied yet") {
			t.Fatalf("node 2, restarted cut off, BGP up: prefix %+v, want held: not applied yet", p)
		}
		if hops, _ := l.VIPNextHops(lab.VIP4); slices.Contains(hops, l.Nodes[2].Addr) {
			t.Fatalf("the router routes %s through node 2 before it has the fleet's state: %v", lab.VIP4, hops)
		}
		if fp := e.fingerprints(t, 2)[0]; fp == want {
			t.Fatal("node 2 already runs the fleet's new state while cut off")
		}
		healed := time.Now()
		proxies[2].Heal()
		back := e.waitHops(t, 3, healed, 30*time.Second)
		if fp := e.fingerprints(t, 2)[0]; fp != want {
			t.Fatalf("node 2 announces with fingerprint %s, the fleet's is %s", fp, want)
		}
		t.Logf("FLEET node restarted cut off: BGP up, no route; healed -> announced (with the fleet's fingerprint) after %v", back.Round(time.Millisecond))
		newConns("node 2 restarted")
	})

	// One VIP more than node 2 has room for: nodes 0 and 1 run it, node
	// 2 cannot, keeps forwarding what it ran, and withdraws after
	// --fleet-stale-withdraw because its fingerprint is not the fleet's.
	t.Run("a node that cannot run the fleet's state withdraws", func(t *testing.T) {
		extra := fmt.Sprintf("tcp-%s-%d", lab.VIP4, 9998)
		start := time.Now()
		if _, _, err := e.api[0].PutVIP(e.ctx, extra, apiv1.VIPSettingsJSON{Reals: reals}); err != nil {
			t.Fatal(err)
		}
		want := e.fingerprints(t, 0)[0]
		e.waitSame(t, want, start, 0, 1)
		withdrawn, err := e.hopsAfter(2, start, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if withdrawn < 3*time.Second {
			t.Errorf("node 2 withdrawn %v after the change, before --fleet-stale-withdraw (3s)", withdrawn)
		}
		bgp, err := e.api[2].BGP(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if p := prefixOf(bgp, lab.VIP4); p == nil || p.Announced || !strings.Contains(p.Reason, "differs from the fleet") {
			t.Fatalf("node 2's prefix %+v, want withdrawn: its fingerprint differs from the fleet's", p)
		}
		if st, err := e.api[2].Status(e.ctx); err != nil || st.VIPs != fleetVIPs || st.Fingerprint == want {
			t.Fatalf("node 2 runs %d VIPs (%v), want the %d it ran, its own fingerprint", st.VIPs, err, fleetVIPs)
		}
		if fs := e.fleetStatus(t, 0); fs.Agree || !slices.ContainsFunc(fs.Disagree, func(d string) bool { return strings.HasPrefix(d, "n2:") }) {
			t.Fatalf("fleet status %+v, want n2 named as disagreeing", fs)
		}
		newConns("node 2 withdrawn")
		back := time.Now()
		if err := e.api[1].DeleteVIP(e.ctx, extra); err != nil {
			t.Fatal(err)
		}
		announced := e.waitHops(t, 3, back, 30*time.Second)
		e.waitSame(t, "", time.Now(), all...)
		t.Logf("FLEET node that cannot apply the fleet's state: withdrawn %v after the change (--fleet-stale-withdraw 3s); announced again %v after the fleet came back to what it can run",
			withdrawn.Round(time.Millisecond), announced.Round(time.Millisecond))
		newConns("node 2 back")
	})

	t.Run("a real dies: quorum drops it everywhere", func(t *testing.T) {
		dead := l.Reals[0]
		start := time.Now()
		if err := l.StopReal(0); err != nil {
			t.Fatal(err)
		}
		for {
			out := 0
			for _, i := range all {
				rg, err := e.api[i].Ring(e.ctx, vip)
				if err != nil {
					t.Fatal(err)
				}
				for _, s := range rg.Reals {
					if s.Address == dead.Addr4.String() && s.Slots == 0 {
						out++
					}
				}
			}
			if out == 3 {
				break
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("%d of 3 rings dropped the dead real after 20s", out)
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("FLEET real stopped -> out of every ring (quorum health, probe 200ms fall 2) after %v", time.Since(start).Round(time.Millisecond))
		e.waitSame(t, "", time.Now(), all...)
		newConns("a real dead")
	})

	ok, broken := busy.finish()
	deadName := l.Reals[0].Name
	toDead := 0
	for _, cn := range conns {
		if cn.Real == deadName {
			toDead++
		}
	}
	var wrong []string
	for i, r := range broken {
		if r != deadName {
			wrong = append(wrong, fmt.Sprintf("conn %d to %s", i, r))
		}
	}
	t.Logf("FLEET long-lived connections: %d pings answered; %d of %d broke: %d of the %d to the dead real %s, %d to live reals",
		ok, len(broken), len(conns), len(broken)-len(wrong), toDead, deadName, len(wrong))
	// Exactly those to the real that died: none else, and every one of
	// those (its server is gone: they cannot have survived unseen).
	if len(wrong) > 0 {
		t.Errorf("connections to live reals broke: %v", wrong)
	}
	if len(broken)-len(wrong) != toDead {
		t.Errorf("%d of the %d connections to the dead real broke, want all", len(broken)-len(wrong), toDead)
	}
}

// nodeArgs are node i's lbd serve flags in the fleet test.
func nodeArgs(i int, endpoints ...string) []string {
	return []string{"--store", "etcd", "--etcd-endpoints", strings.Join(endpoints, ","), "--fleet", "lab",
		"--fleet-node", fmt.Sprintf("n%d", i), "--etcd-dial-timeout", "1s",
		"--fleet-report-interval", "200ms", "--fleet-stale-after", "1s", "--fleet-stale-withdraw", "3s",
		"--max-vips", "128", "--max-reals", "512"}
}

// waitBGPUp waits (bounded) until node i's BGP session is established,
// and returns its BGP status then.
func (e *edgeLab) waitBGPUp(t *testing.T, i int) apiv1.BGPStatusJSON {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := e.api[i].BGP(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Peers) > 0 && st.Peers[0].State == "established" {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d's BGP session not established after 30s: %+v", i, st.Peers)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// prefixOf is the /32 (or /128) of addr in a node's BGP status, or nil.
func prefixOf(st apiv1.BGPStatusJSON, addr netip.Addr) *apiv1.BGPPrefixJSON {
	want := netip.PrefixFrom(addr, addr.BitLen()).String()
	for i := range st.Prefixes {
		if st.Prefixes[i].Prefix == want {
			return &st.Prefixes[i]
		}
	}
	return nil
}

// hundredVIPs is an apply file of the VIPs from..to-1 (10.201.x.y:80,
// two reals of the lab's address plan, weight w on the first).
func hundredVIPs(from, to int, w int) string {
	var b strings.Builder
	b.WriteString("vips:\n")
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "  - protocol: tcp\n    address: 10.201.%d.%d\n    port: 80\n    ring_size: 1021\n    reals:\n      - address: 10.0.0.1\n        weight: %d\n      - address: 10.0.0.2\n", i/200, 1+i%200, w)
	}
	return b.String()
}

// waitFleetSynced waits (bounded) until node i reports to the fleet.
func waitFleetSynced(t *testing.T, e *edgeLab, i int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := e.fleetStatus(t, i)
		if st.Enabled && !st.Stale && len(st.Nodes) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %d never joined the fleet: %+v", i, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
