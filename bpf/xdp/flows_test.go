package xdp

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// TestFlowHashMatchesDatapath: for random flows, the real the program
// picks is the one the Go mirror of the hash predicts. The ring holds a
// different real in every slot, so the real tells the slot exactly.
func TestFlowHashMatchesDatapath(t *testing.T) {
	l := newTestLB(t)
	const size = 53 // prime; with the fixtures' 6 reals it fits MaxReals 64
	vip := lb.VIPKey{Addr: netip.MustParseAddr("10.20.0.1"), Port: 443, Proto: lb.TCP}
	vip6 := lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::40"), Port: 443, Proto: lb.TCP}
	ring := make([]RealID, size)
	for i := range ring {
		id, err := l.AddReal(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}))
		if err != nil {
			t.Fatal(err)
		}
		ring[i] = id
	}
	for _, v := range []lb.VIPKey{vip, vip6} {
		if err := l.AddVIP(v, lb.VIPNoLRU); err != nil {
			t.Fatal(err)
		}
		l.setRing(t, v, ring)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 400; i++ {
		v := vip
		src := netip.AddrFrom4([4]byte{byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.Uint32())})
		if i%2 == 1 {
			v = vip6
			var b [16]byte
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			b[0] = 0x20
			src = netip.AddrFrom16(b)
		}
		p := pkt{src: src.String(), dst: v.Addr.String(), sport: uint16(rng.Uint32()), dport: 443, proto: lb.TCP, flags: "S"}
		act, out, err := l.Simulate(p.frame(t))
		if err != nil || act != ActionTX {
			t.Fatalf("flow %d: %v %v", i, act, err)
		}
		got := netip.AddrFrom4([4]byte(out[14+16 : 14+20]))
		want := l.ringReal(t, v, p.flowKey())
		if got != want {
			t.Fatalf("flow %s: datapath chose %s, Go hash predicts %s", p.flowKey(), got, want)
		}
	}
}

// TestRingChangeKeepsFlows: after a ring change an established flow keeps
// its real (connection table), while a new SYN, even of the same 5-tuple,
// takes the new ring's choice.
func TestRingChangeKeepsFlows(t *testing.T) {
	l := newTestLB(t)
	established := pkt{src: "198.51.100.50", dst: "10.10.0.1", sport: 40100, dport: 80, proto: lb.TCP, flags: "S"}
	k := established.flowKey()
	l.openOn(t, 0, established)
	f, err := l.LookupFlow(k)
	if err != nil {
		t.Fatal(err)
	}
	oldReal, _ := l.RealAddr(f.Real)
	l.setRing(t, vipTCP, otherRing(t, l, vipTCP, f.Real))
	newReal := l.ringReal(t, vipTCP, k)
	if newReal == oldReal {
		t.Fatal("test setup: the new ring must move the flow")
	}

	data := established
	data.flags = "PA"
	data.payload = []byte("hello")
	in := data.frame(t)
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipTCP, k, oldReal), txHit)

	// The same client reconnecting with the same port: a SYN follows the
	// ring and, the 5-tuple having an entry, replaces it at once.
	in = established.frame(t)
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipTCP, k, newReal), txNew)
	in = data.frame(t)
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipTCP, k, newReal), txHit)
}

