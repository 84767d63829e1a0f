// Package hostaddr answers what the daemon needs to know about the host's
// own network: an interface's addresses and the default gateway's MAC.
//
// One address rule serves every caller (the BGP router id and next hops,
// the health-check tunnel's outer sources): an interface's address is its
// first global unicast IPv4 and its first global unicast IPv6 address, in
// the kernel's order. Private IPv4 and ULA IPv6 addresses count (as in
// netip.Addr.IsGlobalUnicast); loopback, link-local, multicast and
// unspecified ones do not.
package hostaddr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// Of returns the first global unicast IPv4 and IPv6 addresses of the
// interface; an address is invalid when the interface has none of that
// family. The error is for an interface or address list that cannot be
// read.
func Of(ifname string) (v4, v6 netip.Addr, err error) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return v4, v6, fmt.Errorf("interface %s: %w", ifname, err)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return v4, v6, fmt.Errorf("addresses of %s: %w", ifname, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !ip.IsGlobalUnicast() {
			continue
		}
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	return v4, v6, nil
}

// The two ways GatewayMAC finds no gateway (errors.Is); the callers add
// how to configure one.
var (
	ErrNoDefaultRoute = errors.New("no default route to take the gateway MAC from")
	ErrNoNeighbour    = errors.New("not in the neighbour table (ping it once)")
)

// GatewayMAC is the MAC of the IPv4 (else IPv6) default route's gateway
// in the neighbour table of the main routing table's interface.
func GatewayMAC() (net.HardwareAddr, error) {
	var tried []string
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := netlink.RouteListFiltered(family, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return nil, fmt.Errorf("list routes to find the gateway: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			if r.Gw == nil {
				continue
			}
			neighs, err := netlink.NeighList(r.LinkIndex, family)
			if err != nil {
				return nil, fmt.Errorf("list neighbours to find the gateway's MAC: %w", err)
			}
			for _, n := range neighs {
				usable := n.State&(netlink.NUD_INCOMPLETE|netlink.NUD_FAILED) == 0
				if n.IP.Equal(r.Gw) && len(n.HardwareAddr) == 6 && usable {
					return n.HardwareAddr, nil
				}
			}
			tried = append(tried, r.Gw.String())
		}
	}
	if len(tried) == 0 {
		return nil, ErrNoDefaultRoute
	}
	return nil, fmt.Errorf("the MAC of gateway %v is %w", tried, ErrNoNeighbour)
}
