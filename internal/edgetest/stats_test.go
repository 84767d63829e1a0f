package edgetest

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// TestRealCountersAddUpToVIPs: traffic through the real datapath
// (BPF_PROG_TEST_RUN) to two VIPs that share a real, while reals are
// removed, re-added and removed again: every VIP's packets and bytes equal
// the sum of its reals', removed reals included, and each (VIP, real)
// count is exactly what the test saw sent to that real for that VIP. The
// shared real's counters are split per VIP. After a reset, the same holds
// from zero.
func TestRealCountersAddUpToVIPs(t *testing.T) {
	n := newNode(t)
	a := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.1"), Port: 80, Proto: lb.TCP}
	b := lb.VIPKey{Addr: netip.MustParseAddr("192.0.2.2"), Port: 80, Proto: lb.TCP}
	shared, r2, r3, r4 := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	active := func(addrs ...netip.Addr) []control.Real {
		var out []control.Real
		for _, x := range addrs {
			out = append(out, control.Real{Addr: x, Weight: 1, State: lb.RealActive})
		}
		return out
	}
	if _, err := n.ctl.CreateVIP(control.VIP{Key: a, RingSize: 1021, Reals: active(shared, r2, r3)}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctl.CreateVIP(control.VIP{Key: b, RingSize: 1021, Reals: active(shared, r4)}); err != nil {
		t.Fatal(err)
	}

	type pair struct {
		vip  lb.VIPKey
		real netip.Addr
	}
	type count struct{ packets, bytes uint64 }
	want := map[pair]count{}
	rng := rand.New(rand.NewPCG(14, 2))
	flowsA, flowsB := randomFlows(rng, a, 200), randomFlows(rng, b, 200)
	// send runs every flow's SYN then a data packet, and books each
	// forwarded packet to the real it went to.
	send := func(phase string) {
		t.Helper()
		for _, f := range append(append([]flow{}, flowsA...), flowsB...) {
			for _, frame := range [][]byte{f.frame(t, true, ""), f.frame(t, false, "data of "+phase)} {
				act, out := n.send(t, frame)
				if act != xdp.ActionTX {
					t.Fatalf("%s: %v for a packet of %s", phase, act, f.client)
				}
				p := pair{f.vip, outerDst(out)}
				c := want[p]
				c.packets++
				c.bytes += uint64(binary.BigEndian.Uint16(frame[14+2:])) // IPv4 total length (the frame may be padded)
				want[p] = c
			}
		}
	}
	check := func(phase string) {
		t.Helper()
		for _, key := range []lb.VIPKey{a, b} {
			st, err := n.ctl.VIPStats(key)
			if err != nil {
				t.Fatal(err)
			}
			var sum count
			got := map[netip.Addr]control.VIPRealStats{}
			for _, r := range st.Reals {
				sum.packets += r.Packets
				sum.bytes += r.Bytes
				got[r.Addr] = r
			}
			if sum.packets != st.Packets || sum.bytes != st.Bytes {
				t.Errorf("%s: VIP %s counts %d packets %d bytes, its reals %d and %d: %+v", phase, lb.VIPName(key), st.Packets, st.Bytes, sum.packets, sum.bytes, st.Reals)
			}
			for p, c := range want {
				if p.vip != key {
					continue
				}
				r, ok := got[p.real]
				if !ok || r.Packets != c.packets || r.Bytes != c.bytes {
					t.Errorf("%s: VIP %s real %s: counters %+v (listed %v), sent %d packets %d bytes", phase, lb.VIPName(key), p.real, r, ok, c.packets, c.bytes)
				}
				delete(got, p.real)
			}
			for addr, r := range got {
				if r.Packets != 0 || r.Bytes != 0 {
					t.Errorf("%s: VIP %s real %s counts %+v, none sent", phase, lb.VIPName(key), addr, r)
				}
			}
		}
	}

	send("start")
	check("start")
	// the shared real leaves A (B keeps it), and r2 leaves A
	if _, err := n.ctl.SetReals(a, active(r3)); err != nil {
		t.Fatal(err)
	}
	send("after removals")
	check("after removals")
	st, err := n.ctl.RealStats(a, shared)
	if err != nil || !st.Removed || st.Packets == 0 {
		t.Errorf("removed shared real of A: %+v %v, want it listed as removed with its packets", st, err)
	}
	// r2 comes back to A (its count goes on from its removed total), the
	// shared real leaves B too
	if _, _, err := n.ctl.PutReal(a, active(r2)[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := n.ctl.DeleteReal(b, shared); err != nil {
		t.Fatal(err)
	}
	send("after re-adding")
	check("after re-adding")

	if err := n.ctl.ResetStats(a); err != nil {
		t.Fatal(err)
	}
	for p := range want {
		if p.vip == a {
			delete(want, p)
		}
	}
	st2, err := n.ctl.VIPStats(a)
	if err != nil || st2.Packets != 0 || len(st2.Reals) != 2 {
		t.Fatalf("VIP A after reset: %+v %v, want zero and its two current reals only", st2, err)
	}
	send("after reset")
	check("after reset")
}
