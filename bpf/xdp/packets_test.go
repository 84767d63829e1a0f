package xdp

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/lb"
)

// Packet builders for the fixtures, on gopacket: the expected packets are
// built independently of the datapath's C code, field by field.

var (
	clientMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	lbMAC      = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	gatewayMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0xfe}
)

const testVLAN = 42

// serialize builds a frame with checksums; lengths are computed unless raw.
func serialize(t testing.TB, raw bool, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: !raw, ComputeChecksums: true}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

// pkt describes a client packet to a VIP.
type pkt struct {
	src, dst     string
	sport, dport uint16
	proto        lb.Proto
	flags        string // TCP flags: "S", "A", "SA", "R", "PA"
	payload      []byte
	vlan         bool
	tos          uint8
	ipOptions    []layers.IPv4Option
}

func (p pkt) l2(t testing.TB, ethType layers.EthernetType) []gopacket.SerializableLayer {
	if p.vlan {
		return []gopacket.SerializableLayer{
			&layers.Ethernet{SrcMAC: clientMAC, DstMAC: lbMAC, EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: testVLAN, Type: ethType},
		}
	}
	return []gopacket.SerializableLayer{&layers.Ethernet{SrcMAC: clientMAC, DstMAC: lbMAC, EthernetType: ethType}}
}

func (p pkt) l4(t testing.TB, nl gopacket.NetworkLayer) []gopacket.SerializableLayer {
	payload := gopacket.Payload(p.payload)
	switch p.proto {
	case lb.TCP:
		tcp := &layers.TCP{SrcPort: layers.TCPPort(p.sport), DstPort: layers.TCPPort(p.dport), Seq: 1000, Window: 65535}
		for _, f := range p.flags {
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
			}
		}
		if err := tcp.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		return []gopacket.SerializableLayer{tcp, payload}
	case lb.UDP:
		udp := &layers.UDP{SrcPort: layers.UDPPort(p.sport), DstPort: layers.UDPPort(p.dport)}
		if err := udp.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		return []gopacket.SerializableLayer{udp, payload}
	}
	t.Fatalf("pkt: protocol %v", p.proto)
	return nil
}

// frame serializes the packet.
func (p pkt) frame(t testing.TB) []byte {
	t.Helper()
	src, dst := netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	ipProto := layers.IPProtocol(p.proto)
	if src.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: p.tos, TTL: 61, Id: 7, Flags: layers.IPv4DontFragment,
			Protocol: ipProto, SrcIP: src.AsSlice(), DstIP: dst.AsSlice(), Options: p.ipOptions}
		ls := append(p.l2(t, layers.EthernetTypeIPv4), ip)
		return serialize(t, false, append(ls, p.l4(t, ip)...)...)
	}
	ip := &layers.IPv6{Version: 6, TrafficClass: p.tos, HopLimit: 61, NextHeader: ipProto,
		SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	ls := append(p.l2(t, layers.EthernetTypeIPv6), ip)
	return serialize(t, false, append(ls, p.l4(t, ip)...)...)
}

func (p pkt) flowKey() FlowKey {
	return FlowKey{
		Client: netip.AddrPortFrom(netip.MustParseAddr(p.src), p.sport),
		Dest:   netip.AddrPortFrom(netip.MustParseAddr(p.dst), p.dport),
		Proto:  p.proto,
	}
}

// l2Len is the length of a frame's Ethernet header (with its VLAN tag).
func l2Len(frame []byte) int {
	if binary.BigEndian.Uint16(frame[12:]) == uint16(layers.EthernetTypeDot1Q) {
		return 18
	}
	return 14
}

// innerLen is the IP length a frame's L3 header states.
func innerLen(frame []byte) int {
	l3 := frame[l2Len(frame):]
	if l3[0]>>4 == 4 {
		return int(binary.BigEndian.Uint16(l3[2:]))
	}
	return 40 + int(binary.BigEndian.Uint16(l3[4:]))
}

// encapExpect describes the encapsulation the datapath must produce.
type encapExpect struct {
	real     netip.Addr
	outerSrc netip.Addr // IP-in-IP: from the flow hash; GUE: the node's address
	hash     uint32
	gue      bool
	guePort  uint16
}

// encapsulated builds the expected output frame for an input frame: the
// L2 header with gateway/LB MACs (VLAN kept), the outer header, then the
// input's IP packet and anything after it, byte for byte.
func encapsulated(t testing.TB, in []byte, e encapExpect) []byte {
	t.Helper()
	l2 := l2Len(in)
	inner := in[l2:]
	ilen := innerLen(in)
	tos := inner[1]
	innerProto := layers.IPProtocolIPv4
	if inner[0]>>4 == 6 {
		innerProto = layers.IPProtocolIPv6
		tos = inner[0]<<4 | inner[1]>>4
	}
	udpLen := 0
	if e.gue {
		udpLen = 8
	}
	ethType := layers.EthernetTypeIPv4
	if e.real.Is6() {
		ethType = layers.EthernetTypeIPv6
	}
	var ls []gopacket.SerializableLayer
	if l2 == 18 {
		ls = append(ls, &layers.Ethernet{SrcMAC: lbMAC, DstMAC: gatewayMAC, EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: testVLAN, Type: ethType})
	} else {
		ls = append(ls, &layers.Ethernet{SrcMAC: lbMAC, DstMAC: gatewayMAC, EthernetType: ethType})
	}
	next := innerProto
	if e.gue {
		next = layers.IPProtocolUDP
	}
	if e.real.Is4() {
		ls = append(ls, &layers.IPv4{Version: 4, IHL: 5, TOS: tos, Length: uint16(20 + udpLen + ilen),
			TTL: 64, Protocol: next, SrcIP: e.outerSrc.AsSlice(), DstIP: e.real.AsSlice()})
	} else {
		ls = append(ls, &layers.IPv6{Version: 6, TrafficClass: tos, FlowLabel: e.hash & 0xfffff,
			Length: uint16(udpLen + ilen), NextHeader: next, HopLimit: 64,
			SrcIP: e.outerSrc.AsSlice(), DstIP: e.real.AsSlice()})
	}
	var payload []byte
	if e.gue {
		payload = make([]byte, 8)
		binary.BigEndian.PutUint16(payload[0:], uint16(0xc000|e.hash&0x3fff))
		binary.BigEndian.PutUint16(payload[2:], e.guePort)
		binary.BigEndian.PutUint16(payload[4:], uint16(8+ilen))
	}
	payload = append(payload, inner...)
	ls = append(ls, gopacket.Payload(payload))
	return serialize(t, true, ls...)
}

// encapSource is the outer source the datapath derives from a flow hash.
func encapSource(p netip.Prefix, hash uint32) netip.Addr {
	base, mask := prefixWords(p)
	var w [4]uint32
	for i := range w {
		w[i] = base[i] | hash&mask[i]
	}
	fam := uint32(familyIPv6)
	if p.Addr().Is4() {
		fam = familyIPv4
	}
	a, _ := wordsAddr(w, fam)
	return a
}
