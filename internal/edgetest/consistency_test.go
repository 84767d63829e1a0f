package edgetest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/internal/packettest"
	"github.com/lbd-dev/lbd/internal/privtest"
	"github.com/lbd-dev/lbd/lb"
)

type nopSaver struct{}

func (nopSaver) Save(map[lb.VIPKey]*control.VIP) error { return nil }

// The router in front of the nodes: their gateway.
var routerMAC = packettest.GatewayMAC

// node is one lbd node: its own datapath (loaded without pins) and its
// own controller.
type node struct {
	b   *xdp.Balancer
	ctl *control.Controller
}

func newNode(t *testing.T) *node {
	t.Helper()
	privtest.Require(t)
	b, err := xdp.Open(xdp.Options{Limits: xdp.Limits{MaxVIPs: 16, MaxReals: 64, MaxFlows: 1 << 14}})
	privtest.CheckNotSupported(t, "load balancer", err)
	t.Cleanup(func() { b.Close() })
	cfg := xdp.DefaultConfig()
	cfg.GatewayMAC = routerMAC
	if err := b.SetConfig(cfg); err != nil {
		t.Fatal(err)
	}
	return &node{b: b, ctl: control.New(b, nopSaver{}, nil, nil)}
}

func reals(weights map[string]uint32) []control.Real {
	var out []control.Real
	for a, w := range weights {
		out = append(out, control.Real{Addr: netip.MustParseAddr(a), Weight: w, State: lb.RealActive})
	}
	return out
}

var (
	web    = lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	dns    = lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 53, Proto: lb.UDP}
	sticky = lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.2"), Port: 443, Proto: lb.TCP}
	web6   = lb.VIPKey{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443, Proto: lb.TCP}

	webReals    = map[string]uint32{"10.0.0.1": 1, "10.0.0.2": 2, "10.0.0.3": 1, "10.0.0.4": 3, "10.0.0.5": 1}
	dnsReals    = map[string]uint32{"10.0.0.3": 1, "10.0.0.6": 1, "10.0.0.7": 1}
	stickyReals = map[string]uint32{"10.0.0.1": 1, "10.0.0.8": 1, "10.0.0.9": 1}
	web6Reals   = map[string]uint32{"2001:db8:1::1": 1, "2001:db8:1::2": 1, "2001:db8:1::3": 2}
)

// configureInOrder gives node a the VIPs in one order, reals all at once.
func configureInOrder(t *testing.T, n *node) {
	t.Helper()
	for _, v := range []control.VIP{
		{Key: web, RingSize: 1021, Reals: reals(webReals)},
		{Key: dns, RingSize: 1021, Reals: reals(dnsReals)},
		{Key: sticky, RingSize: 1021, Flags: lb.VIPSticky, Reals: reals(stickyReals)},
		{Key: web6, RingSize: 1021, Reals: reals(web6Reals)},
	} {
		if _, err := n.ctl.CreateVIP(v); err != nil {
			t.Fatal(err)
		}
	}
}