// TestFlowAccounting: the table entry records the real, packets, bytes
// and times from the connection's first packet after its SYN (the SYN is
// not recorded); the VIP and real counters count every packet.
func TestFlowAccounting(t *testing.T) {
	l := newTestLB(t)
	p := pkt{src: "198.51.100.60", dst: "10.10.0.1", sport: 40200, dport: 80, proto: lb.TCP, flags: "S"}
	k := p.flowKey()
	start := time.Now()
	var bytes, flowBytes uint64
	for i := 0; i < 5; i++ {
		if i > 0 {
			p.flags = "PA"
			p.payload = make([]byte, 100*i)
		}
		in := p.frame(t)
		bytes += uint64(innerLen(in))
		if i > 0 {
			flowBytes += uint64(innerLen(in))
		}
		if act, _, err := l.Simulate(in); err != nil || act != ActionTX {
			t.Fatal(act, err)
		}
	}
	f, err := l.LookupFlow(k)
	if err != nil {
		t.Fatal(err)
	}
	want := l.ringReal(t, vipTCP, k)
	if got, _ := l.RealAddr(f.Real); got != want || f.Packets != 4 || f.Bytes != flowBytes || f.Key != k {
		t.Errorf("flow = %+v (real %s), want real %s, 4 packets (all but the SYN), %d bytes", f, got, want, flowBytes)
	}
	if f.FirstSeen.Before(start.Add(-time.Second)) || f.LastSeen.Before(f.FirstSeen) || f.LastSeen.After(time.Now().Add(time.Second)) {
		t.Errorf("flow times %v..%v outside the test's run from %v", f.FirstSeen, f.LastSeen, start)
	}
	vs, err := l.VIPStats(vipTCP)
	if err != nil {
		t.Fatal(err)
	}
	if vs != (VIPStats{Packets: 5, Bytes: bytes, LRUHits: 3, LRUMisses: 2}) {
		t.Errorf("VIP stats = %+v, want 5 packets, %d bytes, 3 hits, 2 misses (the SYN, the first data)", vs, bytes)
	}
	rs, err := l.RealStats(f.Real)
	if err != nil {
		t.Fatal(err)
	}
	if rs != (RealStats{Packets: 5, Bytes: bytes}) {
		t.Errorf("real stats = %+v, want 5 packets, %d bytes", rs, bytes)
	}
	n := 0
	for fl, err := range l.Flows() {
		if err != nil {
			t.Fatal(err)
		}
		if fl.Key == k {
			n++
		}
	}
	if n != 1 {
		t.Errorf("Flows() listed the flow %d times, want 1", n)
	}
}

// TestTableEntries: which packets create a connection table entry.
func TestTableEntries(t *testing.T) {
	l := newTestLB(t)
	cases := []struct {
		name   string
		vip    lb.VIPKey
		p      pkt
		stats  map[Stat]uint64
		stored bool
	}{
		{"rst on a miss creates nothing", vipTCP, pkt{src: "198.51.100.70", dst: "10.10.0.1", sport: 1, dport: 80, proto: lb.TCP, flags: "RA"}, txNonSYN, false},
		{"no-lru vip creates nothing", vipNoLRU, pkt{src: "198.51.100.70", dst: "10.10.0.7", sport: 2, dport: 80, proto: lb.TCP, flags: "S"}, map[Stat]uint64{StatTX: 1}, false},
		{"udp creates an entry", vipUDP, pkt{src: "198.51.100.70", dst: "10.10.0.1", sport: 3, dport: 53, proto: lb.UDP}, txNew, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.p.frame(t)
			k := c.p.flowKey()
			l.run(t, in, ActionTX, l.expectEncap(t, in, c.vip, k, l.ringReal(t, c.vip, k)), c.stats)
			_, err := l.LookupFlow(k)
			if stored := err == nil; stored != c.stored {
				t.Errorf("entry stored = %v, want %v (%v)", stored, c.stored, err)
			}
		})
	}
}

// TestRemovedRealRechooses: an entry whose real was undefined chooses
// again from the ring instead of sending to a stale address.
func TestRemovedRealRechooses(t *testing.T) {
	l := newTestLB(t)
	p := pkt{src: "198.51.100.80", dst: "10.10.0.1", sport: 40300, dport: 80, proto: lb.TCP}
	k := p.flowKey()
	l.openOn(t, 0, p)
	f, _ := l.LookupFlow(k)
	old, _ := l.RealAddr(f.Real)
	// Take the real out of the rings that use it, then undefine it.
	for _, v := range []lb.VIPKey{vipTCP, vipUDP, vipGUE, vipPortless, vipSticky, vipNoLRU, vip6to4} {
		l.setRing(t, v, otherRing(t, l, v, f.Real))
	}
	if err := l.RemoveReal(old); err != nil {
		t.Fatal(err)
	}
	p.flags = "A"
	in := p.frame(t)
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipTCP, k, l.ringReal(t, vipTCP, k)), txNonSYN)
}

