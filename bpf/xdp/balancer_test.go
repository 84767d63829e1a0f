package xdp

import (
	"bytes"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// testLB is a loaded balancer provisioned with the fixtures' VIPs.
type testLB struct {
	*Balancer
	cfg   Config
	rings map[lb.VIPKey][]uint32
}

var (
	vipTCP      = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 80, Proto: lb.TCP}
	vipUDP      = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 53, Proto: lb.UDP}
	vipGUE      = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.2"), Port: 443, Proto: lb.UDP}
	vip4to6     = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.3"), Port: 443, Proto: lb.TCP}
	vipPortless = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.4"), Port: 0, Proto: lb.TCP}
	vipSticky   = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.5"), Port: 80, Proto: lb.TCP}
	vipEmpty    = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.6"), Port: 80, Proto: lb.TCP}
	vipNoLRU    = lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.7"), Port: 80, Proto: lb.TCP}
	vip6        = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::10"), Port: 80, Proto: lb.TCP}
	vip6to4     = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::20"), Port: 80, Proto: lb.TCP}
	vip6GUE     = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::30"), Port: 443, Proto: lb.UDP}

	reals4 = []string{"10.0.1.1", "10.0.1.2", "10.0.1.3"}
	reals6 = []string{"fd00::1:1", "fd00::1:2", "fd00::1:3"}
)

const testRingSize = 13

func newTestLB(t testing.TB) *testLB {
	t.Helper()
	return newTestLBWithLimits(t, Limits{MaxVIPs: 16, MaxReals: 64, MaxFlows: 1024})
}

func newTestLBWithLimits(t testing.TB, limits Limits) *testLB {
	t.Helper()
	return newTestLBOpts(t, Options{Limits: limits})
}

// newTestLBOpts opens a balancer (pinned if opts say so), configures it
// for the fixtures and installs their VIPs.
func newTestLBOpts(t testing.TB, opts Options) *testLB {
	t.Helper()
	privtest.Require(t)
	b, err := Open(opts)
	privtest.CheckNotSupported(t, "load balancer", err)
	t.Cleanup(func() { b.Close() })
	cfg := DefaultConfig()
	cfg.GatewayMAC = packettest.GatewayMAC
	cfg.GUESourceV4 = netip.MustParseAddr("192.0.2.100")
	cfg.GUESourceV6 = netip.MustParseAddr("2001:db8:ffff::100")
	if err := b.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	l := &testLB{Balancer: b, cfg: cfg, rings: map[lb.VIPKey][]uint32{}}
	l.addVIP(t, vipTCP, 0, reals4)
	l.addVIP(t, vipUDP, 0, reals4)
	l.addVIP(t, vipGUE, lb.VIPGUE, reals4)
	l.addVIP(t, vip4to6, 0, reals6)
	l.addVIP(t, vipPortless, 0, reals4)
	l.addVIP(t, vipSticky, lb.VIPSticky, reals4)
	l.addVIP(t, vipEmpty, 0, nil)
	l.addVIP(t, vipNoLRU, lb.VIPNoLRU, reals4)
	l.addVIP(t, vip6, 0, reals6)
	l.addVIP(t, vip6to4, 0, reals4)
	l.addVIP(t, vip6GUE, lb.VIPGUE, reals6)
	return l
}