// configureOtherwise reaches the same desired state by another road: a
// decoy VIP defines other reals first (so every real gets another
// datapath index), VIPs come in reverse order, reals one at a time in
// reverse order, one real is added and taken away again.
func configureOtherwise(t *testing.T, n *node) {
	t.Helper()
	decoy := lb.VIPKey{Addr: netip.MustParseAddr("198.51.100.1"), Port: 1, Proto: lb.UDP}
	if _, err := n.ctl.CreateVIP(control.VIP{Key: decoy, RingSize: 1021, Reals: reals(map[string]uint32{"10.9.9.9": 1, "10.0.0.9": 1, "2001:db8:1::3": 1})}); err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		key   lb.VIPKey
		flags lb.VIPFlags
		reals map[string]uint32
	}{{web6, 0, web6Reals}, {sticky, lb.VIPSticky, stickyReals}, {dns, 0, dnsReals}, {web, 0, webReals}} {
		if _, err := n.ctl.CreateVIP(control.VIP{Key: v.key, RingSize: 1021, Flags: v.flags}); err != nil {
			t.Fatal(err)
		}
		rs := reals(v.reals)
		for i := len(rs) - 1; i >= 0; i-- {
			if _, _, err := n.ctl.PutReal(v.key, rs[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	extra := netip.MustParseAddr("10.0.0.99")
	if _, _, err := n.ctl.PutReal(web, control.Real{Addr: extra, Weight: 5, State: lb.RealActive}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctl.DeleteReal(web, extra); err != nil {
		t.Fatal(err)
	}
	if err := n.ctl.DeleteVIP(decoy); err != nil {
		t.Fatal(err)
	}
}

// flow is one client connection to a VIP.
type flow struct {
	vip    lb.VIPKey
	client netip.AddrPort
}

// frame is a packet of the flow: for TCP a SYN, or else data (PSH, ACK).
func (f flow) frame(t *testing.T, syn bool, payload string) []byte {
	t.Helper()
	flags := "PA"
	if syn {
		flags = "S"
	}
	return packettest.Packet{Src: f.client.Addr(), Dst: f.vip.Addr, SPort: f.client.Port(), DPort: f.vip.Port,
		Proto: layers.IPProtocol(f.vip.Proto), Flags: flags, Payload: []byte(payload)}.Frame(t)
}

func randomFlows(r *rand.Rand, vip lb.VIPKey, n int) []flow {
	out := make([]flow, n)
	for i := range out {
		var a netip.Addr
		if vip.Addr.Is6() {
			var b [16]byte
			b[0], b[1] = 0x20, 0x01
			for j := 2; j < 16; j++ {
				b[j] = byte(r.Uint32())
			}
			a = netip.AddrFrom16(b)
		} else {
			a = netip.AddrFrom4([4]byte{198, 18, byte(r.Uint32()), byte(r.Uint32())})
		}
		out[i] = flow{vip: vip, client: netip.AddrPortFrom(a, uint16(1024+r.IntN(64000)))}
	}
	return out
}

// outerDst is the destination of an encapsulated frame's outer header.
func outerDst(frame []byte) netip.Addr {
	p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.NoCopy)
	switch l := p.NetworkLayer().(type) {
	case *layers.IPv4:
		a, _ := netip.AddrFromSlice(l.DstIP)
		return a
	case *layers.IPv6:
		a, _ := netip.AddrFromSlice(l.DstIP)
		return a
	}
	return netip.Addr{}
}

// send runs a frame through a node's datapath.
func (n *node) send(t *testing.T, frame []byte) (xdp.Action, []byte) {
	t.Helper()
	act, out, err := n.b.Simulate(frame)
	if err != nil {
		t.Fatal(err)
	}
	return act, out
}

// TestNodesAgreeOnEveryFlow is the fleet's consistency: two nodes given
// the same VIP configuration, by different sequences of API calls (so
// with different datapath indices for the same reals), turn the same
// client packet into the same encapsulated packet, byte for byte, for new
// flows and for flows that only the other node has seen (the router moved
// an established connection from one node to the other).
func TestNodesAgreeOnEveryFlow(t *testing.T) {
	a, b := newNode(t), newNode(t)
	configureInOrder(t, a)
	configureOtherwise(t, b)
	if ra, rb := a.b.Reals(), b.b.Reals(); ra[netip.MustParseAddr("10.0.0.1")] == rb[netip.MustParseAddr("10.0.0.1")] &&
		ra[netip.MustParseAddr("10.0.0.4")] == rb[netip.MustParseAddr("10.0.0.4")] {
		t.Fatalf("the two nodes gave the reals the same indices (%v, %v): the test would prove less than it says", ra, rb)
	}

	r := rand.New(rand.NewPCG(1, 2))
	want := map[lb.VIPKey]map[string]uint32{web: webReals, dns: dnsReals, sticky: stickyReals, web6: web6Reals}
	for _, vip := range []lb.VIPKey{web, dns, sticky, web6} {
		t.Run(lb.VIPName(vip), func(t *testing.T) {
			flows := randomFlows(r, vip, 400)
			perReal := map[netip.Addr]int{}
			// First packets: half the flows start on node a, half on b;
			// each node's answer must be what the other would have sent.
			for i, f := range flows {
				first, second := a, b
				if i%2 == 1 {
					first, second = b, a
				}
				in := f.frame(t, true, "")
				act1, out1 := first.send(t, in)
				act2, out2 := second.send(t, in)
				if act1 != xdp.ActionTX || act2 != act1 || !bytes.Equal(out1, out2) {
					t.Fatalf("new flow %v: nodes disagree: %v %x vs %v %x", f.client, act1, out1, act2, out2)
				}
				dst := outerDst(out1)
				if _, ok := want[vip][dst.String()]; !ok {
					t.Fatalf("flow %v went to %s, not a real of %s", f.client, dst, lb.VIPName(vip))
				}
				perReal[dst]++
			}
			if len(perReal) != len(want[vip]) {
				t.Errorf("400 flows reached only %d of %d reals: %v", len(perReal), len(want[vip]), perReal)
			}
			// Later packets of flows only node a has seen, sent to b (ECMP
			// moved them), and the other way round.
			for i, f := range flows[:200] {
				only := a
				other := b
				if i%2 == 1 {
					only, other = b, a
				}
				seen := f.frame(t, true, "")
				_, _ = only.send(t, seen) // only this node's table knows the flow
				in := f.frame(t, false, fmt.Sprintf("data %d", i))
				act1, out1 := only.send(t, in)
				act2, out2 := other.send(t, in)
				if act1 != xdp.ActionTX || act2 != act1 || !bytes.Equal(out1, out2) {
					t.Fatalf("established flow %v moved to the other node: %v %x vs %v %x", f.client, act1, out1, act2, out2)
				}
			}
			t.Logf("%s: 400 new flows and 200 moved flows identical on both nodes; flows per real %v", lb.VIPName(vip), perReal)
		})
	}
}
