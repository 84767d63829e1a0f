package main

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/bpf/tc"
)

// hcTunnel is the health-check encapsulation on the LB node's interface:
// probes marked for a real leave through the same tunnel as its traffic.
type hcTunnel struct {
	*tc.HCEncap
	att *tc.Attachment
}

func (h *hcTunnel) close() {
	if err := h.att.Detach(); err != nil {
		slog.Warn("detach health-check encapsulation", "err", err)
	}
	h.HCEncap.Close()
}

// hcProgName is the program's name in the kernel, to find one a killed
// lbd left behind (clsact filters outlive their process).
const hcProgName = "lbd_hc_encap"

// startHCTunnel loads the health-check encapsulation and attaches it to
// the interface's egress, with this node's addresses as outer sources.
func startHCTunnel(cfg serveConfig, gw net.HardwareAddr) (*hcTunnel, error) {
	link, err := netlink.LinkByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", cfg.Interface, err)
	}
	src4, src6, err := nodeAddrs(link)
	if err != nil {
		return nil, err
	}
	hc, err := tc.LoadHCEncap(cfg.MaxReals, tc.HCConfig{SourceV4: src4, SourceV6: src6, GatewayMAC: gw})
	if err != nil {
		return nil, err
	}
	if n, err := tc.DetachProgram(cfg.Interface, tc.Egress, hcProgName); err == nil && n > 0 {
		slog.Info("removed a health-check encapsulation an earlier lbd left", "interface", cfg.Interface, "count", n)
	}
	att, err := tc.Attach(cfg.Interface, hc.Program(), tc.AttachOptions{Direction: tc.Egress})
	if err != nil {
		hc.Close()
		return nil, err
	}
	return &hcTunnel{HCEncap: hc, att: att}, nil
}

// nodeAddrs returns the interface's first global IPv4 and IPv6 addresses.
func nodeAddrs(link netlink.Link) (v4, v6 netip.Addr, err error) {
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return v4, v6, fmt.Errorf("addresses of %s: %w", link.Attrs().Name, err)
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !ip.IsGlobalUnicast() && !ip.IsPrivate() {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !ip.IsLinkLocalUnicast() && !v6.IsValid() {
			v6 = ip
		}
	}
	if !v4.IsValid() && !v6.IsValid() {
		return v4, v6, fmt.Errorf("%s has no address to send health-check tunnels from", link.Attrs().Name)
	}
	return v4, v6, nil
}
