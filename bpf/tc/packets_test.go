package tc

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/internal/packettest"
)

// The fixtures' packets, built on internal/packettest: inputs and
// expected outputs are built field by field, independently of the C code.

// clientPacket is an IP packet (no L2) from a client to a VIP: UDP with a
// payload, or a TCP SYN when tcp is set.
func clientPacket(t testing.TB, src, dst string, sport, dport uint16, tcp bool, payload string) []byte {
	t.Helper()
	p := packettest.Packet{Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), SPort: sport, DPort: dport,
		Proto: layers.IPProtocolUDP, Payload: []byte(payload)}
	if tcp {
		p.Proto, p.Flags = layers.IPProtocolTCP, "S"
	}
	return p.IP(t)
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

// encapFrame is the frame the balancer sends to a real for the inner IP packet.
func encapFrame(t testing.TB, inner []byte, tun tunnel) []byte {
	t.Helper()
	return packettest.Tunnel{Src: netip.MustParseAddr(tun.src), Dst: netip.MustParseAddr(tun.dst),
		GUE: tun.gue, SPort: tun.sport, DPort: tun.port, TOS: tun.tos, FlowLabel: tun.flow,
		SrcMAC: packettest.LBMAC, DstMAC: packettest.RealMAC}.Frame(t, inner)
}

// decapsulated is what the real's stack must get for an encapsulated
// frame carrying inner: the frame's MACs, the inner family's EtherType,
// the inner packet byte for byte.
func decapsulated(encap, inner []byte) []byte {
	out := append([]byte(nil), encap[:12]...)
	out = binary.BigEndian.AppendUint16(out, uint16(packettest.IPEtherType(inner)))
	return append(out, inner...)
}

// mut returns a copy of b changed by f.
func mut(b []byte, f func([]byte)) []byte {
	c := append([]byte(nil), b...)
	f(c)
	return c
}
