package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/api/apiv1"
	"github.com/lbd-dev/lbd/api/client"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lab"
)

// End-to-end tests: real traffic from client namespaces through the real
// lbd daemon (this test binary re-executed, see TestMain) to real servers
// that decapsulate and answer directly, as `make demo` runs it. One lab
// for all subtests, which run in order on it.

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type e2e struct {
	t   *testing.T
	lab *lab.Lab
	api *client.Client
	ctx context.Context
}

func newE2E(t *testing.T) *e2e {
	privtest.Require(t)
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	name := "t" + hex.EncodeToString(b)
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
		// Down works from the names alone (as after a crash of whoever
		// brought the lab up), and twice is harmless.
		for range 2 {
			if err := lab.Down(name, nil); err != nil {
				t.Errorf("lab down: %v", err)
			}
		}
		if left := labLeftovers(name); left != "" {
			t.Errorf("lab down left: %s", left)
		}
	})
	// LBD_E2E_REAL_LINK and LBD_E2E_DECAP force a mode (default: auto),
	// e.g. to test macvlan and TC decapsulation on a kernel with IPVLAN
	// and ipip.
	l, err := lab.Up(lab.Config{Name: name, Clients: 3, Reals: 4, Binary: bin, Env: []string{"LBD_TEST_MAIN=1"},
		API: apiAddr, Log: tlog{t}, RealLink: os.Getenv("LBD_E2E_REAL_LINK"), Decap: os.Getenv("LBD_E2E_DECAP")})
	if err != nil {
		t.Fatalf("lab up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(lab.Dir(name) + "/lbd.log"); err == nil {
				t.Logf("lbd log:\n%s", log)
			}
		}
	})
	e := &e2e{t: t, lab: l, ctx: context.Background()}
	e.connect()
	return e
}

// labLeftovers lists what of the lab still exists.
func labLeftovers(name string) string {
	var left []string
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "lbdlab-"+name+"-") {
			left = append(left, "netns "+e.Name())
		}
	}
	if _, err := netlink.LinkByName("lbl" + name); err == nil {
		left = append(left, "interface lbl"+name)
	}
	bpf, _ := os.ReadDir("/sys/fs/bpf")
	for _, e := range bpf {
		if strings.HasPrefix(e.Name(), "lbdlab-"+name+"-") {
			left = append(left, "pins /sys/fs/bpf/"+e.Name())
		}
	}
	if _, err := os.Stat(lab.Dir(name)); err == nil {
		left = append(left, lab.Dir(name))
	}
	return strings.Join(left, ", ")
}

func (e *e2e) connect() {
	tok, err := os.ReadFile(e.lab.TokenFile)
	if err != nil {
		e.t.Fatal(err)
	}
	e.api, err = client.New(e.lab.API, client.Options{Token: strings.TrimSpace(string(tok))})
	if err != nil {
		e.t.Fatal(err)
	}
}

// realAddr maps a real's name to its address in the family of vip.
func (e *e2e) realAddr(name string, vip netip.Addr) string {
	r, ok := e.lab.RealByName(name)
	if !ok {
		e.t.Fatalf("no real %s", name)
	}
	if vip.Is6() {
		return r.Addr6.String()
	}
	return r.Addr4.String()
}

// setVIP creates (or replaces) a VIP with reals given as name:weight.
func (e *e2e) setVIP(t *testing.T, proto string, vip netip.Addr, reals ...string) string {
	t.Helper()
	var rs []apiv1.RealJSON
	for _, spec := range reals {
		name, w, _ := strings.Cut(spec, ":")
		weight := uint32(1)
		if w != "" {
			fmt.Sscan(w, &weight)
		}
		rs = append(rs, apiv1.RealJSON{Address: e.realAddr(name, vip), Weight: &weight})
	}
	v, _, err := e.api.PutVIP(e.ctx, vipAPIName(proto, vip), apiv1.VIPSettingsJSON{Reals: rs, RingSize: 65537})
	if err != nil {
		t.Fatalf("put VIP: %v", err)
	}
	return v.Name
}

func vipAPIName(proto string, vip netip.Addr) string {
	return fmt.Sprintf("%s-%s-%d", proto, vip, lab.WhoPort)
}

