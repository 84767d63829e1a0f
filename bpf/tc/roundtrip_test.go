package tc

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

// TestRoundTrip: a client packet goes through the XDP balancer (the real
// program, BPF_PROG_TEST_RUN) and its output through the decapsulation
// program; what comes out is the client's IP packet byte for byte, behind
// the balancer's MACs (with the Ethernet padding of a short client frame,
// which travels along). Every kind the balancer emits is covered.
func TestRoundTrip(t *testing.T) {
	d := newTestDecap(t)
	bal, err := xdp.Load(xdp.Limits{MaxVIPs: 16, MaxReals: 64, MaxFlows: 1024})
	privtest.CheckNotSupported(t, "load balancer", err)
	t.Cleanup(func() { bal.Close() })
	cfg := xdp.DefaultConfig()
	cfg.GatewayMAC = packettest.RealMAC
	cfg.GUESourceV4 = netip.MustParseAddr("192.0.2.100")
	cfg.GUESourceV6 = netip.MustParseAddr("2001:db8:ffff::100")
	if err := bal.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	// One VIP per kind, each with a ring of one real.
	cases := []struct {
		name  string
		vip   lb.VIPKey
		flags lb.VIPFlags
		real  string
		src   string
		stat  Stat
	}{
		{"ipip 4in4", lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 53, Proto: lb.UDP}, 0, "10.0.1.1", "198.51.100.1", StatIPIP4in4},
		{"ipip 6in4", lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::10"), Port: 80, Proto: lb.TCP}, 0, "10.0.1.1", "2001:db8:1::1", StatIPIP6in4},
		{"ipip 4in6", lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.2"), Port: 80, Proto: lb.TCP}, 0, "fd00::1:1", "198.51.100.1", StatIPIP4in6},
		{"ipip 6in6", lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::20"), Port: 443, Proto: lb.UDP}, 0, "fd00::1:1", "2001:db8:1::1", StatIPIP6in6},
		{"gue 4in4", lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.1"), Port: 443, Proto: lb.UDP}, lb.VIPGUE, "10.0.1.1", "198.51.100.1", StatGUE4in4},
		{"gue 6in4", lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::10"), Port: 443, Proto: lb.UDP}, lb.VIPGUE, "10.0.1.1", "2001:db8:1::1", StatGUE6in4},
		{"gue 4in6", lb.VIPKey{Addr: netip.MustParseAddr("10.10.0.2"), Port: 443, Proto: lb.TCP}, lb.VIPGUE, "fd00::1:1", "198.51.100.1", StatGUE4in6},
		{"gue 6in6", lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::20"), Port: 80, Proto: lb.TCP}, lb.VIPGUE, "fd00::1:1", "2001:db8:1::1", StatGUE6in6},
	}
	for _, c := range cases {
		if err := bal.AddVIP(c.vip, c.flags); err != nil {
			t.Fatal(err)
		}
		id, err := bal.AddReal(netip.MustParseAddr(c.real))
		if err != nil {
			t.Fatal(err)
		}
		ring := make([]uint32, 13)
		for i := range ring {
			ring[i] = uint32(id)
		}
		if err := bal.SetRing(c.vip, ring); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			inner := clientPacket(t, c.src, c.vip.Addr.String(), 40000, c.vip.Port, c.vip.Proto == lb.TCP, "round trip")
			client := packettest.Serialize(t, true, &layers.Ethernet{SrcMAC: packettest.ClientMAC, DstMAC: packettest.LBMAC, EthernetType: packettest.IPEtherType(inner)}, gopacket.Payload(inner))
			act, encap, err := bal.Simulate(client)
			if err != nil {
				t.Fatal(err)
			}
			if act != xdp.ActionTX {
				t.Fatalf("balancer: %v, want XDP_TX", act)
			}
			if !bytes.Equal(encap[:6], packettest.RealMAC) {
				t.Fatalf("balancer sent to %x, want the real's MAC", encap[:6])
			}
			// The client frame's Ethernet padding travels behind the inner
			// packet, as on the wire; the stack trims it by the IP length.
			run(t, d, encap, VerdictOK, decapsulated(encap, client[14:]), one(c.stat))
		})
	}
}