// addVIP installs a VIP whose ring cycles through the given reals.
func (l *testLB) addVIP(t testing.TB, key lb.VIPKey, flags lb.VIPFlags, reals []string) {
	t.Helper()
	if err := l.AddVIP(key, flags); err != nil {
		t.Fatal(err)
	}
	if len(reals) == 0 {
		return
	}
	var ids []RealID
	for _, r := range reals {
		id, err := l.AddReal(netip.MustParseAddr(r))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	ring := make([]RealID, testRingSize)
	for i := range ring {
		ring[i] = ids[i%len(ids)]
	}
	l.setRing(t, key, ring)
}

func (l *testLB) setRing(t testing.TB, key lb.VIPKey, ids []RealID) {
	t.Helper()
	ring := ringOf(ids...)
	if err := l.SetRing(key, ring); err != nil {
		t.Fatal(err)
	}
	l.rings[key] = ring
}

// ringOf is a ring of these reals, slot by slot.
func ringOf(ids ...RealID) []uint32 {
	ring := make([]uint32, len(ids))
	for i, id := range ids {
		ring[i] = uint32(id)
	}
	return ring
}

// ringReal is the real the VIP's ring gives a new flow.
func (l *testLB) ringReal(t testing.TB, vip lb.VIPKey, k FlowKey) netip.Addr {
	t.Helper()
	v, err := l.LookupVIP(vip)
	if err != nil {
		t.Fatal(err)
	}
	ring := l.rings[vip]
	id := RealID(ring[RingSlot(k, v.Flags&lb.VIPSticky != 0, uint32(len(ring)))])
	a, ok := l.RealAddr(id)
	if !ok {
		t.Fatalf("real %d not defined", id)
	}
	return a
}

// expectEncap is the frame the datapath must send for a client packet
// that goes to real.
func (l *testLB) expectEncap(t testing.TB, in []byte, vip lb.VIPKey, k FlowKey, real netip.Addr) []byte {
	t.Helper()
	v, err := l.LookupVIP(vip)
	if err != nil {
		t.Fatal(err)
	}
	h := FlowHash(k, v.Flags&lb.VIPSticky != 0)
	e := encapExpect{real: real, hash: h, gue: v.Flags&lb.VIPGUE != 0, guePort: l.cfg.GUEPort}
	switch {
	case e.gue && real.Is4():
		e.outerSrc = l.cfg.GUESourceV4
	case e.gue:
		e.outerSrc = l.cfg.GUESourceV6
	case real.Is4():
		e.outerSrc = encapSource(l.cfg.EncapSourceV4, h)
	default:
		e.outerSrc = encapSource(l.cfg.EncapSourceV6, h)
	}
	return encapsulated(t, in, e)
}

// run sends one frame through the program and checks the verdict, the
// output frame and the exact change of every global counter.
func (l *testLB) run(t *testing.T, in []byte, want Action, wantOut []byte, wantStats map[Stat]uint64) {
	t.Helper()
	l.runOn(t, 0, in, want, wantOut, wantStats)
}

// statsSince reads the global counters now and returns what gives their
// growth since.
func (l *testLB) statsSince(t testing.TB) (grown func(t testing.TB) GlobalStats) {
	t.Helper()
	before, err := l.GlobalStats()
	if err != nil {
		t.Fatal(err)
	}
	return func(t testing.TB) GlobalStats {
		t.Helper()
		after, err := l.GlobalStats()
		if err != nil {
			t.Fatal(err)
		}
		for s := range after {
			after[s] -= before[s]
		}
		return after
	}
}

// runOn is run on the given CPU.
func (l *testLB) runOn(t *testing.T, cpu int, in []byte, want Action, wantOut []byte, wantStats map[Stat]uint64) {
	t.Helper()
	counters := func() ([]uint64, error) { s, err := l.GlobalStats(); return s[:], err }
	packettest.ExpectRun(t, counters, func() (Action, []byte, error) { return simulateOn(l.Balancer, cpu, in) },
		in, want, wantOut, wantStats)
}

// openOn opens the TCP connection of p on cpu as a client does: its SYN
// (sent by the ring, not recorded), then its ACK (which records it).
func (l *testLB) openOn(t testing.TB, cpu int, p pkt) {
	t.Helper()
	for _, flags := range []string{"S", "A"} {
		p.flags, p.payload = flags, nil
		if act, _, err := simulateOn(l.Balancer, cpu, p.frame(t)); err != nil || act != ActionTX {
			t.Fatalf("open %s (%s): %v %v", p.flowKey(), flags, act, err)
		}
	}
}

var (
	txNew    = map[Stat]uint64{StatTX: 1, StatLRUMiss: 1}
	txHit    = map[Stat]uint64{StatTX: 1, StatLRUHit: 1}
	txNonSYN = map[Stat]uint64{StatTX: 1, StatLRUMiss: 1, StatLRUMissNonSYN: 1}
)

// TestEncapFixtures: a client packet in, the exact encapsulated packet out,
// for every family combination, IP-in-IP and GUE, VLAN and IPv4 options.
func TestEncapFixtures(t *testing.T) {
	l := newTestLB(t)
	cases := []struct {
		name  string
		vip   lb.VIPKey
		p     pkt
		stats map[Stat]uint64
	}{
		{"ipv4 tcp syn -> ipip", vipTCP, pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "S"}, txNew},
		{"ipv4 tcp ack after the syn -> non-syn miss, records the flow", vipTCP, pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "A"}, txNonSYN},
		{"ipv4 tcp data same flow -> table hit", vipTCP, pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 31337, dport: 80, proto: lb.TCP, flags: "A", payload: []byte("GET / HTTP/1.1\r\n\r\n")}, txHit},
		{"ipv4 tcp ack unknown flow -> non-syn miss", vipTCP, pkt{src: "198.51.100.2", dst: "10.10.0.1", sport: 40000, dport: 80, proto: lb.TCP, flags: "A"}, txNonSYN},
		{"ipv4 tcp with dscp", vipTCP, pkt{src: "198.51.100.3", dst: "10.10.0.1", sport: 40001, dport: 80, proto: lb.TCP, flags: "S", tos: 0xb8}, txNew},
		{"ipv4 udp -> ipip", vipUDP, pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 5353, dport: 53, proto: lb.UDP, payload: []byte("query")}, txNew},
		{"ipv4 udp -> gue over ipv4", vipGUE, pkt{src: "198.51.100.1", dst: "10.10.0.2", sport: 5000, dport: 443, proto: lb.UDP, payload: []byte("quic")}, txNew},
		{"ipv4 tcp -> ipv4-in-ipv6", vip4to6, pkt{src: "198.51.100.1", dst: "10.10.0.3", sport: 5001, dport: 443, proto: lb.TCP, flags: "S"}, txNew},
		{"ipv6 tcp syn -> ip6ip6", vip6, pkt{src: "2001:db8:1::1", dst: "2001:db8::10", sport: 31337, dport: 80, proto: lb.TCP, flags: "S"}, txNew},
		{"ipv6 tcp with traffic class", vip6, pkt{src: "2001:db8:1::2", dst: "2001:db8::10", sport: 31338, dport: 80, proto: lb.TCP, flags: "S", tos: 0x28}, txNew},
		{"ipv6 tcp -> ipv6-in-ipv4", vip6to4, pkt{src: "2001:db8:1::1", dst: "2001:db8::20", sport: 31337, dport: 80, proto: lb.TCP, flags: "S"}, txNew},
		{"ipv6 udp -> gue over ipv6", vip6GUE, pkt{src: "2001:db8:1::1", dst: "2001:db8::30", sport: 9999, dport: 443, proto: lb.UDP, payload: []byte("x")}, txNew},
		{"port-less vip, any port", vipPortless, pkt{src: "198.51.100.1", dst: "10.10.0.4", sport: 1234, dport: 8443, proto: lb.TCP, flags: "S"}, txNew},
		{"port-less vip, another port", vipPortless, pkt{src: "198.51.100.1", dst: "10.10.0.4", sport: 1234, dport: 22, proto: lb.TCP, flags: "S"}, txNew},
		{"sticky vip", vipSticky, pkt{src: "198.51.100.9", dst: "10.10.0.5", sport: 1111, dport: 80, proto: lb.TCP, flags: "S"}, txNew},
		{"vlan tagged", vipTCP, pkt{src: "198.51.100.4", dst: "10.10.0.1", sport: 40002, dport: 80, proto: lb.TCP, flags: "S", vlan: true}, txNew},
		{"vlan tagged ipv6", vip6, pkt{src: "2001:db8:1::4", dst: "2001:db8::10", sport: 40002, dport: 80, proto: lb.TCP, flags: "S", vlan: true}, txNew},
		{"ipv4 options", vipTCP, pkt{src: "198.51.100.5", dst: "10.10.0.1", sport: 40003, dport: 80, proto: lb.TCP, flags: "S",
			ipOptions: []layers.IPv4Option{{OptionType: 7, OptionLength: 7, OptionData: []byte{4, 0, 0, 0, 0}}, {OptionType: 1}}}, txNew},
		{"no-lru vip", vipNoLRU, pkt{src: "198.51.100.1", dst: "10.10.0.7", sport: 2000, dport: 80, proto: lb.TCP, flags: "A"}, map[Stat]uint64{StatTX: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := c.p.frame(t)
			k := c.p.flowKey()
			want := l.expectEncap(t, in, c.vip, k, l.ringReal(t, c.vip, k))
			l.run(t, in, ActionTX, want, c.stats)
		})
	}
}