func (e *e2e) vipStats(t *testing.T, name string) apiv1.VIPStatsJSON {
	t.Helper()
	s, err := e.api.VIPStats(e.ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *e2e) realPackets(t *testing.T, vip string, addr string) uint64 {
	t.Helper()
	s, err := e.api.RealStats(e.ctx, vip, addr)
	if err != nil {
		t.Fatal(err)
	}
	return s.Packets
}

// checkShares fails unless each real's share of counts is within tol
// (absolute) of its weight's share.
func checkShares(t *testing.T, counts lab.Counts, weights map[string]int, tol float64) {
	t.Helper()
	sumW := 0
	for _, w := range weights {
		sumW += w
	}
	total := float64(counts.Total())
	for name, w := range weights {
		want := float64(w) / float64(sumW)
		got := float64(counts[name]) / total
		if math.Abs(got-want) > tol {
			t.Errorf("%s got %.3f of the connections, want %.3f ± %.2f (weights %v; answers %s)", name, got, want, tol, weights, counts)
		}
	}
	for name := range counts {
		if _, ok := weights[name]; !ok {
			t.Errorf("%s (not in the VIP) answered %d connections", name, counts[name])
		}
	}
}

// TestLabEndToEnd is the lab's end-to-end suite (see the subtests).
func TestLabEndToEnd(t *testing.T) {
	e := newE2E(t)
	t.Logf("mode: reals by %s, decapsulation %s (%s)", e.lab.RealLink, e.lab.Decap, e.lab.DecapInfo)

	t.Run("real-check", e.testRealCheck)
	t.Run("distribution", e.testDistribution)
	t.Run("udp-stats", e.testUDPStats)
	t.Run("ipv6", e.testIPv6)
	t.Run("consistency", e.testConsistency)
	t.Run("drain-remove", e.testDrainRemove)
	t.Run("health", e.testHealth)
}

// testRealCheck: lbd real check passes on a set-up real, names the
// missing piece when one is removed, and setup repairs it; setup twice
// changes nothing; teardown undoes everything and setup redoes it.
func (e *e2e) testRealCheck(t *testing.T) {
	r := e.lab.Reals[0]
	flags := []string{"--pin-dir", "/sys/fs/bpf/lbdlab-" + e.lab.Name + "-" + r.Name,
		"--state-file", lab.Dir(e.lab.Name) + "/" + r.Name + "/real-setup.json"}
	run := func(args ...string) (string, error) {
		out, err := e.lab.RunIn(r.Netns, append(args, flags...)...)
		return string(out), err
	}
	if out, err := run("real", "check"); err != nil {
		t.Fatalf("check of a set-up real: %v\n%s", err, out)
	}
	if out, err := run("real", "setup", "--interface", "eth0", lab.VIP4.String(), lab.VIP6.String()); err != nil || !strings.Contains(out, "nothing to change") {
		t.Fatalf("second setup: %v\n%s", err, out)
	}
	// Take the VIP off lo: check says exactly that.
	err := lab.InNetns(r.Netns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		a, _ := netlink.ParseAddr(lab.VIP4.String() + "/32")
		return netlink.AddrDel(lo, a)
	})
	if err != nil {
		t.Fatal(err)
	}
	out, err := run("real", "check")
	if err == nil || !strings.Contains(out, "MISSING  VIP 10.200.0.1 on lo") || strings.Count(out, "MISSING") != 1 {
		t.Fatalf("check without the VIP on lo: %v\n%s", err, out)
	}
	if out, err := run("real", "setup", "--interface", "eth0", lab.VIP4.String(), lab.VIP6.String()); err != nil || !strings.Contains(out, "added 10.200.0.1/32 to lo") {
		t.Fatalf("repairing setup: %v\n%s", err, out)
	}
	// Teardown removes everything: check finds no VIP and no decapsulation.
	if out, err := run("real", "teardown"); err != nil || !strings.Contains(out, "nothing of lbd's is left") {
		t.Fatalf("teardown: %v\n%s", err, out)
	}
	if out, err := run("real", "teardown"); err != nil {
		t.Fatalf("second teardown: %v\n%s", err, out)
	}
	out, err = run("real", "check", lab.VIP4.String())
	if err == nil || !strings.Contains(out, "MISSING  decapsulation") || !strings.Contains(out, "MISSING  VIP 10.200.0.1 on lo") {
		t.Fatalf("check after teardown: %v\n%s", err, out)
	}
	if out, err := run("real", "setup", "--interface", "eth0", lab.VIP4.String(), lab.VIP6.String()); err != nil {
		t.Fatalf("setup after teardown: %v\n%s", err, out)
	}
	out, err = run("real", "check")
	if err != nil {
		t.Fatalf("check after the new setup: %v\n%s", err, out)
	}
	t.Logf("lbd real check:\n%s", out)
}

