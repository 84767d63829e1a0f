// Package packettest builds the packets the datapath tests feed in and
// expect out, on gopacket: field by field, independently of the BPF C
// code. The xdp and tc tests share it.
package packettest

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// The MAC addresses of the test frames.
var (
	ClientMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	LBMAC      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	RealMAC    = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x03}
	GatewayMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
)

// Serialize builds a frame from layers with checksums computed; lengths
// are computed too unless raw (raw keeps the lengths the layers state).
func Serialize(t testing.TB, raw bool, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: !raw, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// Packet is a client's packet to a VIP. The IP header has TTL (hop limit)
// 61, and for IPv4 ID 7 and DF; a TCP header has sequence number 1000 and
// window 65535.
type Packet struct {
	Src, Dst     netip.Addr
	SPort, DPort uint16
	Proto        layers.IPProtocol // TCP or UDP
	Flags        string            // TCP flags, any of "SAFRP": "S", "SA", "PA"
	Payload      []byte
	TOS          uint8 // IPv4 TOS or IPv6 traffic class
	IPOptions    []layers.IPv4Option
	VLAN         uint16 // 802.1Q tag of the frame; 0: untagged
	// SrcMAC and DstMAC of the frame; nil: ClientMAC and LBMAC.
	SrcMAC, DstMAC net.HardwareAddr
}

// Frame is the packet in an Ethernet frame (with its VLAN tag, if any).
func (p Packet) Frame(t testing.TB) []byte {
	t.Helper()
	ip := p.network()
	smac, dmac := p.SrcMAC, p.DstMAC
	if smac == nil {
		smac = ClientMAC
	}
	if dmac == nil {
		dmac = LBMAC
	}
	ls := Ethernet(smac, dmac, p.VLAN, EtherType(p.Src))
	ls = append(ls, ip.(gopacket.SerializableLayer))
	return Serialize(t, false, append(ls, p.transport(t, ip)...)...)
}

// IP is the IP packet alone, with no L2 header.
func (p Packet) IP(t testing.TB) []byte {
	t.Helper()
	ip := p.network()
	return Serialize(t, false, append([]gopacket.SerializableLayer{ip.(gopacket.SerializableLayer)}, p.transport(t, ip)...)...)
}

func (p Packet) network() gopacket.NetworkLayer {
	if p.Src.Is4() {
		return &layers.IPv4{Version: 4, IHL: 5, TOS: p.TOS, TTL: 61, Id: 7, Flags: layers.IPv4DontFragment,
			Protocol: p.Proto, SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice(), Options: p.IPOptions}
	}
	return &layers.IPv6{Version: 6, TrafficClass: p.TOS, HopLimit: 61, NextHeader: p.Proto,
		SrcIP: p.Src.AsSlice(), DstIP: p.Dst.AsSlice()}
}

func (p Packet) transport(t testing.TB, nl gopacket.NetworkLayer) []gopacket.SerializableLayer {
	t.Helper()
	payload := gopacket.Payload(p.Payload)
	switch p.Proto {
	case layers.IPProtocolTCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.SPort), DstPort: layers.TCPPort(p.DPort), Seq: 1000, Window: 65535}
		for _, f := range p.Flags {
			switch f {
			case 'S':
				tcp.SYN = true
			case 'A':
				tcp.ACK = true
			case 'R':
				tcp.RST = true
			case 'P':
				tcp.PSH = true
			case 'F':
				tcp.FIN = true
			default:
				t.Fatalf("packettest: TCP flag %q (want any of SAFRP)", f)
			}
		}
		if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		return []gopacket.SerializableLayer{tcp, payload}
	case layers.IPProtocolUDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.SPort), DstPort: layers.UDPPort(p.DPort)}
		if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		return []gopacket.SerializableLayer{udp, payload}
	}
	t.Fatalf("packettest: protocol %v (want TCP or UDP)", p.Proto)
	return nil
}

// Ethernet is an Ethernet header, with an 802.1Q tag unless vlan is 0,
// carrying ethType.
func Ethernet(src, dst net.HardwareAddr, vlan uint16, ethType layers.EthernetType) []gopacket.SerializableLayer {
	if vlan != 0 {
		return []gopacket.SerializableLayer{
			&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: vlan, Type: ethType},
		}
	}
	return []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: src, DstMAC: dst, EthernetType: ethType}}
}

// EtherType is the EtherType of an address's family.
func EtherType(a netip.Addr) layers.EthernetType {
	if a.Is4() {
		return layers.EthernetTypeIPv4
	}
	return layers.EthernetTypeIPv6
}

// IPEtherType is the EtherType of the IP packet ip, by its version.
func IPEtherType(ip []byte) layers.EthernetType {
	if ip[0]>>4 == 6 {
		return layers.EthernetTypeIPv6
	}
	return layers.EthernetTypeIPv4
}

// L2Len is the length of a frame's Ethernet header (with its VLAN tag).
func L2Len(frame []byte) int {
	if binary.BigEndian.Uint16(frame[12:]) == uint16(layers.EthernetTypeDot1Q) {
		return 18
	}
	return 14
}

// IPLen is the length the IP header at the start of ip states.
func IPLen(ip []byte) int {
	if ip[0]>>4 == 4 {
		return int(binary.BigEndian.Uint16(ip[2:]))
	}
	return 40 + int(binary.BigEndian.Uint16(ip[4:]))
}