// TestStickyVIP: one client's flows all go to the same real, and the
// outer source is the same for them.
func TestStickyVIP(t *testing.T) {
	l := newTestLB(t)
	var first []byte
	for port := uint16(1000); port < 1040; port++ {
		p := pkt{src: "198.51.100.77", dst: "10.10.0.5", sport: port, dport: 80, proto: lb.TCP, flags: "S"}
		_, out, err := l.Simulate(p.frame(t))
		if err != nil {
			t.Fatal(err)
		}
		hdr := out[:34] // Ethernet + outer IPv4: real and outer source
		if first == nil {
			first = hdr
		} else if !bytes.Equal(hdr, first) {
			t.Fatalf("port %d: outer header %x, want %x (sticky VIP must ignore ports)", port, hdr, first)
		}
	}
}

// TestPassAndDrop: what is not balanced leaves the frame untouched, with
// the verdict and the counter the documentation gives.
func TestPassAndDrop(t *testing.T) {
	l := newTestLB(t)
	tcpTo := func(dst string, dport uint16) []byte {
		return pkt{src: "198.51.100.1", dst: dst, sport: 999, dport: dport, proto: lb.TCP, flags: "S"}.frame(t)
	}
	arp := packettest.Serialize(t, false,
		&layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: packettest.ClientMAC, SourceProtAddress: []byte{10, 0, 0, 1},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 10, 0, 1}})
	cases := []struct {
		name  string
		in    []byte
		want  Action
		stats map[Stat]uint64
	}{
		{"non-vip ipv4", tcpTo("10.99.0.1", 80), ActionPass, map[Stat]uint64{StatPassNonVIP: 1}},
		{"non-vip ipv6", pkt{src: "2001:db8:1::1", dst: "2001:db8::99", sport: 1, dport: 80, proto: lb.TCP, flags: "S"}.frame(t), ActionPass, map[Stat]uint64{StatPassNonVIP: 1}},
		{"vip address, other port", tcpTo("10.10.0.1", 22), ActionPass, map[Stat]uint64{StatPassNoVIPPort: 1}},
		{"vip address, other protocol port", pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 5, dport: 80, proto: lb.UDP}.frame(t), ActionPass, map[Stat]uint64{StatPassNoVIPPort: 1}},
		{"port-less tcp vip does not take udp", pkt{src: "198.51.100.1", dst: "10.10.0.4", sport: 5, dport: 80, proto: lb.UDP}.frame(t), ActionPass, map[Stat]uint64{StatPassNoVIPPort: 1}},
		{"arp", arp, ActionPass, map[Stat]uint64{StatPassNonIP: 1}},
		{"vip without reals", tcpTo("10.10.0.6", 80), ActionDrop, map[Stat]uint64{StatDropNoReal: 1}},
		{"gre to vip address", ipv4Raw(t, "198.51.100.1", "10.10.0.1", 47, make([]byte, 8)), ActionDrop, map[Stat]uint64{StatDropUnbalanceable: 1}},
		{"icmp timestamp to vip address", icmp4(t, "198.51.100.1", "10.10.0.1", layers.ICMPv4TypeTimestampRequest, 0, make([]byte, 12)), ActionDrop, map[Stat]uint64{StatDropUnbalanceable: 1}},
		{"icmp frag-needed quoting a non-vip flow", fragNeeded(t, "10.10.0.1", "198.51.100.1", 8080, 5555, lb.TCP), ActionDrop, map[Stat]uint64{StatDropUnbalanceable: 1}},
		{"icmp to non-vip address", icmp4(t, "198.51.100.1", "10.99.0.1", layers.ICMPv4TypeEchoRequest, 0, []byte("ping")), ActionPass, map[Stat]uint64{StatPassNonVIP: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { l.run(t, c.in, c.want, nil, c.stats) })
	}
}

