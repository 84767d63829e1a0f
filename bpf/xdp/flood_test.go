package xdp

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"

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

// TestSYNFloodKeepsEstablished: a flood of spoofed SYNs, ten times the
// connection table's capacity, from random sources, interleaved with the
// packets of established connections that keep sending. The SYNs never
// enter the table (a SYN is recorded only by its connection's next
// packet, which a spoofed SYN never has), so no established entry is
// evicted: each is still there afterwards, the very entry its ACK made
// (its packet count is every packet it sent after the SYN), and after a
// ring change that moves most slots every established connection's next
// packet still goes to its original real. Before "insert on the second
// packet", every SYN was inserted and evicted entries of live flows.
func TestSYNFloodKeepsEstablished(t *testing.T) {
	l := newTestLB(t)
	ncpu := floodCPUs()
	capacity := int(l.objs.Conns.MaxEntries())
	const established = 64
	// Each established connection sends one packet per round, every
	// 2 x capacity SYNs: often enough to be live, seldom enough that an
	// LRU filled by the SYNs would evict it (the old code did: about one
	// in two of them lost its entry at some point of the flood).
	const rounds = 5
	flood := 10 * capacity
	perRound := flood / rounds
	gap := perRound / established // SYNs between two established packets

	type conn struct {
		p    pkt
		k    FlowKey
		cpu  int
		real netip.Addr
	}
	conns := make([]conn, established)
	for i := range conns {
		p := pkt{src: fmt.Sprintf("203.0.113.%d", i+1), dst: "10.10.0.1", sport: uint16(40000 + i), dport: 80, proto: lb.TCP}
		c := conn{p: p, k: p.flowKey(), cpu: i % ncpu}
		c.real = l.ringReal(t, vipTCP, c.k)
		l.openOn(t, c.cpu, p)
		conns[i] = c
	}
	before, err := l.GlobalStats()
	if err != nil {
		t.Fatal(err)
	}

	// send sends c's next data packet and checks that it went, exactly
	// encapsulated, to c's real.
	send := func(c conn, what string) {
		t.Helper()
		d := c.p
		d.flags, d.payload = "PA", []byte("keepalive")
		in := d.frame(t)
		act, out, err := simulateOn(l.Balancer, c.cpu, in)
		if err != nil {
			t.Fatal(err)
		}
		if want := l.expectEncap(t, in, vipTCP, c.k, c.real); act != ActionTX || string(out) != string(want) {
			t.Fatalf("%s: %s on CPU %d: action %v, frame\n%x\nwant it to its real %s:\n%x", what, c.k, c.cpu, act, out, c.real, want)
		}
	}

	rng := rand.New(rand.NewPCG(20, 3)) // deterministic: the same flood every run
	sent := 0
	for round := range rounds {
		for i := range perRound {
			src := netip.AddrFrom4([4]byte{100, byte(64 + rng.IntN(64)), byte(rng.IntN(256)), byte(rng.IntN(256))})
			syn := pkt{src: src.String(), dst: "10.10.0.1", sport: uint16(1024 + rng.IntN(64000)), dport: 80, proto: lb.TCP, flags: "S"}
			if act, _, err := simulateOn(l.Balancer, sent%ncpu, syn.frame(t)); err != nil || act != ActionTX {
				t.Fatalf("spoofed SYN %d: %v %v", sent, act, err)
			}
			sent++
			if i%gap == gap-1 && i/gap < established {
				send(conns[i/gap], fmt.Sprintf("round %d, during the flood", round))
			}
		}
	}
	after, err := l.GlobalStats()
	if err != nil {
		t.Fatal(err)
	}
	if sent != flood {
		t.Fatalf("sent %d spoofed SYNs, want %d", sent, flood)
	}
	t.Logf("%d spoofed SYNs (10 x the table's %d entries) over %d CPUs, %d established connections sending %d packets each among them",
		sent, capacity, ncpu, established, rounds)

	// 0 evicted: every established connection still has the entry its ACK
	// made (a re-created one would count fewer packets), and the table
	// holds nothing else.
	for _, c := range conns {
		f, err := l.LookupFlow(c.k)
		if err != nil {
			t.Errorf("after the flood: %s: %v (evicted)", c.k, err)
			continue
		}
		if got, _ := l.RealAddr(f.Real); got != c.real || f.Packets != 1+rounds {
			t.Errorf("after the flood: %s has real %s and %d packets, want %s and %d (its ACK and data)", c.k, got, f.Packets, c.real, 1+rounds)
		}
	}
	n := 0
	for _, err := range l.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != established {
		t.Errorf("after the flood the table has %d entries, want the %d established connections'", n, established)
	}
	for s, want := range map[Stat]uint64{
		StatTX: uint64(flood + established*rounds), StatLRUHit: established * rounds, StatLRUMiss: uint64(flood),
		StatLRUMissNonSYN: 0, StatLRUInsertFail: 0,
	} {
		if d := after[s] - before[s]; d != want {
			t.Errorf("counter %s grew by %d during the flood, want %d", s, d, want)
		}
	}

	// A ring change after the flood: most connections' slots move, none
	// of the connections does.
	l.setRing(t, vipTCP, movedRing(t, l))
	moved := 0
	for _, c := range conns {
		if l.ringReal(t, vipTCP, c.k) != c.real {
			moved++
		}
	}
	if moved < established/2 {
		t.Fatalf("test setup: the new ring moves %d of %d connections' slots, want most", moved, established)
	}
	for _, c := range conns {
		send(c, "after the ring change")
	}
	t.Logf("ring change after the flood: %d of %d connections' slots moved, all %d kept their real", moved, established, established)
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