// TestUDPTimeout: an idle UDP entry re-follows the ring; a busy one stays.
func TestUDPTimeout(t *testing.T) {
	l := newTestLB(t)
	cfg := l.cfg
	cfg.UDPFlowTimeout = time.Second
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	p := pkt{src: "198.51.100.90", dst: "10.10.0.1", sport: 4444, dport: 53, proto: lb.UDP}
	k := p.flowKey()
	in := p.frame(t)
	if _, _, err := l.Simulate(in); err != nil {
		t.Fatal(err)
	}
	f, _ := l.LookupFlow(k)
	old, _ := l.RealAddr(f.Real)
	l.setRing(t, vipUDP, otherRing(t, l, vipUDP, f.Real))
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipUDP, k, old), txHit)
	time.Sleep(1100 * time.Millisecond)
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipUDP, k, l.ringReal(t, vipUDP, k)), txNew)
}

// TestFragments: fragments to a VIP address follow the fragment policy;
// fragments to other addresses are not ours.
func TestFragments(t *testing.T) {
	l := newTestLB(t)
	frag4 := func(dst string, flags layers.IPv4Flag, off uint16) []byte {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 5, Flags: flags, FragOffset: off, Protocol: layers.IPProtocolUDP,
			SrcIP: []byte{198, 51, 100, 1}, DstIP: netip.MustParseAddr(dst).AsSlice()}
		return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeIPv4}, ip, gopacket.Payload(make([]byte, 64)))
	}
	frag6 := func(off uint16, more bool) []byte {
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolIPv6Fragment,
			SrcIP: netip.MustParseAddr("2001:db8:1::1").AsSlice(), DstIP: netip.MustParseAddr("2001:db8::10").AsSlice()}
		fh := make([]byte, 8)
		fh[0] = byte(layers.IPProtocolTCP)
		v := off << 3
		if more {
			v |= 1
		}
		fh[2], fh[3] = byte(v>>8), byte(v)
		return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeIPv6}, ip, gopacket.Payload(append(fh, make([]byte, 64)...)))
	}
	first := frag4("10.10.0.1", layers.IPv4MoreFragments, 0)
	later := frag4("10.10.0.1", 0, 100)
	cases := []struct {
		name  string
		in    []byte
		pass  bool
		want  Action
		stats map[Stat]uint64
	}{
		{"first ipv4 fragment, drop policy", first, false, ActionDrop, map[Stat]uint64{StatDropFragment: 1}},
		{"later ipv4 fragment, drop policy", later, false, ActionDrop, map[Stat]uint64{StatDropFragment: 1}},
		{"ipv6 fragment, drop policy", frag6(0, true), false, ActionDrop, map[Stat]uint64{StatDropFragment: 1}},
		{"first ipv4 fragment, pass policy", first, true, ActionPass, map[Stat]uint64{StatPassFragment: 1}},
		{"ipv6 later fragment, pass policy", frag6(10, false), true, ActionPass, map[Stat]uint64{StatPassFragment: 1}},
		{"fragment to another address", frag4("10.99.0.1", layers.IPv4MoreFragments, 0), false, ActionPass, map[Stat]uint64{StatPassNonVIP: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := l.cfg
			if c.pass {
				cfg.FragmentPolicy = PolicyPass
			}
			if err := l.SetConfig(cfg); err != nil {
				t.Fatal(err)
			}
			l.run(t, c.in, c.want, nil, c.stats)
		})
	}
}

// TestUnbalanceablePolicy: the pass policy hands such packets to the stack.
func TestUnbalanceablePolicy(t *testing.T) {
	l := newTestLB(t)
	cfg := l.cfg
	cfg.UnbalanceablePolicy = PolicyPass
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	l.run(t, ipv4Raw(t, "198.51.100.1", "10.10.0.1", 47, make([]byte, 8)), ActionPass, nil, map[Stat]uint64{StatPassUnbalanceable: 1})
}