// TestMalformed: packets with short headers or lengths that lie are dropped
// with the counter of the layer that is wrong.
func TestMalformed(t *testing.T) {
	l := newTestLB(t)
	good4 := pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 999, dport: 80, proto: lb.TCP, flags: "S"}.frame(t)
	good6 := pkt{src: "2001:db8:1::1", dst: "2001:db8::10", sport: 999, dport: 80, proto: lb.TCP, flags: "S"}.frame(t)
	goodUDP := pkt{src: "198.51.100.1", dst: "10.10.0.1", sport: 999, dport: 53, proto: lb.UDP, payload: []byte("abcd")}.frame(t)
	mut := func(b []byte, f func([]byte)) []byte {
		c := append([]byte(nil), b...)
		f(c)
		return c
	}
	ipv4Len := func(n uint16) func([]byte) {
		return func(b []byte) { b[16], b[17] = byte(n>>8), byte(n) }
	}
	vlanShort := []byte{2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0x00}
	l2 := map[Stat]uint64{StatDropMalformedL2: 1}
	l3 := map[Stat]uint64{StatDropMalformedL3: 1}
	l4 := map[Stat]uint64{StatDropMalformedL4: 1}
	cases := []struct {
		name  string
		in    []byte
		stats map[Stat]uint64
	}{
		{"vlan tag cut short", vlanShort, l2},
		{"ipv4 header cut short", good4[:14+12], l3},
		{"ipv6 header cut short", good6[:14+30], l3},
		{"ipv4 ihl 4", mut(good4, func(b []byte) { b[14] = 0x44 }), l3},
		{"ipv4 version 6 in ipv4 ethertype", mut(good4, func(b []byte) { b[14] = 0x65 }), l3},
		{"ipv4 total length beyond frame", mut(good4, ipv4Len(uint16(len(good4)-14+1))), l3},
		{"ipv4 total length below header", mut(good4, ipv4Len(19)), l3},
		{"ipv4 ihl beyond frame", mut(good4[:14+20], func(b []byte) { b[14] = 0x4f; b[16], b[17] = 0, 20 }), l3},
		{"ipv6 payload length beyond frame", mut(good6, func(b []byte) { b[18], b[19] = 0x05, 0xdc }), l3},
		{"ipv6 payload length zero", mut(good6, func(b []byte) { b[18], b[19] = 0, 0 }), l3},
		{"tcp header beyond ip length", mut(good4, ipv4Len(20+10)), l4},
		{"tcp data offset below 5", mut(good4, func(b []byte) { b[14+20+12] = 0x40 }), l4},
		{"tcp data offset beyond packet", mut(good4, func(b []byte) { b[14+20+12] = 0xf0 }), l4},
		{"udp length beyond ip length", mut(goodUDP, func(b []byte) { b[14+20+4], b[14+20+5] = 0, 200 }), l4},
		{"udp length below header", mut(goodUDP, func(b []byte) { b[14+20+4], b[14+20+5] = 0, 7 }), l4},
		{"icmp header cut short", ipv4Raw(t, "198.51.100.1", "10.10.0.1", 1, []byte{8, 0, 0}), l4},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { l.run(t, c.in, ActionDrop, nil, c.stats) })
	}
}

