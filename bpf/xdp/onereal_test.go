package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// The invariant of these tests: from its SYN on, a TCP connection goes to
// exactly one real, and a UDP flow to one real for its life, whichever
// CPUs its packets come in on, after ring changes and 5-tuple reuse, with
// or without the VIP's no_flow_search flag and whatever the search
// allowance has left.

// oneRealVariant is how the VIP and configuration are set up.
type oneRealVariant struct {
	name  string
	flags lb.VIPFlags
	spent bool // other new flows first: what used up the old search allowance
}

var oneRealVariants = []oneRealVariant{
	{name: "default"},
	{name: "no_flow_search", flags: lb.VIPNoFlowSearch},
	{name: "allowance exhausted", spent: true},
}

// setupOneReal makes a test balancer for a variant: vip gets its flags.
func setupOneReal(t *testing.T, v oneRealVariant, vip lb.VIPKey) *testLB {
	t.Helper()
	if runtime.NumCPU() < 2 {
		privtest.Unavailable(t, fmt.Sprintf("needs two CPUs, this machine has %d", runtime.NumCPU()))
	}
	l := newTestLB(t)
	if err := l.SetVIPFlags(vip, v.flags); err != nil {
		t.Fatal(err)
	}
	return l
}

// spendAllowance sends cpu packets of flows no table has, if the variant
// says so (they used up the search allowance of the per-CPU tables).
func spendAllowance(t *testing.T, l *testLB, v oneRealVariant, cpu int) {
	t.Helper()
	if !v.spent {
		return
	}
	for i := range 4 {
		p := pkt{src: "198.51.100.250", dst: "10.10.0.1", sport: uint16(42000 + i), dport: 53, proto: lb.UDP, payload: []byte("x")}
		if act, _, err := simulateOn(l.Balancer, cpu, p.frame(t)); err != nil || act != ActionTX {
			t.Fatalf("spend the allowance: %v %v", act, err)
		}
	}
}

// sendOn runs a frame on cpu and returns the real it was sent to.
func sendOn(t *testing.T, l *testLB, cpu int, vip lb.VIPKey, k FlowKey, in []byte) netip.Addr {
	t.Helper()
	act, out, err := simulateOn(l.Balancer, cpu, in)
	if err != nil {
		t.Fatal(err)
	}
	if act != ActionTX {
		t.Fatalf("CPU %d: action %v, want TX", cpu, act)
	}
	for _, r := range reals4 {
		a := netip.MustParseAddr(r)
		if string(out) == string(l.expectEncap(t, in, vip, k, a)) {
			return a
		}
	}
	t.Fatalf("CPU %d: output frame goes to none of the reals %v", cpu, reals4)
	return netip.Addr{}
}

// ringAway points vip's ring at every real but not, and checks that k's
// ring choice is then another real.
func ringAway(t *testing.T, l *testLB, vip lb.VIPKey, k FlowKey, not netip.Addr) netip.Addr {
	t.Helper()
	var ids []RealID
	for _, r := range reals4 {
		if a := netip.MustParseAddr(r); a != not {
			ids = append(ids, l.Reals()[a])
		}
	}
	l.setRing(t, vip, ids)
	next := l.ringReal(t, vip, k)
	if next == not {
		t.Fatalf("test setup: the ring still gives %s to %s", k, not)
	}
	return next
}

