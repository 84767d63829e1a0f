package xdp

import "testing"

// TestWordsMatchGenerated keeps lb/datapath's map names and address flags,
// written there as literals (it imports nothing of bpf/), equal to what
// bpf2go generated from the C.
func TestWordsMatchGenerated(t *testing.T) {
	for _, m := range []struct{ ours, generated string }{
		{MapVIPs, balancerMapVips},
		{MapVIPInfo, balancerMapVipInfo},
		{MapVIPAddrs, balancerMapVipAddrs},
		{MapVIPFilter, balancerMapVipFilter},
		{MapReals, balancerMapReals},
		{MapRings, balancerMapRings},
		{MapConfig, balancerMapConfig},
	} {
		if m.ours != m.generated {
			t.Errorf("map name %q, the object's is %q", m.ours, m.generated)
		}
	}
	for _, f := range []struct {
		ours      AddrFlags
		generated balancerLbdAddrFlag
	}{
		{AddrPortlessTCP, balancerLbdAddrFlagLBD_ADDR_F_PORTLESS_TCP},
		{AddrPortlessUDP, balancerLbdAddrFlagLBD_ADDR_F_PORTLESS_UDP},
	} {
		if uint32(f.ours) != uint32(f.generated) {
			t.Errorf("address flag %#x, the C enum's is %#x", f.ours, f.generated)
		}
	}
}
