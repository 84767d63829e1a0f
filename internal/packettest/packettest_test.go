package packettest

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// TestPacketAndTunnel: the frames decode as what was asked, with valid
// checksums, and the tunnel's lengths count the inner packet but not the
// trailer.
func TestPacketAndTunnel(t *testing.T) {
	p := Packet{Src: netip.MustParseAddr("198.51.100.1"), Dst: netip.MustParseAddr("10.10.0.1"),
		SPort: 31337, DPort: 80, Proto: layers.IPProtocolTCP, Flags: "SA", VLAN: 42, Payload: []byte("hi")}
	f := p.Frame(t)
	if L2Len(f) != 18 {
		t.Fatalf("L2Len = %d, want 18 (VLAN tag)", L2Len(f))
	}
	ip := f[18:]
	if Checksum(ip[:20]) != 0 {
		t.Errorf("IPv4 header checksum does not verify")
	}
	if IPLen(ip) != 20+20+2 {
		t.Errorf("IPLen = %d, want 42", IPLen(ip))
	}
	d := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
	tcp, ok := d.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok || !tcp.SYN || !tcp.ACK || tcp.RST || tcp.SrcPort != 31337 || tcp.DstPort != 80 || string(tcp.Payload) != "hi" {
		t.Fatalf("decoded %v", d)
	}
	if eth := d.Layer(layers.LayerTypeEthernet).(*layers.Ethernet); eth.SrcMAC.String() != ClientMAC.String() || eth.DstMAC.String() != LBMAC.String() {
		t.Errorf("MACs %s -> %s", eth.SrcMAC, eth.DstMAC)
	}

	inner := Packet{Src: netip.MustParseAddr("2001:db8:1::1"), Dst: netip.MustParseAddr("2001:db8::10"),
		SPort: 5000, DPort: 443, Proto: layers.IPProtocolUDP, Payload: []byte("quic")}.IP(t)
	tn := Tunnel{Src: netip.MustParseAddr("2001:db8:ffff::100"), Dst: netip.MustParseAddr("fd00::1:1"), GUE: true,
		SPort: 0xc001, DPort: 6080, FlowLabel: 0x12345, SrcMAC: LBMAC, DstMAC: GatewayMAC, Trailer: []byte{0, 0}}
	g := tn.Frame(t, inner)
	if IPLen(g[14:]) != 40+8+len(inner) {
		t.Errorf("outer IPLen = %d, want %d", IPLen(g[14:]), 40+8+len(inner))
	}
	if len(g) != 14+40+8+len(inner)+2 || !slices.Equal(g[len(g)-2-len(inner):len(g)-2], inner) {
		t.Errorf("frame does not end with the inner packet and the trailer: %x", g)
	}
	d = gopacket.NewPacket(g, layers.LayerTypeEthernet, gopacket.Default)
	v6, ok := d.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	if !ok || v6.FlowLabel != 0x12345 || v6.HopLimit != 64 || v6.NextHeader != layers.IPProtocolUDP {
		t.Fatalf("outer header %+v", v6)
	}
	udp := d.Layer(layers.LayerTypeUDP).(*layers.UDP)
	if udp.SrcPort != 0xc001 || udp.DstPort != 6080 || int(udp.Length) != 8+len(inner) || udp.Checksum != 0 {
		t.Errorf("GUE UDP header %+v", udp)
	}
}

type stat int

func (s stat) String() string { return fmt.Sprintf("s%d", int(s)) }

// TestExpectRun: a matching run passes; a wrong result, frame or counter
// is each reported.
func TestExpectRun(t *testing.T) {
	in := []byte{1, 2, 3}
	counts := []uint64{5, 5}
	run := func(res int, out []byte, bump int) func() (int, []byte, error) {
		return func() (int, []byte, error) { counts[bump]++; return res, out, nil }
	}
	read := func() ([]uint64, error) { return slices.Clone(counts), nil }
	for _, c := range []struct {
		name  string
		run   func() (int, []byte, error)
		fails []string
	}{
		{"as expected", run(7, in, 1), nil},
		{"wrong result", run(8, in, 1), []string{"result = 8, want 7"}},
		{"wrong frame", run(7, []byte{1, 2, 4}, 1), []string{"output frame differs"}},
		{"wrong counter", run(7, in, 0), []string{"counter s0 changed by 1, want 0", "counter s1 changed by 0, want 1"}},
	} {
		rec := &recorder{TB: t}
		ExpectRun(rec, read, c.run, in, 7, nil, map[stat]uint64{1: 1})
		if len(rec.errs) != len(c.fails) {
			t.Errorf("%s: errors %q, want %q", c.name, rec.errs, c.fails)
			continue
		}
		for i, f := range c.fails {
			if !strings.Contains(rec.errs[i], f) {
				t.Errorf("%s: error %q, want it to say %q", c.name, rec.errs[i], f)
			}
		}
	}
}

type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
