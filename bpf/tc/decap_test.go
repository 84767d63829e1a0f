package tc

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/internal/cenumtest"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
)

// The VIPs the test real serves.
var testVIPs = []string{"10.10.0.1", "10.10.0.2", "2001:db8::10", "2001:db8::20"}

func newTestDecap(t testing.TB) *Decap {
	t.Helper()
	privtest.Require(t)
	d, err := LoadDecap(Options{MaxVIPs: 16, GUEPort: DefaultGUEPort})
	privtest.CheckNotSupported(t, "load decap", err)
	t.Cleanup(func() { d.Close() })
	var vips []netip.Addr
	for _, v := range testVIPs {
		vips = append(vips, netip.MustParseAddr(v))
	}
	if err := d.SetVIPs(vips); err != nil {
		t.Fatal(err)
	}
	return d
}

// run sends one frame through the program and checks the verdict, the
// output frame (nil: unchanged) and the exact change of every counter.
func run(t *testing.T, d *Decap, in []byte, want Verdict, wantOut []byte, wantStats map[Stat]uint64) {
	t.Helper()
	counters := func() ([]uint64, error) { s, err := d.Stats(); return s[:], err }
	packettest.ExpectRun(t, counters, func() (Verdict, []byte, error) { return d.Simulate(in) }, in, want, wantOut, wantStats)
}

func one(s Stat) map[Stat]uint64 { return map[Stat]uint64{s: 1} }

var (
	in4  = tunnel{src: "172.16.3.7", dst: "10.0.1.1"}
	in6  = tunnel{src: "100::3:7", dst: "fd00::1:1", flow: 0x12345}
	gue4 = tunnel{src: "192.0.2.100", dst: "10.0.1.1", gue: true, port: DefaultGUEPort, sport: 0xc123}
	gue6 = tunnel{src: "2001:db8:ffff::100", dst: "fd00::1:1", gue: true, port: DefaultGUEPort, sport: 0xc456, flow: 0xabcde}
)

// TestDecapFixtures: every tunnel kind and family combination, the exact
// inner packet out.
func TestDecapFixtures(t *testing.T) {
	d := newTestDecap(t)
	udp4 := clientPacket(t, "198.51.100.1", "10.10.0.1", 5353, 53, false, "query")
	tcp4 := clientPacket(t, "198.51.100.1", "10.10.0.2", 31337, 443, true, "")
	udp6 := clientPacket(t, "2001:db8:1::1", "2001:db8::10", 9999, 443, false, "quic payload")
	tcp6 := clientPacket(t, "2001:db8:1::1", "2001:db8::20", 31337, 80, true, "")
	tos4 := in4
	tos4.tos = 0xb8
	cases := []struct {
		name  string
		inner []byte
		tun   tunnel
		stat  Stat
	}{
		{"ipv4 in ipv4 udp", udp4, in4, StatIPIP4in4},
		{"ipv4 in ipv4 tcp syn", tcp4, in4, StatIPIP4in4},
		{"ipv4 in ipv4 with tos", tcp4, tos4, StatIPIP4in4},
		{"ipv6 in ipv4", tcp6, in4, StatIPIP6in4},
		{"ipv4 in ipv6", tcp4, in6, StatIPIP4in6},
		{"ipv6 in ipv6", udp6, in6, StatIPIP6in6},
		{"gue ipv4 in ipv4", udp4, gue4, StatGUE4in4},
		{"gue ipv6 in ipv4", udp6, gue4, StatGUE6in4},
		{"gue ipv4 in ipv6", udp4, gue6, StatGUE4in6},
		{"gue ipv6 in ipv6", tcp6, gue6, StatGUE6in6},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := encapFrame(t, c.inner, c.tun)
			run(t, d, in, VerdictOK, decapsulated(in, c.inner), one(c.stat))
		})
	}
}

