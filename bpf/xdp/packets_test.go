package xdp

import (
	"net/netip"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/lb"
)

// The fixtures' packets, built on internal/packettest: the expected
// packets are built independently of the datapath's C code, field by field.

const testVLAN = 42

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

// frame serializes the packet.
func (p pkt) frame(t testing.TB) []byte {
	t.Helper()
	var vlan uint16
	if p.vlan {
		vlan = testVLAN
	}
	return packettest.Packet{
		Src: netip.MustParseAddr(p.src), Dst: netip.MustParseAddr(p.dst), SPort: p.sport, DPort: p.dport,
		Proto: layers.IPProtocol(p.proto), Flags: p.flags, Payload: p.payload, TOS: p.tos, IPOptions: p.ipOptions,
		VLAN: vlan,
	}.Frame(t)
}

func (p pkt) flowKey() FlowKey {
	return FlowKey{
		Client: netip.AddrPortFrom(netip.MustParseAddr(p.src), p.sport),
		Dest:   netip.AddrPortFrom(netip.MustParseAddr(p.dst), p.dport),
		Proto:  p.proto,
	}
}

// innerLen is the IP length a frame's L3 header states.
func innerLen(frame []byte) int {
	return packettest.IPLen(frame[packettest.L2Len(frame):])
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
	l2 := packettest.L2Len(in)
	inner := in[l2 : l2+innerLen(in)]
	tos := inner[1]
	if inner[0]>>4 == 6 {
		tos = inner[0]<<4 | inner[1]>>4
	}
	tn := packettest.Tunnel{Src: e.outerSrc, Dst: e.real, TOS: tos, SrcMAC: packettest.LBMAC, DstMAC: packettest.GatewayMAC}
	if e.real.Is6() {
		tn.FlowLabel = e.hash & 0xfffff
	}
	if l2 == 18 {
		tn.VLAN = testVLAN
	}
	if e.gue {
		tn.GUE, tn.SPort, tn.DPort = true, uint16(0xc000|e.hash&0x3fff), e.guePort
	}
	tn.Trailer = in[l2+len(inner):]
	return tn.Frame(t, inner)
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
