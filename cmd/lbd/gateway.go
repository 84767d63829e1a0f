package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
)

// gatewayMAC is the configured gateway MAC or, if none is configured, the
// MAC of the IPv4 (else IPv6) default route's gateway in the neighbour
// table: where Katran-style XDP_TX sends encapsulated packets.
func gatewayMAC(cfg serveConfig) (net.HardwareAddr, error) {
	if cfg.GatewayMAC != "" {
		mac, err := net.ParseMAC(cfg.GatewayMAC)
		if err != nil || len(mac) != 6 {
			return nil, fmt.Errorf("gateway MAC %q: want an Ethernet address such as 02:00:00:00:00:01", cfg.GatewayMAC)
		}
		return mac, nil
	}
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
		return nil, fmt.Errorf("no default route to take the gateway MAC from: pass --gateway-mac")
	}
	return nil, fmt.Errorf("the MAC of gateway %v is not in the neighbour table (ping it once) or pass --gateway-mac", tried)
}