// TestTooBig: a packet whose encapsulation would exceed the MTU is dropped
// and counted, not sent to be lost further on.
func TestTooBig(t *testing.T) {
	l := newTestLB(t)
	p := pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 9, dport: 80, proto: lb.TCP, flags: "PA", payload: make([]byte, 1500-40)}
	in := p.frame(t)
	l.run(t, in, ActionDrop, nil, map[Stat]uint64{StatDropTooBig: 1, StatLRUMiss: 1, StatLRUMissNonSYN: 1})
	p.payload = p.payload[:1500-40-20]
	in = p.frame(t)
	k := p.flowKey()
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipTCP, k, l.ringReal(t, vipTCP, k)), txHit)
}

// TestLimits: exceeding a map size is a clear error, and nothing is left
// half-installed.
func TestLimits(t *testing.T) {
	privtest.Require(t)
	b, err := Load(Limits{MaxVIPs: 2, MaxReals: 3, MaxFlows: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := 0; i < 2; i++ {
		if err := b.AddVIP(lb.VIPKey{Addr: netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), Port: 80, Proto: lb.TCP}, 0); err != nil {
			t.Fatal(err)
		}
	}
	third := lb.VIPKey{Addr: netip.MustParseAddr("10.0.0.3"), Port: 80, Proto: lb.TCP}
	if err := b.AddVIP(third, 0); !errors.Is(err, ErrLimit) {
		t.Errorf("third VIP: err = %v, want ErrLimit", err)
	}
	if _, err := b.LookupVIP(third); !errors.Is(err, ErrNotFound) {
		t.Errorf("failed VIP was installed: %v", err)
	}
	if err := b.AddVIP(lb.VIPKey{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Proto: lb.TCP}, 0); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate VIP: err = %v, want ErrExists", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := b.AddReal(netip.AddrFrom4([4]byte{10, 1, 0, byte(i + 1)})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.AddReal(netip.MustParseAddr("10.1.0.3")); !errors.Is(err, ErrLimit) {
		t.Errorf("third real: err = %v, want ErrLimit", err)
	}
	if err := b.SetRing(lb.VIPKey{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Proto: lb.TCP}, []uint32{1, 2, 99}); err == nil {
		t.Error("ring with an undefined real was accepted")
	}
	// A removed VIP frees its slot.
	if err := b.RemoveVIP(lb.VIPKey{Addr: netip.MustParseAddr("10.0.0.1"), Port: 80, Proto: lb.TCP}); err != nil {
		t.Fatal(err)
	}
	if err := b.AddVIP(third, 0); err != nil {
		t.Errorf("VIP after a removal: %v", err)
	}
	for _, bad := range []Limits{{0, 10, 10}, {10, 1, 10}, {10, 10, 0}} {
		if _, err := Load(bad); err == nil {
			t.Errorf("Load(%+v) accepted", bad)
		}
	}
}

// TestRemovedVIPForgetsFlows: once a VIP is removed its table entries stop
// matching (generation check), so a VIP added again under the same key
// starts from its ring, and a removed VIP's traffic is not forwarded.
func TestRemovedVIPForgetsFlows(t *testing.T) {
	l := newTestLB(t)
	p := pkt{src: "198.51.100.99", dst: "10.10.0.1", sport: 4545, dport: 53, proto: lb.UDP}
	k := p.flowKey()
	in := p.frame(t)
	if _, _, err := l.Simulate(in); err != nil {
		t.Fatal(err)
	}
	f, _ := l.LookupFlow(k)
	if err := l.RemoveVIP(vipUDP); err != nil {
		t.Fatal(err)
	}
	l.run(t, in, ActionPass, nil, map[Stat]uint64{StatPassNoVIPPort: 1})
	if err := l.AddVIP(vipUDP, 0); err != nil {
		t.Fatal(err)
	}
	l.setRing(t, vipUDP, otherRing(t, l, vipUDP, f.Real))
	l.run(t, in, ActionTX, l.expectEncap(t, in, vipUDP, k, l.ringReal(t, vipUDP, k)), txNew)
}