// ipv4Raw builds an IPv4 frame with an arbitrary protocol and payload.
func ipv4Raw(t testing.TB, src, dst string, proto uint8, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocol(proto),
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeIPv4}, ip, gopacket.Payload(payload))
}

func icmp4(t testing.TB, src, dst string, typ, code uint8, payload []byte) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 99, Protocol: layers.IPProtocolICMPv4,
		SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: 0x1234, Seq: 7}
	return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeIPv4}, ip, ic, gopacket.Payload(payload))
}

// quoted is the start of a packet the VIP sent to a client, as an ICMP
// error quotes it: IP header plus the first 8 bytes of TCP/UDP.
func quoted(t testing.TB, vip, client string, vport, cport uint16, proto lb.Proto) []byte {
	src, dst := netip.MustParseAddr(vip), netip.MustParseAddr(client)
	l4 := make([]byte, 8)
	l4[0], l4[1] = byte(vport>>8), byte(vport)
	l4[2], l4[3] = byte(cport>>8), byte(cport)
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocol(proto), Length: 1500,
			SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
		return packettest.Serialize(t, true, ip, gopacket.Payload(l4))
	}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocol(proto), Length: 1460,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	return packettest.Serialize(t, true, ip, gopacket.Payload(l4))
}

// fragNeeded is a router's ICMP "fragmentation needed" about a VIP's reply.
func fragNeeded(t testing.TB, vip, client string, vport, cport uint16, proto lb.Proto) []byte {
	q := quoted(t, vip, client, vport, cport, proto)
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4,
		SrcIP: []byte{192, 0, 2, 1}, DstIP: netip.MustParseAddr(vip).AsSlice()}
	ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeDestinationUnreachable, layers.ICMPv4CodeFragmentationNeeded), Seq: 1400}
	return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeIPv4}, ip, ic, gopacket.Payload(q))
}