// TestDecapPasses: what is not a tunnel packet for one of our VIPs goes on
// untouched, counted.
func TestDecapPasses(t *testing.T) {
	d := newTestDecap(t)
	other4 := clientPacket(t, "198.51.100.1", "10.10.0.99", 5353, 53, false, "query")
	other6 := clientPacket(t, "2001:db8:1::1", "2001:db8::99", 5353, 53, false, "query")
	vip4 := clientPacket(t, "198.51.100.1", "10.10.0.1", 5353, 53, false, "query")
	plain := func(ip []byte) []byte {
		return packettest.Serialize(t, true, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.RealMAC, EthernetType: packettest.IPEtherType(ip)}, gopacket.Payload(ip))
	}
	arp := packettest.Serialize(t, false, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.RealMAC, EthernetType: layers.EthernetTypeARP},
		&layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
			Operation: layers.ARPRequest, SourceHwAddress: packettest.ClientMAC, SourceProtAddress: []byte{10, 0, 1, 9},
			DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 0, 1, 1}})
	otherPort := gue4
	otherPort.port = 6081
	// GUE variant 0: a GUE header (version bits 00) before the inner packet.
	variant0 := encapFrame(t, append([]byte{0x00, 0x04, 0, 0}, vip4...), gue4)
	frag := mut(encapFrame(t, vip4, in4), func(b []byte) { b[14+6] = 0x20; packettest.FixIPv4Checksum(b, 14) })
	cases := []struct {
		name string
		in   []byte
		stat Stat
	}{
		{"ipip v4 to another address", encapFrame(t, other4, in4), StatPassNotVIP},
		{"ipip v6 to another address", encapFrame(t, other6, in6), StatPassNotVIP},
		{"gue v4 to another address", encapFrame(t, other4, gue4), StatPassNotVIP},
		{"gue v6 to another address", encapFrame(t, other6, gue6), StatPassNotVIP},
		{"plain udp to a vip", plain(vip4), StatPassNotTunnel},
		{"plain ipv6 to a vip", plain(clientPacket(t, "2001:db8:1::1", "2001:db8::10", 1, 2, true, "")), StatPassNotTunnel},
		{"arp", arp, StatPassNotTunnel},
		{"udp to another port", encapFrame(t, vip4, otherPort), StatPassNotTunnel},
		{"gue variant 0", variant0, StatPassNotTunnel},
		{"outer fragment", frag, StatPassFragment},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, d, c.in, VerdictNext, nil, one(c.stat)) })
	}

	t.Run("gue off", func(t *testing.T) {
		if err := d.SetGUEPort(0); err != nil {
			t.Fatal(err)
		}
		defer d.SetGUEPort(DefaultGUEPort)
		run(t, d, encapFrame(t, vip4, gue4), VerdictNext, nil, one(StatPassNotTunnel))
	})
	t.Run("vip removed", func(t *testing.T) {
		a := netip.MustParseAddr("10.10.0.1")
		if err := d.RemoveVIP(a); err != nil {
			t.Fatal(err)
		}
		defer d.AddVIP(a)
		run(t, d, encapFrame(t, vip4, in4), VerdictNext, nil, one(StatPassNotVIP))
	})
}

// TestDecapMalformed: tunnel packets for a VIP whose lengths do not agree
// or whose inner header is cut are dropped, counted.
func TestDecapMalformed(t *testing.T) {
	d := newTestDecap(t)
	vip4 := clientPacket(t, "198.51.100.1", "10.10.0.1", 5353, 53, false, "query")
	vip6 := clientPacket(t, "2001:db8:1::1", "2001:db8::10", 5353, 53, false, "query")
	ipip4 := encapFrame(t, vip4, in4)
	ipip6 := encapFrame(t, vip6, in6)
	g4 := encapFrame(t, vip4, gue4)
	// outerLen sets the outer IPv4 total length (and fixes the checksum).
	outerLen := func(n int) func([]byte) {
		return func(b []byte) { b[16], b[17] = byte(n>>8), byte(n); packettest.FixIPv4Checksum(b, 14) }
	}
	cases := []struct {
		name string
		in   []byte
	}{
		{"inner ipv4 header cut", mut(ipip4[:14+20+12], outerLen(32))},
		{"inner ipv6 header cut", mut(ipip6[:14+40+30], func(b []byte) { b[18], b[19] = 0, 30 })},
		{"outer length beyond frame", mut(ipip4, outerLen(len(ipip4)-14+1))},
		{"outer length shorter than inner", mut(ipip4, outerLen(len(ipip4)-14-1))},
		{"inner ipv4 length longer than outer says", mut(ipip4, func(b []byte) { b[14+20+3]++ })},
		{"inner ipv4 ihl 4", mut(ipip4, func(b []byte) { b[14+20] = 0x44 })},
		{"inner ipv6 length longer than outer says", mut(ipip6, func(b []byte) { b[14+40+5]++ })},
		{"outer ipv6 length beyond frame", mut(ipip6, func(b []byte) { b[19]++ })},
		{"gue udp length wrong", mut(g4, func(b []byte) { b[14+20+5]-- })},
		{"gue inner length wrong", mut(g4, func(b []byte) { b[14+28+3]-- })},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { run(t, d, c.in, VerdictShot, nil, one(StatDropMalformed)) })
	}
}

func TestVIPSet(t *testing.T) {
	d := newTestDecap(t)
	got, err := d.VIPs()
	if err != nil {
		t.Fatal(err)
	}
	var want []netip.Addr
	for _, v := range testVIPs {
		want = append(want, netip.MustParseAddr(v))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("VIPs() = %v, want %v", got, want)
	}
	next := []netip.Addr{netip.MustParseAddr("10.10.0.2"), netip.MustParseAddr("10.10.0.77")}
	if err := d.SetVIPs(next); err != nil {
		t.Fatal(err)
	}
	if got, _ = d.VIPs(); !slices.Equal(got, next) {
		t.Fatalf("after SetVIPs: %v, want %v", got, next)
	}
	if err := d.RemoveVIP(netip.MustParseAddr("10.10.0.1")); err == nil {
		t.Error("removing an absent VIP succeeded")
	}
	if err := d.AddVIP(netip.Addr{}); err == nil {
		t.Error("adding the zero address succeeded")
	}
}

// TestStatNamesMatchHeader keeps the Go counter list in the order of enum
// lbd_decap_stat, which the program indexes by.
func TestStatNamesMatchHeader(t *testing.T) {
	cenumtest.CheckSequence(t, "../include/lbd_decap.h", "lbd_decap_stat", "LBD_DECAP_", cenumtest.Stringers(NumStats), "LBD_DECAP_STAT_MAX")
	if n := len(decapDecapCounters{}.Counters); n != int(NumStats) {
		t.Errorf("generated decap_counters has %d counters, want %d", n, NumStats)
	}
}