// Tunnel is an outer header as the XDP balancer writes it: IP-in-IP, or
// GUE (UDP, variant 1: the inner IP packet follows the UDP header) with a
// zero UDP checksum. The outer TTL (hop limit) is 64; IPv4 ID 0, no flags.
type Tunnel struct {
	Src, Dst     netip.Addr // outer addresses; Dst's family is the outer family
	GUE          bool
	SPort, DPort uint16 // GUE's UDP ports
	TOS          uint8  // IPv4 TOS or IPv6 traffic class
	FlowLabel    uint32 // IPv6
	// The frame's MACs and VLAN tag (0: untagged).
	SrcMAC, DstMAC net.HardwareAddr
	VLAN           uint16
	// Trailer follows the inner packet, carried but not counted in the
	// lengths: the padding of a short frame, which the balancer keeps.
	Trailer []byte
}

// Frame is inner encapsulated: the Ethernet header, the outer IP header,
// the UDP header for GUE, then inner byte for byte, then the Trailer.
// The outer protocol (IP-in-IP) is IPv6 when inner starts with version 6,
// else IPv4.
func (tn Tunnel) Frame(t testing.TB, inner []byte) []byte {
	t.Helper()
	ilen := len(inner)
	next := layers.IPProtocolIPv4
	if len(inner) > 0 && inner[0]>>4 == 6 {
		next = layers.IPProtocolIPv6
	}
	var payload []byte
	udpLen := 0
	if tn.GUE {
		next, udpLen = layers.IPProtocolUDP, 8
		payload = make([]byte, 8, 8+len(inner)+len(tn.Trailer))
		binary.BigEndian.PutUint16(payload[0:], tn.SPort)
		binary.BigEndian.PutUint16(payload[2:], tn.DPort)
		binary.BigEndian.PutUint16(payload[4:], uint16(8+ilen))
	}
	payload = append(append(payload, inner...), tn.Trailer...)
	ls := Ethernet(tn.SrcMAC, tn.DstMAC, tn.VLAN, EtherType(tn.Dst))
	if tn.Dst.Is4() {
		ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, TOS: tn.TOS, Length: uint16(20 + udpLen + ilen), TTL: 64,
			Protocol: next, SrcIP: tn.Src.AsSlice(), DstIP: tn.Dst.AsSlice()})
	} else {
		ls = append(ls, &layers.IPv6{Version: 6, TrafficClass: tn.TOS, FlowLabel: tn.FlowLabel,
			Length: uint16(udpLen + ilen), NextHeader: next, HopLimit: 64,
			SrcIP: tn.Src.AsSlice(), DstIP: tn.Dst.AsSlice()})
	}
	return Serialize(t, true, append(ls, gopacket.Payload(payload))...)
}

// Checksum is the Internet checksum of b: 0 over a header whose checksum
// field is right.
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// FixIPv4Checksum recomputes the checksum of the IPv4 header at b[off:].
func FixIPv4Checksum(b []byte, off int) {
	hl := int(b[off]&0xf) * 4
	b[off+10], b[off+11] = 0, 0
	binary.BigEndian.PutUint16(b[off+10:], Checksum(b[off:off+hl]))
}

// ExpectFrame fails t unless got is want byte for byte; the message shows
// both in hex and decoded, so that a mismatch is readable.
func ExpectFrame(t testing.TB, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	t.Errorf("output frame differs\n got: %s\nwant: %s\ngot:\n%swant:\n%s", hex.EncodeToString(got), hex.EncodeToString(want),
		gopacket.NewPacket(got, layers.LayerTypeEthernet, gopacket.Default).Dump(),
		gopacket.NewPacket(want, layers.LayerTypeEthernet, gopacket.Default).Dump())
}

// ExpectCounterDeltas fails t unless every counter i changed from before
// to after by exactly want[i] (0 for a counter want does not name): a
// test names what a packet must count, and that nothing else moved.
func ExpectCounterDeltas[S interface {
	~int
	fmt.Stringer
}](t testing.TB, before, after []uint64, want map[S]uint64) {
	t.Helper()
	for i := range before {
		s := S(i)
		if d := after[i] - before[i]; d != want[s] {
			t.Errorf("counter %s changed by %d, want %d", s, d, want[s])
		}
	}
}

// ExpectRun is one test run of a BPF program on the frame in: run runs
// it, counters reads the program's counters (before and after). It fails
// t unless the run gives want, the output frame is wantOut byte for byte
// (nil: in, unchanged, as a PASS or DROP leaves it) and the counters
// changed as ExpectCounterDeltas wants. It returns the output frame.
func ExpectRun[V comparable, S interface {
	~int
	fmt.Stringer
}](t testing.TB, counters func() ([]uint64, error), run func() (V, []byte, error),
	in []byte, want V, wantOut []byte, wantStats map[S]uint64) []byte {
	t.Helper()
	before, err := counters()
	if err != nil {
		t.Fatal(err)
	}
	got, out, err := run()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("result = %v, want %v", got, want)
	}
	if wantOut == nil {
		wantOut = in
	}
	ExpectFrame(t, out, wantOut)
	after, err := counters()
	if err != nil {
		t.Fatal(err)
	}
	ExpectCounterDeltas(t, before, after, wantStats)
	return out
}