// testDistribution: many short TCP connections from every client spread
// over the reals by weight (within 5 points of each weight's share), all
// complete, and the API counts one new flow per connection.
func (e *e2e) testDistribution(t *testing.T) {
	vip := e.setVIP(t, "tcp", lab.VIP4, "r1:1", "r2:2", "r3:3")
	before := e.vipStats(t, vip)
	const perClient = 500 // 1500 connections: a share's standard deviation is at most 1.3 points, the tolerance 5
	start := time.Now()
	counts, err := e.lab.ShortTCP(lab.VIP4, perClient)
	if err != nil {
		t.Fatalf("after %d connections (%s): %v", counts.Total(), counts, err)
	}
	n := perClient * len(e.lab.Clients)
	t.Logf("%d connections in %v: %s", n, time.Since(start).Round(time.Millisecond), counts)
	if counts.Total() != n {
		t.Fatalf("%d connections answered, want %d", counts.Total(), n)
	}
	checkShares(t, counts, map[string]int{"r1": 1, "r2": 2, "r3": 3}, 0.05)
	e.settle(t) // the connections' last ACKs
	after := e.vipStats(t, vip)
	// Two LRU misses per connection: its SYN (sent by the ring, not
	// recorded) and the ACK that records it.
	if got := after.LRUMisses - before.LRUMisses; got != 2*uint64(n) {
		t.Errorf("VIP LRU misses %d, want %d (two per connection: the SYN and the ACK that records it)", got, 2*n)
	}
	var sum uint64
	for _, r := range []string{"r1", "r2", "r3"} {
		sum += e.realPackets(t, vip, e.realAddr(r, lab.VIP4))
	}
	if sum != after.Packets {
		t.Errorf("reals' packets sum to %d, VIP packets %d", sum, after.Packets)
	}
}

// testUDPStats: UDP flows stay on one real each, and the API's counters
// equal what the clients sent: packets and bytes (IP length) per VIP and
// per real, one new flow per socket.
func (e *e2e) testUDPStats(t *testing.T) {
	vip := e.setVIP(t, "udp", lab.VIP4, "r1", "r2", "r3")
	// Real counters are per real address, across VIPs: let the last
	// packets of the TCP connections before (closing ACKs) pass first.
	e.settle(t)
	before := e.vipStats(t, vip)
	reals := map[string]uint64{}
	for _, r := range []string{"r1", "r2", "r3"} {
		reals[r] = e.realPackets(t, vip, e.realAddr(r, lab.VIP4))
	}
	const flows, datagrams, size = 20, 5, 100
	counts, err := e.lab.UDPFlows(lab.VIP4, flows, datagrams, size)
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(flows * datagrams * len(e.lab.Clients))
	t.Logf("%d datagrams answered by %s", n, counts)
	after := e.vipStats(t, vip)
	if got := after.Packets - before.Packets; got != n {
		t.Errorf("VIP packets %d, want %d", got, n)
	}
	if got, want := after.Bytes-before.Bytes, n*(20+8+size); got != want {
		t.Errorf("VIP bytes %d, want %d (IPv4 + UDP headers + %d bytes each)", got, want, size)
	}
	if got := after.LRUMisses - before.LRUMisses; got != uint64(flows*len(e.lab.Clients)) {
		t.Errorf("new flows %d, want %d", got, flows*len(e.lab.Clients))
	}
	for r, b := range reals {
		got := e.realPackets(t, vip, e.realAddr(r, lab.VIP4)) - b
		if got != uint64(counts[r]) {
			t.Errorf("real %s: API counts %d packets, %d datagrams were answered by it", r, got, counts[r])
		}
	}
	if len(counts) != 3 {
		t.Errorf("60 flows reached only %s", counts)
	}
}

// testIPv6: an IPv6 VIP with IPv6 reals, TCP and UDP end to end.
func (e *e2e) testIPv6(t *testing.T) {
	e.setVIP(t, "tcp", lab.VIP6, "r1", "r2", "r3")
	counts, err := e.lab.ShortTCP(lab.VIP6, 100)
	if err != nil {
		t.Fatalf("%s: %v", counts, err)
	}
	t.Logf("IPv6 TCP: %s", counts)
	checkShares(t, counts, map[string]int{"r1": 1, "r2": 1, "r3": 1}, 0.1)
	vip := e.setVIP(t, "udp", lab.VIP6, "r1", "r2", "r3")
	before := e.vipStats(t, vip)
	ucounts, err := e.lab.UDPFlows(lab.VIP6, 10, 3, 200)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("IPv6 UDP: %s", ucounts)
	after := e.vipStats(t, vip)
	if n := uint64(10 * 3 * len(e.lab.Clients)); after.Packets-before.Packets != n || after.Bytes-before.Bytes != n*(40+8+200) {
		t.Errorf("IPv6 UDP VIP counters +%d packets +%d bytes, want %d and %d", after.Packets-before.Packets, after.Bytes-before.Bytes, n, n*248)
	}
}