// packetTooBig is a router's ICMPv6 "packet too big" about a VIP's reply.
func packetTooBig(t testing.TB, vip, client string, vport, cport uint16, proto lb.Proto) []byte {
	q := quoted(t, vip, client, vport, cport, proto)
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: netip.MustParseAddr("2001:db8:ffff::1").AsSlice(), DstIP: netip.MustParseAddr(vip).AsSlice()}
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	if err := ic.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	mtu := []byte{0, 0, 0x05, 0x00}
	return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: layers.EthernetTypeIPv6}, ip, ic, gopacket.Payload(append(mtu, q...)))
}

// TestICMP: echo requests to a VIP address are answered; too-big errors
// quoting a VIP flow go to that flow's real.
func TestICMP(t *testing.T) {
	l := newTestLB(t)

	t.Run("echo request v4", func(t *testing.T) {
		in := icmp4(t, "198.51.100.1", "10.10.0.1", layers.ICMPv4TypeEchoRequest, 0, []byte("ping payload"))
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 99, Protocol: layers.IPProtocolICMPv4,
			SrcIP: []byte{10, 10, 0, 1}, DstIP: []byte{198, 51, 100, 1}}
		ic := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoReply, 0), Id: 0x1234, Seq: 7}
		want := packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.LBMAC, DstMAC: packettest.ClientMAC, EthernetType: layers.EthernetTypeIPv4}, ip, ic, gopacket.Payload("ping payload"))
		l.run(t, in, ActionTX, want, map[Stat]uint64{StatICMPEchoReply: 1})
	})
	t.Run("echo request v6", func(t *testing.T) {
		mk := func(src, dst string, typ uint8, smac, dmac []byte, hop uint8) []byte {
			ip := &layers.IPv6{Version: 6, HopLimit: hop, NextHeader: layers.IPProtocolICMPv6,
				SrcIP: netip.MustParseAddr(src).AsSlice(), DstIP: netip.MustParseAddr(dst).AsSlice()}
			ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(typ, 0)}
			if err := ic.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			echo := &layers.ICMPv6Echo{Identifier: 0x4242, SeqNumber: 3}
			return packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: smac, DstMAC: dmac, EthernetType: layers.EthernetTypeIPv6}, ip, ic, echo, gopacket.Payload("ping6"))
		}
		in := mk("2001:db8:1::1", "2001:db8::10", layers.ICMPv6TypeEchoRequest, packettest.ClientMAC, packettest.LBMAC, 50)
		want := mk("2001:db8::10", "2001:db8:1::1", layers.ICMPv6TypeEchoReply, packettest.LBMAC, packettest.ClientMAC, 64)
		l.run(t, in, ActionTX, want, map[Stat]uint64{StatICMPEchoReply: 1})
	})

	for _, fam := range []struct {
		name   string
		vip    lb.VIPKey
		client string
		build  func(testing.TB, string, string, uint16, uint16, lb.Proto) []byte
	}{
		{"frag-needed v4", vipTCP, "198.51.100.20", fragNeeded},
		{"packet-too-big v6", vip6, "2001:db8:1::20", packetTooBig},
	} {
		t.Run(fam.name, func(t *testing.T) {
			// Open a flow, then move the ring: the ICMP error must follow
			// the flow's real from the table, not the new ring.
			flow := pkt{src: fam.client, dst: fam.vip.Addr.String(), sport: 50000, dport: 80, proto: lb.TCP}
			k := flow.flowKey()
			l.openOn(t, 0, flow)
			f, err := l.LookupFlow(k)
			if err != nil {
				t.Fatal(err)
			}
			flowReal, _ := l.RealAddr(f.Real)
			other := otherRing(t, l, fam.vip, f.Real)
			l.setRing(t, fam.vip, other)

			in := fam.build(t, fam.vip.Addr.String(), fam.client, 80, 50000, lb.TCP)
			want := l.expectEncap(t, in, fam.vip, k, flowReal)
			l.run(t, in, ActionTX, want, map[Stat]uint64{StatTX: 1, StatICMPTooBig: 1})

			// Without a table entry, the error follows the ring as a new flow would.
			if _, err := l.DeleteFlows(func(f Flow) bool { return f.Key == k }); err != nil {
				t.Fatal(err)
			}
			want = l.expectEncap(t, in, fam.vip, k, l.ringReal(t, fam.vip, k))
			l.run(t, in, ActionTX, want, map[Stat]uint64{StatTX: 1, StatICMPTooBig: 1})
			if _, err := l.LookupFlow(k); err == nil {
				t.Error("an ICMP error created a connection table entry")
			}
		})
	}
}