// TestTCPReuseOneReal is the reproduction: a connection opened on
// CPU a, the ring moved off its real, then the 5-tuple reused by a new
// connection whose SYN comes in on CPU b. Every later packet of the new
// connection, and an ICMP too-big quoting it, must go to the new real on
// both CPUs (the old code sent CPU a's to the old real: a local hit on
// the stale entry).
func TestTCPReuseOneReal(t *testing.T) {
	for _, v := range oneRealVariants {
		for _, cpus := range [][2]int{{1, 0}, {0, 1}} {
			t.Run(fmt.Sprintf("%s/syn on %d then %d", v.name, cpus[0], cpus[1]), func(t *testing.T) {
				l := setupOneReal(t, v, vipTCP)
				a, b := cpus[0], cpus[1]
				syn := pkt{src: "198.51.100.120", dst: "10.10.0.1", sport: 43000, dport: 80, proto: lb.TCP, flags: "S"}
				ack := syn
				ack.flags = "A"
				data := syn
				data.flags, data.payload = "PA", []byte("req")
				fin := syn
				fin.flags = "FA"
				k := syn.flowKey()

				old := sendOn(t, l, a, vipTCP, k, syn.frame(t))
				for _, cpu := range []int{a, b, a} {
					if got := sendOn(t, l, cpu, vipTCP, k, ack.frame(t)); got != old {
						t.Fatalf("first connection: ACK on CPU %d went to %s, its SYN to %s", cpu, got, old)
					}
				}
				next := ringAway(t, l, vipTCP, k, old)
				spendAllowance(t, l, v, a)
				spendAllowance(t, l, v, b)

				// The 5-tuple is reused: a new connection's SYN on CPU b.
				if got := sendOn(t, l, b, vipTCP, k, syn.frame(t)); got != next {
					t.Fatalf("SYN of the new connection on CPU %d went to %s, want the ring's %s", b, got, next)
				}
				for _, step := range []struct {
					cpu  int
					what string
					in   []byte
				}{
					{a, "ACK", ack.frame(t)}, {b, "ACK", ack.frame(t)},
					{a, "data", data.frame(t)}, {b, "data", data.frame(t)},
					{a, "ICMP too-big", fragNeeded(t, "10.10.0.1", syn.src, 80, syn.sport, lb.TCP)},
					{b, "ICMP too-big", fragNeeded(t, "10.10.0.1", syn.src, 80, syn.sport, lb.TCP)},
					{a, "FIN", fin.frame(t)}, {b, "FIN", fin.frame(t)}, {a, "FIN", fin.frame(t)},
				} {
					if got := sendOn(t, l, step.cpu, vipTCP, k, step.in); got != next {
						t.Errorf("new connection: %s on CPU %d went to %s, its SYN to %s", step.what, step.cpu, got, next)
					}
				}
				f, err := l.LookupFlow(k)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := l.RealAddr(f.Real); got != next {
					t.Errorf("connection table: %s has real %s, want %s", k, got, next)
				}
			})
		}
	}
}

// TestUDPOneReal: a UDP flow that starts on CPU a keeps its real when its
// packets come in on CPU b after the ring moved off that real, in both
// CPU orders, whether or not its VIP allows the search and whatever the
// allowance has left (the old code followed the ring on CPU b without a
// search, and from then on the flow had two reals).
func TestUDPOneReal(t *testing.T) {
	for _, v := range oneRealVariants {
		for _, cpus := range [][2]int{{1, 0}, {0, 1}} {
			t.Run(fmt.Sprintf("%s/first on %d then %d", v.name, cpus[0], cpus[1]), func(t *testing.T) {
				l := setupOneReal(t, v, vipUDP)
				a, b := cpus[0], cpus[1]
				q := pkt{src: "198.51.100.121", dst: "10.10.0.1", sport: 43001, dport: 53, proto: lb.UDP, payload: []byte("q")}
				k := q.flowKey()
				first := sendOn(t, l, a, vipUDP, k, q.frame(t))
				ringAway(t, l, vipUDP, k, first)
				spendAllowance(t, l, v, a)
				spendAllowance(t, l, v, b)
				for i, cpu := range []int{b, a, b, b, a} {
					if got := sendOn(t, l, cpu, vipUDP, k, q.frame(t)); got != first {
						t.Errorf("datagram %d on CPU %d went to %s, the flow's first to %s", i+2, cpu, got, first)
					}
				}
				in := fragNeeded(t, "10.10.0.1", q.src, 53, q.sport, lb.UDP)
				if got := sendOn(t, l, b, vipUDP, k, in); got != first {
					t.Errorf("ICMP too-big on CPU %d went to %s, the flow to %s", b, got, first)
				}
				f, err := l.LookupFlow(k)
				if err != nil {
					t.Fatal(err)
				}
				if f.Packets != 6 {
					t.Errorf("connection table: %s has %d packets, want the 6 sent", k, f.Packets)
				}
			})
		}
	}
}