// settle waits until lbd's forwarded-packet counter stays still for
// 300 ms (at most 5 s): no packet of an earlier step is in flight.
func (e *e2e) settle(t *testing.T) {
	t.Helper()
	last := uint64(math.MaxUint64)
	for range 50 {
		st, err := e.api.Stats(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Global.Counters["tx"] == last {
			return
		}
		last = st.Global.Counters["tx"]
		time.Sleep(300 * time.Millisecond)
	}
	t.Fatalf("lbd still forwarding packets after 5 s of no traffic (tx %d)", last)
}

// openConns opens perClient long-lived connections from every client.
func (e *e2e) openConns(t *testing.T, perClient int) []*lab.Conn {
	t.Helper()
	var conns []*lab.Conn
	for range perClient {
		for i := range e.lab.Clients {
			c, err := e.lab.Dial(i, lab.VIP4)
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
	return conns
}

// pingAll checks that every connection still reaches its real.
func pingAll(t *testing.T, when string, conns []*lab.Conn) {
	t.Helper()
	bad := 0
	for i, c := range conns {
		if err := c.Ping(fmt.Sprintf("%s %d", when, i)); err != nil {
			bad++
			t.Errorf("%s: %v", when, err)
		}
	}
	if bad == 0 {
		t.Logf("%s: all %d connections kept their real", when, len(conns))
	}
}

func perReal(conns []*lab.Conn) lab.Counts {
	c := lab.Counts{}
	for _, x := range conns {
		c[x.Real]++
	}
	return c
}

// testConsistency: long-lived connections keep their real while another
// real is added (new connections do reach it) and removed, and across
// lbd restarts (SIGTERM, and kill -9).
func (e *e2e) testConsistency(t *testing.T) {
	vip := e.setVIP(t, "tcp", lab.VIP4, "r1", "r2", "r3")
	conns := e.openConns(t, 20)
	t.Logf("%d long-lived connections: %s", len(conns), perReal(conns))
	pingAll(t, "before changes", conns)

	w := uint32(1)
	if _, _, err := e.api.PutReal(e.ctx, vip, e.realAddr("r4", lab.VIP4), apiv1.RealSettingsJSON{Weight: &w, State: "active"}); err != nil {
		t.Fatal(err)
	}
	pingAll(t, "after adding r4", conns)
	counts, err := e.lab.ShortTCP(lab.VIP4, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new connections with r4: %s", counts)
	if counts["r4"] == 0 {
		t.Errorf("no new connection reached the added real r4: %s", counts)
	}
	if err := e.api.DeleteReal(e.ctx, vip, e.realAddr("r4", lab.VIP4)); err != nil {
		t.Fatal(err)
	}
	pingAll(t, "after removing r4", conns)

	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		if err := e.lab.StopLBD(sig); err != nil {
			t.Fatal(err)
		}
		pingAll(t, fmt.Sprintf("with lbd stopped by %v", sig), conns)
		if err := e.lab.StartLBD(); err != nil {
			t.Fatal(err)
		}
		e.connect()
		pingAll(t, fmt.Sprintf("after lbd restart (%v)", sig), conns)
	}
	for _, c := range conns {
		if err := c.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}
}

// testDrainRemove: a draining real (and one of weight 0) takes no new
// connections while its existing ones go on to a clean close; removing a
// real moves its connections (reset by the real they land on) and no
// other.
func (e *e2e) testDrainRemove(t *testing.T) {
	vip := e.setVIP(t, "tcp", lab.VIP4, "r1", "r2", "r3", "r4")
	conns := e.openConns(t, 20)
	per := perReal(conns)
	t.Logf("%d long-lived connections: %s", len(conns), per)
	for _, r := range []string{"r1", "r2", "r3"} {
		if per[r] == 0 {
			t.Fatalf("no connection landed on %s (%s): cannot test draining it", r, per)
		}
	}
	one, zero := uint32(1), uint32(0)
	if _, _, err := e.api.PutReal(e.ctx, vip, e.realAddr("r2", lab.VIP4), apiv1.RealSettingsJSON{Weight: &one, State: "draining"}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.api.PutReal(e.ctx, vip, e.realAddr("r3", lab.VIP4), apiv1.RealSettingsJSON{Weight: &zero, State: "active"}); err != nil {
		t.Fatal(err)
	}
	counts, err := e.lab.ShortTCP(lab.VIP4, 100)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new connections with r2 draining and r3 at weight 0: %s", counts)
	if counts["r2"] != 0 || counts["r3"] != 0 {
		t.Errorf("new connections reached r2 (draining) or r3 (weight 0): %s", counts)
	}
	pingAll(t, "existing connections while draining", conns)

	// Remove r1: its connections move (the real they land on resets
	// them); everyone else's stay. The UDP VIP of an earlier subtest still
	// has r1, so r1 stays defined in the datapath: its flows of this VIP
	// must move all the same.
	if _, err := e.api.GetReal(e.ctx, vipAPIName("udp", lab.VIP4), e.realAddr("r1", lab.VIP4)); err != nil {
		t.Fatalf("the UDP VIP should still have r1: %v", err)
	}
	if err := e.api.DeleteReal(e.ctx, vip, e.realAddr("r1", lab.VIP4)); err != nil {
		t.Fatal(err)
	}
	moved, kept := 0, 0
	for i, c := range conns {
		err := c.Ping(fmt.Sprintf("after removal %d", i))
		switch {
		case c.Real == "r1" && err == nil:
			t.Errorf("connection to removed r1 still answered by r1")
		case c.Real == "r1":
			moved++
		case err != nil:
			t.Errorf("connection to %s broke when r1 was removed: %v", c.Real, err)
		default:
			kept++
		}
	}
	t.Logf("after removing r1: %d connections of r1 moved (reset), %d others kept", moved, kept)
	// The draining real's connections finish cleanly.
	for _, c := range conns {
		if c.Real == "r2" || c.Real == "r3" {
			if err := c.Close(); err != nil {
				t.Errorf("closing a connection to %s: %v", c.Real, err)
			}
		}
	}
}

// realHealth polls the API until real's health is state, and returns how
// long that took.
func (e *e2e) realHealth(t *testing.T, vip, real, state string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		r, err := e.api.GetReal(e.ctx, vip, real)
		if err != nil {
			t.Fatal(err)
		}
		if r.Health != nil && r.Health.State == state {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("real %s not %s after %v: %+v", real, state, within, r.Health)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testHealth: health checks go through the tunnel. A real whose server
// stops leaves the ring within fall x interval (new connections avoid it,
// no other real's connection moves) and comes back after rise x interval
// when it is started again; a real whose only fault is its decapsulation
// is seen as down too. Every real's health shows its probes from the
// first one on: the last probe's time and outcome (and error), the
// successes or failures in a row, and no "not checked yet" once probed.
func (e *e2e) testHealth(t *testing.T) {
	const interval, rise, fall = 300 * time.Millisecond, 2, 2
	started := time.Now()
	var reals []apiv1.RealJSON
	for _, n := range []string{"r1", "r2", "r3", "r4"} {
		reals = append(reals, apiv1.RealJSON{Address: e.realAddr(n, lab.VIP4)})
	}
	v, _, err := e.api.PutVIP(e.ctx, vipAPIName("tcp", lab.VIP4), apiv1.VIPSettingsJSON{Reals: reals, RingSize: 65537,
		HealthCheck: &apiv1.HealthCheckJSON{Type: "tcp", Interval: interval.String(), Timeout: "200ms", Rise: rise, Fall: fall}})
	if err != nil {
		t.Fatal(err)
	}
	vip := v.Name
	st, err := e.api.Status(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("health checks: %v", st.Datapath["health_checks"])
	if hc, _ := st.Datapath["health_checks"].(string); !strings.HasPrefix(hc, "tunnel") {
		t.Fatalf("health checks should go through the tunnel in the lab: %q", hc)
	}
	// Every real answers probes through the tunnel.
	for _, r := range reals {
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := e.api.GetReal(e.ctx, vip, r.Address)
			if err != nil {
				t.Fatal(err)
			}
			if h := got.Health; h != nil && h.LastResult != nil && h.LastResult.OK && h.State == "up" {
				if h.Reason == health.NotChecked || h.SuccessesInARow < 1 || h.FailuresInARow != 0 || h.LastResult.At.Before(started) {
					t.Errorf("real %s answered a probe, yet its health is %+v (last probe %+v)", r.Address, *h, *h.LastResult)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("real %s: no successful probe through the tunnel: %+v", r.Address, got.Health)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	conns := e.openConns(t, 20)
	per := perReal(conns)
	t.Logf("%d long-lived connections: %s", len(conns), per)

	// Stop r2's server.
	r2 := e.realAddr("r2", lab.VIP4)
	if err := e.lab.StopReal(1); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	took := e.realHealth(t, vip, r2, "down", 10*time.Second)
	t.Logf("r2's server stopped: marked down after %v (fall %d x interval %v = %v, plus up to one interval)", took, fall, interval, fall*interval)
	// r2's last probe failed, with its error; the others' succeeded; the
	// CLI's table (lbd vip show, lbd real list) says the same.
	shown, err := e.api.GetVIP(e.ctx, vip)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range shown.Reals {
		h := r.Health
		if h == nil || h.LastResult == nil {
			t.Errorf("real %s: no last probe: %+v", r.Address, h)
			continue
		}
		lr := *h.LastResult
		switch {
		case r.Address == r2 && (lr.OK || lr.Reason == "" || lr.At.Before(stopped) || h.FailuresInARow < fall):
			t.Errorf("down real %s: last probe %+v, %d failures in a row; want a failed probe since the stop, with its error, and at least %d", r.Address, lr, h.FailuresInARow, fall)
		case r.Address != r2 && (!lr.OK || h.State != "up" || h.Reason != health.Unchanged || h.SuccessesInARow < 1):
			t.Errorf("real %s: health %+v, last probe %+v; want up, %q, its last probe ok", r.Address, *h, lr, health.Unchanged)
		}
	}
	var table strings.Builder
	tw := tabwriter.NewWriter(&table, 0, 4, 2, ' ', 0)
	realsTable(tw, shown.Reals)
	tw.Flush()
	t.Logf("lbd vip show's reals with r2 down:\n%s", table.String())
	for line := range strings.Lines(table.String()) {
		if strings.Contains(line, health.NotChecked) {
			t.Errorf("a probed real shows %q: %s", health.NotChecked, line)
		}
		if strings.HasPrefix(line, r2+" ") && !strings.Contains(line, " failed: ") {
			t.Errorf("r2's row shows no failed last probe: %s", line)
		}
	}
	counts, err := e.lab.ShortTCP(lab.VIP4, 50)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new connections with r2 down: %s", counts)
	if counts["r2"] != 0 {
		t.Errorf("new connections reached the down real r2: %s", counts)
	}
	moved := 0
	for i, c := range conns {
		if c.Real == "r2" {
			continue
		}
		if err := c.Ping(fmt.Sprintf("r2 down %d", i)); err != nil {
			moved++
			t.Errorf("connection to %s broke when r2 went down: %v", c.Real, err)
		}
	}
	t.Logf("connections of other reals that moved or broke: %d of %d", moved, len(conns)-per["r2"])

	if err := e.lab.StartReal(1); err != nil {
		t.Fatal(err)
	}
	took = e.realHealth(t, vip, r2, "up", 10*time.Second)
	t.Logf("r2's server started again: up after %v (rise %d x interval %v = %v)", took, rise, interval, rise*interval)
	counts, err = e.lab.ShortTCP(lab.VIP4, 50)
	if err != nil {
		t.Fatal(err)
	}
	if counts["r2"] == 0 {
		t.Errorf("r2 is up again but takes no new connections: %s", counts)
	}
	pingAll(t, "after r2 came back", func() []*lab.Conn {
		var keep []*lab.Conn
		for _, c := range conns {
			if c.Real != "r2" {
				keep = append(keep, c)
			}
		}
		return keep
	}())

	// Break only r3's decapsulation: its server still runs.
	r3 := e.realAddr("r3", lab.VIP4)
	if err := e.lab.BreakDecap(2); err != nil {
		t.Fatal(err)
	}
	took = e.realHealth(t, vip, r3, "down", 10*time.Second)
	t.Logf("r3's decapsulation removed: marked down after %v", took)
	if err := e.lab.RepairReal(2); err != nil {
		t.Fatal(err)
	}
	e.realHealth(t, vip, r3, "up", 10*time.Second)

	// Leave the VIP without checks for whatever runs next.
	none := "none"
	if _, err := e.api.PatchVIP(e.ctx, vip, apiv1.VIPPatchJSON{HealthCheck: &apiv1.HealthCheckJSON{Type: none}}); err != nil {
		t.Fatal(err)
	}
}