// otherRing returns a ring for vip in which no slot holds not.
func otherRing(t *testing.T, l *testLB, vip lb.VIPKey, not RealID) []RealID {
	t.Helper()
	var ids []RealID
	seen := map[RealID]bool{}
	for _, slot := range l.rings[vip] {
		if id := RealID(slot); id != not && !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	ring := make([]RealID, testRingSize)
	for i := range ring {
		ring[i] = ids[i%len(ids)]
	}
	return ring
}

// TestNoGatewayMAC: without a gateway MAC the encapsulated frame goes back
// to the client frame's source MAC, from the LB's own MAC (the frame's
// destination), untagged and VLAN-tagged alike.
func TestNoGatewayMAC(t *testing.T) {
	l := newTestLB(t)
	cfg := l.cfg
	cfg.GatewayMAC = nil
	if err := l.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	for _, p := range []pkt{
		{src: "198.51.100.90", dst: "10.10.0.1", sport: 40900, dport: 80, proto: lb.TCP, flags: "S"},
		{src: "198.51.100.91", dst: "10.10.0.1", sport: 40901, dport: 80, proto: lb.TCP, flags: "S", vlan: true},
	} {
		in := p.frame(t)
		want := l.expectEncap(t, in, vipTCP, p.flowKey(), l.ringReal(t, vipTCP, p.flowKey()))
		copy(want[0:6], packettest.ClientMAC)
		l.run(t, in, ActionTX, want, txNew)
	}
}

// Simulate runs a frame through the program on CPU 0, as one receive
// queue's packets are handled by one CPU: a test's flow then stays in one
// CPU's connection table, and the counters do not depend on where the Go
// scheduler ran the test (TestFlowMovesBetweenCPUs moves flows on purpose).
func (l *testLB) Simulate(frame []byte) (Action, []byte, error) {
	return simulateOn(l.Balancer, 0, frame)
}

// simulateOn runs a frame through the program on the given CPU.
func simulateOn(b *Balancer, cpu int, frame []byte) (Action, []byte, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		return 0, nil, err
	}
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return 0, nil, fmt.Errorf("run on CPU %d: %w", cpu, err)
	}
	defer unix.SchedSetaffinity(0, &old)
	return b.Simulate(frame)
}

// pinToOneCPU keeps the test (its goroutine and thread) on the last CPU,
// as an XDP receive queue is served by one CPU: per-CPU counters and the
// CPU's connection table stay the same instead of moving with the Go
// scheduler (frames sent into a veth are balanced on the sender's CPU).
func pinToOneCPU(t *testing.T) {
	t.Helper()
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		t.Fatal(err)
	}
	set.Set(runtime.NumCPU() - 1)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		t.Fatalf("pin to CPU %d: %v", runtime.NumCPU()-1, err)
	}
	t.Cleanup(func() {
		unix.SchedSetaffinity(0, &old)
		runtime.UnlockOSThread()
	})
}