// TestFlowMovesBetweenCPUs: a flow whose packets come in on another CPU
// (veth, an RSS change) keeps its real: the connection table is shared,
// so every CPU's packet is a plain hit on the flow's one entry, which
// counts all of them. Nothing is searched, whatever the allowance says.
func TestFlowMovesBetweenCPUs(t *testing.T) {
	l := newTestLB(t)
	if runtime.NumCPU() < 2 {
		privtest.Unavailable(t, fmt.Sprintf("needs two CPUs, this machine has %d", runtime.NumCPU()))
	}
	// open makes a flow on CPU 0 and moves the ring away from its real.
	open := func(p pkt, vip lb.VIPKey) (k FlowKey, flowReal netip.Addr) {
		t.Helper()
		k = p.flowKey()
		if p.proto == lb.TCP {
			l.openOn(t, 0, p)
		} else if act, _, err := simulateOn(l.Balancer, 0, p.frame(t)); err != nil || act != ActionTX {
			t.Fatalf("open %s: %v %v", k, act, err)
		}
		f, err := l.LookupFlow(k)
		if err != nil {
			t.Fatal(err)
		}
		flowReal, _ = l.RealAddr(f.Real)
		var others []RealID // every fixture real but the flow's
		for _, r := range reals4 {
			if id := l.Reals()[netip.MustParseAddr(r)]; id != f.Real {
				others = append(others, id)
			}
		}
		l.setRing(t, vip, others)
		if l.ringReal(t, vip, k) == flowReal {
			t.Fatalf("test setup: %s's real must be off the ring", k)
		}
		return k, flowReal
	}
	// entries counts k's entries in the table as user space lists it.
	entries := func(k FlowKey) int {
		n := 0
		for f, err := range l.Flows() {
			if err != nil {
				t.Fatal(err)
			}
			if f.Key == k {
				n++
			}
		}
		return n
	}

	t.Run("tcp", func(t *testing.T) {
		syn := pkt{src: "198.51.100.110", dst: "10.10.0.1", sport: 41000, dport: 80, proto: lb.TCP, flags: "S"}
		k, flowReal := open(syn, vipTCP)
		data := syn
		data.flags, data.payload = "PA", []byte("moved")
		in := data.frame(t)
		// Back and forth (a veth client whose process the scheduler moves).
		for _, cpu := range []int{1, 1, 0, 1, 0} {
			l.runOn(t, cpu, in, ActionTX, l.expectEncap(t, in, vipTCP, k, flowReal), txHit)
		}
		f, err := l.LookupFlow(k)
		if err != nil || f.Packets != 6 {
			t.Errorf("entry: %+v %v; want its 6 packets", f, err)
		}
		if n := entries(k); n != 1 {
			t.Errorf("%s has %d entries, want 1", k, n)
		}
	})

	t.Run("udp", func(t *testing.T) {
		q := pkt{src: "198.51.100.111", dst: "10.10.0.1", sport: 41001, dport: 53, proto: lb.UDP, payload: []byte("q")}
		k, flowReal := open(q, vipUDP)
		in := q.frame(t)
		l.runOn(t, 1, in, ActionTX, l.expectEncap(t, in, vipUDP, k, flowReal), txHit)
	})

	t.Run("icmp too big", func(t *testing.T) {
		syn := pkt{src: "198.51.100.112", dst: "10.10.0.1", sport: 41002, dport: 80, proto: lb.TCP, flags: "S"}
		k, flowReal := open(syn, vipTCP)
		in := fragNeeded(t, "10.10.0.1", syn.src, 80, syn.sport, lb.TCP)
		l.runOn(t, 1, in, ActionTX, l.expectEncap(t, in, vipTCP, k, flowReal),
			map[Stat]uint64{StatTX: 1, StatICMPTooBig: 1})
	})

	t.Run("search off", func(t *testing.T) {
		// The VIP flag no longer matters: nothing to search.
		if err := l.SetVIPFlags(vipUDP, lb.VIPNoFlowSearch); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.SetVIPFlags(vipUDP, 0) })
		q := pkt{src: "198.51.100.118", dst: "10.10.0.1", sport: 41008, dport: 53, proto: lb.UDP, payload: []byte("q")}
		k, flowReal := open(q, vipUDP)
		in := q.frame(t)
		l.runOn(t, 1, in, ActionTX, l.expectEncap(t, in, vipUDP, k, flowReal), txHit)
	})
}
