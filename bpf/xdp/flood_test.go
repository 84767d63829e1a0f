package xdp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// floodCPUs is how many CPUs the flood tests spread packets over (two
// where the machine has them: the table's per-CPU LRU lists both fill).
func floodCPUs() int { return min(runtime.NumCPU(), 2) }

// movedRing is a ring for vipTCP that moves most slots: two of the three
// fixture reals leave, two new ones come, and the order shifts.
func movedRing(t *testing.T, l *testLB) []RealID {
	t.Helper()
	var ids []RealID
	for _, a := range []string{"10.0.1.3", "10.0.1.4", "10.0.1.5"} {
		id, err := l.AddReal(netip.MustParseAddr(a))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ring := make([]RealID, testRingSize)
	for i := range ring {
		ring[i] = ids[(i+1)%len(ids)]
	}
	return ring
}

// floodConn is an established connection of a flood test.
type floodConn struct {
	p    pkt
	k    FlowKey
	cpu  int
	real netip.Addr
}

// floodRun is a flood among established connections, as the flood tests
// make it: 64 connections to vipTCP opened (SYN, ACK) over the CPUs, then
// 10 x the table's capacity of spoofed packets (spoof gives the next one)
// over the CPUs, during which each connection sends one data packet per
// round, 5 rounds, each checked to go, exactly encapsulated, to its real.
type floodRun struct {
	l             *testLB
	conns         []floodConn
	flood, rounds int
	capacity      int
	delta         GlobalStats // counters' growth during the flood
}

func runFlood(t *testing.T, l *testLB, what string, spoof func(rng *rand.Rand) pkt, beforeFlood func()) *floodRun {
	t.Helper()
	ncpu := floodCPUs()
	r := &floodRun{l: l, capacity: int(l.objs.Conns.MaxEntries()), rounds: 5}
	const established = 64
	// Each established connection sends one packet per round, every
	// 2 x capacity spoofed packets: often enough to be live, seldom
	// enough that an LRU filled by the flood would evict it (insert on
	// every SYN did: about one in two of them lost its entry at some
	// point of the flood).
	r.flood = 10 * r.capacity
	perRound := r.flood / r.rounds
	gap := perRound / established // spoofed packets between two established ones
	r.conns = make([]floodConn, established)
	for i := range r.conns {
		p := pkt{src: fmt.Sprintf("203.0.113.%d", i+1), dst: "10.10.0.1", sport: uint16(40000 + i), dport: 80, proto: lb.TCP}
		c := floodConn{p: p, k: p.flowKey(), cpu: i % ncpu}
		c.real = l.ringReal(t, vipTCP, c.k)
		l.openOn(t, c.cpu, p)
		r.conns[i] = c
	}
	beforeFlood()
	grown := l.statsSince(t)
	rng := rand.New(rand.NewPCG(20, 3)) // deterministic: the same flood every run
	sent := 0
	for round := range r.rounds {
		for i := range perRound {
			if act, _, err := simulateOn(l.Balancer, sent%ncpu, spoof(rng).frame(t)); err != nil || act != ActionTX {
				t.Fatalf("spoofed %s %d: %v %v", what, sent, act, err)
			}
			sent++
			if i%gap == gap-1 && i/gap < established {
				r.send(t, r.conns[i/gap], fmt.Sprintf("round %d, during the flood", round))
			}
		}
	}
	r.delta = grown(t)
	if sent != r.flood {
		t.Fatalf("sent %d spoofed %ss, want %d", sent, what, r.flood)
	}
	t.Logf("%d spoofed %ss (10 x the table's %d entries) over %d CPUs, %d established connections sending %d packets each among them",
		sent, what, r.capacity, ncpu, established, r.rounds)
	return r
}

// send sends c's next data packet and checks that it went, exactly
// encapsulated, to c's real.
func (r *floodRun) send(t *testing.T, c floodConn, what string) {
	t.Helper()
	d := c.p
	d.flags, d.payload = "PA", []byte("keepalive")
	in := d.frame(t)
	act, out, err := simulateOn(r.l.Balancer, c.cpu, in)
	if err != nil {
		t.Fatal(err)
	}
	if want := r.l.expectEncap(t, in, vipTCP, c.k, c.real); act != ActionTX || string(out) != string(want) {
		t.Fatalf("%s: %s on CPU %d: action %v, frame\n%x\nwant it to its real %s:\n%x", what, c.k, c.cpu, act, out, c.real, want)
	}
}

// keptAll checks that no established connection lost its entry (one
// re-created would count fewer packets than its ACK and data) and returns
// how many entries the table has besides theirs.
func (r *floodRun) keptAll(t *testing.T) (others int) {
	t.Helper()
	for _, c := range r.conns {
		f, err := r.l.LookupFlow(c.k)
		if err != nil {
			t.Errorf("after the flood: %s: %v (evicted)", c.k, err)
			continue
		}
		if got, _ := r.l.RealAddr(f.Real); got != c.real || f.Packets != uint64(1+r.rounds) {
			t.Errorf("after the flood: %s has real %s and %d packets, want %s and %d (its ACK and data)", c.k, got, f.Packets, c.real, 1+r.rounds)
		}
	}
	n := 0
	for _, err := range r.l.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n - len(r.conns)
}

// ringChangeKeepsAll changes the ring so that most connections' slots
// move, and checks that none of the connections does.
func (r *floodRun) ringChangeKeepsAll(t *testing.T) {
	t.Helper()
	r.l.setRing(t, vipTCP, movedRing(t, r.l))
	moved := 0
	for _, c := range r.conns {
		if r.l.ringReal(t, vipTCP, c.k) != c.real {
			moved++
		}
	}
	if moved < len(r.conns)/2 {
		t.Fatalf("test setup: the new ring moves %d of %d connections' slots, want most", moved, len(r.conns))
	}
	for _, c := range r.conns {
		r.send(t, c, "after the ring change")
	}
	t.Logf("ring change after the flood: %d of %d connections' slots moved, all %d kept their real", moved, len(r.conns), len(r.conns))
}

// spoofedSrc is a random source of the flood's range.
func spoofedSrc(rng *rand.Rand) string {
	return netip.AddrFrom4([4]byte{100, byte(64 + rng.IntN(64)), byte(rng.IntN(256)), byte(rng.IntN(256))}).String()
}

// TestSYNFloodKeepsEstablished: a flood of spoofed SYNs, ten times the
// table's capacity, over two CPUs, with the data packets of established
// connections that keep sending. The SYNs never enter the table (a SYN is
// recorded only by its connection's next packet, which a spoofed SYN
// never has), so no established entry is evicted: each still has the
// entry its ACK made (its packet count is every packet it sent after the
// SYN), and after a ring change every connection still goes to its real.
// Before "insert on the second packet", every SYN was inserted and
// evicted entries of live flows.
func TestSYNFloodKeepsEstablished(t *testing.T) {
	l := newTestLB(t)
	r := runFlood(t, l, "SYN", func(rng *rand.Rand) pkt {
		return pkt{src: spoofedSrc(rng), dst: "10.10.0.1", sport: uint16(1024 + rng.IntN(64000)), dport: 80, proto: lb.TCP, flags: "S"}
	}, func() {})
	if others := r.keptAll(t); others != 0 {
		t.Errorf("after the flood the table has %d entries besides the %d established connections', want none", others, len(r.conns))
	}
	established := uint64(len(r.conns))
	for s, want := range map[Stat]uint64{
		StatTX: uint64(r.flood) + established*uint64(r.rounds), StatLRUHit: established * uint64(r.rounds), StatLRUMiss: uint64(r.flood),
		StatLRUMissNonSYN: 0, StatLRUInsertFail: 0, StatLRUInsertCapped: 0,
	} {
		if r.delta[s] != want {
			t.Errorf("counter %s grew by %d during the flood, want %d", s, r.delta[s], want)
		}
	}
	r.ringChangeKeepsAll(t)
}

// TestNewFlowRateCapsFlood: spoofed packets that are recorded (ACKs with
// no handshake, UDP datagrams), ten times the table's capacity, with the
// new-flow rate cap on (Config.NewFlowRate). Each CPU records at most the
// cap per second; the rest go by the ring, unrecorded and counted
// (lru_insert_capped). So no established entry is evicted, and a ring
// change after the flood moves none of the connections. Without the cap
// the same ACK flood evicted entries of live connections (170 of their
// 320 packets during the flood found no entry) and one connection went to
// another real after the ring change.
func TestNewFlowRateCapsFlood(t *testing.T) {
	const rate = 16 // per CPU and second
	for _, tc := range []struct {
		what  string
		spoof func(rng *rand.Rand) pkt
	}{
		{"ACK", func(rng *rand.Rand) pkt {
			return pkt{src: spoofedSrc(rng), dst: "10.10.0.1", sport: uint16(1024 + rng.IntN(64000)), dport: 80, proto: lb.TCP, flags: "A"}
		}},
		{"UDP datagram", func(rng *rand.Rand) pkt {
			return pkt{src: spoofedSrc(rng), dst: vipUDP.Addr.String(), sport: uint16(1024 + rng.IntN(64000)), dport: vipUDP.Port, proto: lb.UDP, payload: []byte("x")}
		}},
	} {
		t.Run(tc.what, func(t *testing.T) {
			l := newTestLB(t)
			var start time.Time
			// The cap goes on once the connections are open: at 16 a
			// second it would hold back their own ACKs.
			r := runFlood(t, l, tc.what, tc.spoof, func() {
				cfg := l.cfg
				cfg.NewFlowRate = rate
				if err := l.SetConfig(cfg); err != nil {
					t.Fatal(err)
				}
				if got, err := l.Config(); err != nil || got.NewFlowRate != rate {
					t.Fatalf("config read back: new flow rate %d (%v), want %d", got.NewFlowRate, err, rate)
				}
				start = time.Now()
			})
			// The cap's windows are seconds of jiffies: the flood spans
			// at most one more window than whole seconds it took.
			windows := int(time.Since(start)/time.Second) + 2
			recorded := r.keptAll(t)
			if most := rate * floodCPUs() * windows; recorded < 1 || recorded > most {
				t.Errorf("the flood recorded %d flows, want between 1 and %d (%d per CPU in each of at most %d windows)", recorded, most, rate, windows)
			}
			established := uint64(len(r.conns))
			for s, want := range map[Stat]uint64{
				StatTX: uint64(r.flood) + established*uint64(r.rounds), StatLRUHit: established * uint64(r.rounds), StatLRUMiss: uint64(r.flood),
				StatLRUInsertFail: 0, StatLRUInsertCapped: uint64(r.flood - recorded),
			} {
				if r.delta[s] != want {
					t.Errorf("counter %s grew by %d during the flood, want %d", s, r.delta[s], want)
				}
			}
			t.Logf("cap %d flows per CPU and second: %d of %d spoofed packets recorded, %d capped", rate, recorded, r.flood, r.delta[StatLRUInsertCapped])
			r.ringChangeKeepsAll(t)
		})
	}
}

// TestHandshakeAcrossRingChange is the price of recording a connection at
// its first packet after the SYN: when the ring changes between a
// connection's SYN and its ACK, and the change moves the connection's
// slot, the ACK goes to the new ring's real (which has no such
// connection and answers with a RST: the client connects again), and the
// entry names that real. A connection whose slot did not move is not
// affected. This counts both exactly.
func TestHandshakeAcrossRingChange(t *testing.T) {
	l := newTestLB(t)
	ncpu := floodCPUs()
	const handshakes = 64
	type hs struct {
		p        pkt
		k        FlowKey
		cpu      int
		synReal  netip.Addr
		ringReal netip.Addr // after the change
	}
	hss := make([]hs, handshakes)
	for i := range hss {
		p := pkt{src: fmt.Sprintf("203.0.113.%d", 100+i), dst: "10.10.0.1", sport: uint16(41000 + i), dport: 80, proto: lb.TCP, flags: "S"}
		h := hs{p: p, k: p.flowKey(), cpu: i % ncpu}
		h.synReal = sendOn(t, l, h.cpu, vipTCP, h.k, p.frame(t))
		if want := l.ringReal(t, vipTCP, h.k); h.synReal != want {
			t.Fatalf("SYN of %s went to %s, the ring's real is %s", h.k, h.synReal, want)
		}
		if _, err := l.LookupFlow(h.k); err == nil {
			t.Fatalf("SYN of %s made a table entry", h.k)
		}
		hss[i] = h
	}
	l.setRing(t, vipTCP, movedRing(t, l)) // within the handshakes
	broken := 0
	for i := range hss {
		h := &hss[i]
		h.ringReal = l.ringReal(t, vipTCP, h.k)
		ack := h.p
		ack.flags = "A"
		in := ack.frame(t)
		act, out, err := simulateOn(l.Balancer, h.cpu, in)
		if err != nil || act != ActionTX {
			t.Fatalf("ACK of %s: %v %v", h.k, act, err)
		}
		if want := l.expectEncap(t, in, vipTCP, h.k, h.ringReal); string(out) != string(want) {
			t.Fatalf("ACK of %s did not go to the new ring's real %s", h.k, h.ringReal)
		}
		f, err := l.LookupFlow(h.k)
		if err != nil {
			t.Fatalf("ACK of %s made no entry: %v", h.k, err)
		}
		if got, _ := l.RealAddr(f.Real); got != h.ringReal {
			t.Errorf("entry of %s names %s, want the new ring's %s", h.k, got, h.ringReal)
		}
		if h.ringReal != h.synReal {
			broken++
		}
	}
	if broken == 0 || broken == handshakes {
		t.Fatalf("test setup: %d of %d handshakes' slots moved; want some but not all", broken, handshakes)
	}
	t.Logf("ring change within %d handshakes: %d went to another real at their ACK (their slot moved), %d completed on their SYN's real",
		handshakes, broken, handshakes-broken)
}

// TestNewFlowRateNeedsItsFlag: the config word of the cap held
// search_rate in older lbd versions (10000 by default), so the datapath
// reads it only with LBD_CFG_F_NEW_FLOW_RATE: a configuration pinned by
// such a version caps nothing, and reads back as no cap. With the flag, a
// cap of 1 records one new flow per CPU and second.
func TestNewFlowRateNeedsItsFlag(t *testing.T) {
	l := newTestLB(t)
	var r balancerLbdConfig
	if err := l.objs.Config.Lookup(uint32(0), &r); err != nil {
		t.Fatal(err)
	}
	if r.Flags&balancerLbdConfigFlagLBD_CFG_F_NEW_FLOW_RATE != 0 {
		t.Fatalf("the default config sets LBD_CFG_F_NEW_FLOW_RATE (flags %#x)", r.Flags)
	}
	newACKs := func(base int) (recorded int) {
		t.Helper()
		for i := range 3 {
			p := pkt{src: fmt.Sprintf("198.51.100.%d", base+i), dst: "10.10.0.1", sport: 40100, dport: 80, proto: lb.TCP, flags: "A"}
			if act, _, err := simulateOn(l.Balancer, 0, p.frame(t)); err != nil || act != ActionTX {
				t.Fatalf("ACK %d: %v %v", i, act, err)
			}
			if _, err := l.LookupFlow(p.flowKey()); err == nil {
				recorded++
			}
		}
		return recorded
	}
	for _, tc := range []struct {
		name     string
		flag     balancerLbdConfigFlag
		readBack uint32 // Config().NewFlowRate
		want     int    // flows recorded of 3
	}{
		{"old search_rate word, no flag", 0, 0, 3},
		{"with the flag", balancerLbdConfigFlagLBD_CFG_F_NEW_FLOW_RATE, 1, 1},
	} {
		r.NewFlowRate = 1
		r.Flags = r.Flags&^balancerLbdConfigFlagLBD_CFG_F_NEW_FLOW_RATE | tc.flag
		if err := l.objs.Config.Update(uint32(0), &r, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
		cfg, err := l.Config()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.NewFlowRate != tc.readBack {
			t.Errorf("%s: config reads back a new flow rate of %d, want %d", tc.name, cfg.NewFlowRate, tc.readBack)
		}
		// Three new flows on one CPU within a second (the test takes
		// milliseconds; a window that turns in between would let one
		// more through, so the capped case allows 2).
		got := newACKs(10 + 10*tc.want)
		if got != tc.want && !(tc.want == 1 && got == 2) {
			t.Errorf("%s: %d of 3 new flows recorded, want %d", tc.name, got, tc.want)
		}
	}
}
