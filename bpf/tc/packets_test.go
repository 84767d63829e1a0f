package tc

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Packet builders for the fixtures, on gopacket: inputs and expected
// outputs are built field by field, independently of the C code.

var (
	clientMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	lbMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	realMAC   = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x03}
)

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

// clientPacket is an IP packet (no L2) from a client to a VIP: UDP with a
// payload, or a TCP SYN when tcp is set.
func clientPacket(t testing.TB, src, dst string, sport, dport uint16, tcp bool, payload string) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(src), netip.MustParseAddr(dst)
	var nl gopacket.NetworkLayer
	var ip gopacket.SerializableLayer
	proto := layers.IPProtocolUDP
	if tcp {
		proto = layers.IPProtocolTCP
	}
	if s.Is4() {
		v4 := &layers.IPv4{Version: 4, IHL: 5, TTL: 61, Id: 7, Flags: layers.IPv4DontFragment,
			Protocol: proto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		nl, ip = v4, v4
	} else {
		v6 := &layers.IPv6{Version: 6, HopLimit: 61, NextHeader: proto, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		nl, ip = v6, v6
	}
	if tcp {
		th := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), Seq: 1000, SYN: true, Window: 65535}
		if err := th.SetNetworkLayerForChecksum(nl); err != nil {
			t.Fatal(err)
		}
		return serialize(t, false, ip, th, gopacket.Payload(payload))
	}
	uh := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
	if err := uh.SetNetworkLayerForChecksum(nl); err != nil {
		t.Fatal(err)
	}
	return serialize(t, false, ip, uh, gopacket.Payload(payload))
}

// tunnel describes an outer header as the XDP balancer writes it.
type tunnel struct {
	src, dst string // outer addresses: the family of dst is the outer family
	gue      bool
	port     uint16 // GUE destination port
	sport    uint16 // GUE source port
	tos      uint8
	flow     uint32 // IPv6 flow label
}

func ethType(ip []byte) layers.EthernetType {
	if ip[0]>>4 == 6 {
		return layers.EthernetTypeIPv6
	}
	return layers.EthernetTypeIPv4
}

// encapFrame is the frame the balancer sends to a real for the inner IP packet.
func encapFrame(t testing.TB, inner []byte, tun tunnel) []byte {
	t.Helper()
	s, d := netip.MustParseAddr(tun.src), netip.MustParseAddr(tun.dst)
	next := layers.IPProtocolIPv4
	if inner[0]>>4 == 6 {
		next = layers.IPProtocolIPv6
	}
	payload := inner
	if tun.gue {
		next = layers.IPProtocolUDP
		udp := make([]byte, 8, 8+len(inner))
		binary.BigEndian.PutUint16(udp[0:], tun.sport)
		binary.BigEndian.PutUint16(udp[2:], tun.port)
		binary.BigEndian.PutUint16(udp[4:], uint16(8+len(inner)))
		payload = append(udp, inner...) // checksum 0, as the balancer sends it
	}
	if d.Is4() {
		ip := &layers.IPv4{Version: 4, IHL: 5, TOS: tun.tos, Length: uint16(20 + len(payload)), TTL: 64,
			Protocol: next, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
		return serialize(t, true, &layers.Ethernet{SrcMAC: lbMAC, DstMAC: realMAC, EthernetType: layers.EthernetTypeIPv4},
			ip, gopacket.Payload(payload))
	}
	ip := &layers.IPv6{Version: 6, TrafficClass: tun.tos, FlowLabel: tun.flow, Length: uint16(len(payload)),
		NextHeader: next, HopLimit: 64, SrcIP: s.AsSlice(), DstIP: d.AsSlice()}
	return serialize(t, true, &layers.Ethernet{SrcMAC: lbMAC, DstMAC: realMAC, EthernetType: layers.EthernetTypeIPv6},
		ip, gopacket.Payload(payload))
}

// decapsulated is what the real's stack must get for an encapsulated
// frame carrying inner: the frame's MACs, the inner family's EtherType,
// the inner packet byte for byte.
func decapsulated(encap, inner []byte) []byte {
	out := append([]byte(nil), encap[:12]...)
	out = binary.BigEndian.AppendUint16(out, uint16(ethType(inner)))
	return append(out, inner...)
}

// mut returns a copy of b changed by f.
func mut(b []byte, f func([]byte)) []byte {
	c := append([]byte(nil), b...)
	f(c)
	return c
}

// fixIPv4Checksum recomputes the checksum of the IPv4 header at off.
func fixIPv4Checksum(b []byte, off int) {
	hl := int(b[off]&0xf) * 4
	b[off+10], b[off+11] = 0, 0
	var sum uint32
	for i := 0; i < hl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[off+i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[off+10:], ^uint16(sum))
}