// TestMigrateLegacyFlows: an lbd from before the shared table left its
// per-CPU tables pinned (flows, an array of LRU hashes); the next start
// moves their entries into the shared table, the newest entry of a
// 5-tuple that two CPUs' tables have winning, and removes the old pin.
func TestMigrateLegacyFlows(t *testing.T) {
	dir := testPinDir(t)
	limits := Limits{MaxVIPs: 4, MaxReals: 8, MaxFlows: 64}
	b := openPinned(t, limits, dir)
	b.Close()
	if err := os.Remove(filepath.Join(dir, balancerMapConns)); err != nil {
		t.Fatal(err)
	}

	// The old layout: flows[cpu], each an LRU hash of the same key and value.
	keySize := uint32(binary.Size(balancerFlowKey{}))
	valueSize := uint32(binary.Size(balancerFlowState{}))
	inner := &ebpf.MapSpec{Type: ebpf.LRUHash, KeySize: keySize, ValueSize: valueSize, MaxEntries: 32}
	outer, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{
		Name: legacyFlowsPin, Type: ebpf.ArrayOfMaps, KeySize: 4, ValueSize: 4, MaxEntries: 2,
		InnerMap: inner, Pinning: ebpf.PinByName,
	}, ebpf.MapOptions{PinPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer outer.Close()
	reused := FlowKey{Client: netip.MustParseAddrPort("198.51.100.130:44000"), Dest: netip.MustParseAddrPort("10.10.0.1:80"), Proto: lb.TCP}
	single := FlowKey{Client: netip.MustParseAddrPort("198.51.100.131:44001"), Dest: netip.MustParseAddrPort("10.10.0.1:53"), Proto: lb.UDP}
	put := func(cpu uint32, k FlowKey, v balancerFlowState) {
		t.Helper()
		var m *ebpf.Map
		if err := outer.Lookup(cpu, &m); err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		raw, err := rawFlowKey(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Put(&raw, &v); err != nil {
			t.Fatal(err)
		}
	}
	for cpu := uint32(0); cpu < 2; cpu++ {
		m, err := ebpf.NewMap(inner)
		if err != nil {
			t.Fatal(err)
		}
		if err := outer.Put(cpu, m); err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	// The stale entry's first packet came before the reused one's, though
	// its last came after (its CPU kept seeing the connection's packets).
	put(1, reused, balancerFlowState{Real: 3, FirstTick: 100, LastTick: 900, Packets: 7})
	put(0, reused, balancerFlowState{Real: 2, FirstTick: 200, LastTick: 300, Packets: 2})
	put(1, single, balancerFlowState{Real: 1, FirstTick: 150, LastTick: 150, Packets: 1})

	b = openPinned(t, limits, dir)
	if !b.Recovered() {
		t.Error("pins not recovered")
	}
	for k, want := range map[FlowKey]RealID{reused: 2, single: 1} {
		f, err := b.LookupFlow(k)
		if err != nil {
			t.Errorf("%s after the move: %v", k, err)
		} else if f.Real != want {
			t.Errorf("%s after the move: real %d, want %d", k, f.Real, want)
		}
	}
	n := 0
	for _, err := range b.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d flows in the shared table, want 2", n)
	}
	if _, err := os.Lstat(filepath.Join(dir, legacyFlowsPin)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old pin %s still there: %v", legacyFlowsPin, err)
	}
}
