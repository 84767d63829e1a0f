package xdp

import (
	"net/netip"
	"testing"

	"github.com/lbd-dev/lbd/lb"
)

// collidingAddr finds a non-VIP IPv4 address whose vip_filter bit is the
// same as vip's: a false positive of the filter.
func collidingAddr(t *testing.T, vip netip.Addr) netip.Addr {
	t.Helper()
	want := filterBit(vip)
	for i := uint32(1); i < 1<<24; i++ {
		a := netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})
		if i > 0xffff {
			a = netip.AddrFrom4([4]byte{10, byte(201 + i>>16), byte(i >> 8), byte(i)})
		}
		if filterBit(a) == want {
			return a
		}
	}
	t.Fatal("no colliding address found")
	return netip.Addr{}
}

// TestFilterFalsePositive: traffic to an address that shares a VIP's
// filter bit but is no VIP's goes to the stack untouched, whatever it is
// (TCP, UDP, fragment, ICMP, other protocol, truncated L4): vip_addrs, not
// the filter, decides. That VIP traffic works at all shows the C and Go
// filter functions agree (a wrong bit would pass every VIP packet).
func TestFilterFalsePositive(t *testing.T) {
	l := newTestLB(t)
	other := collidingAddr(t, vipTCP.Addr).String()
	if filterBit(netip.MustParseAddr(other)) != filterBit(vipTCP.Addr) {
		t.Fatal("collision search is wrong")
	}
	syn := pkt{src: "198.51.100.1", dst: other, sport: 999, dport: 80, proto: lb.TCP, flags: "S"}.frame(t)
	ack := pkt{src: "198.51.100.1", dst: other, sport: 999, dport: 80, proto: lb.TCP, flags: "A"}.frame(t)
	udp := pkt{src: "198.51.100.1", dst: other, sport: 999, dport: 53, proto: lb.UDP, payload: []byte("x")}.frame(t)
	truncated := append([]byte(nil), syn[:14+20+8]...)
	truncated[14+3] = 28 // IP total length matches: the TCP header is cut short
	for name, in := range map[string][]byte{
		"tcp syn":       syn,
		"tcp ack":       ack,
		"udp":           udp,
		"icmp echo":     icmp4(t, "198.51.100.1", other, 8, 0, []byte("ping")),
		"gre":           ipv4Raw(t, "198.51.100.1", other, 47, make([]byte, 8)),
		"truncated tcp": truncated,
	} {
		t.Run(name, func(t *testing.T) {
			l.run(t, in, ActionPass, nil, map[Stat]uint64{StatPassNonVIP: 1})
		})
	}
}
