// The lab's namespaces, links, addresses and routes (the picture in lab.go).

package lab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func nlAddr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}

// configure gives ifname its addresses (and MTU if non-zero), sets it up.
func configure(ifname string, mtu int, addrs ...netip.Prefix) error {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return fmt.Errorf("find %s: %w", ifname, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return fmt.Errorf("MTU of %s: %w", ifname, err)
		}
	}
	for _, a := range addrs {
		if err := netlink.AddrAdd(link, nlAddr(a)); err != nil {
			return fmt.Errorf("address %s on %s: %w", a, ifname, err)
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set %s up: %w", ifname, err)
	}
	return nil
}

func defaultRoutes(gw4, gw6 string) error {
	for _, gw := range []string{gw4, gw6} {
		ip := net.ParseIP(gw)
		r := &netlink.Route{Gw: ip}
		if ip.To4() != nil {
			r.Dst = &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
		} else {
			r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("default route via %s: %w", gw, err)
		}
	}
	return nil
}

// vethInto creates a veth pair from the current namespace: local here,
// peer in the named namespace.
func vethInto(local, peer, peerNS string) error {
	f, err := os.Open(filepath.Join(netnsDir, peerNS))
	if err != nil {
		return err
	}
	defer f.Close()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: local}, PeerName: peer, PeerNamespace: netlink.NsFd(int(f.Fd()))}
	if err := netlink.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s/%s(%s): %w", local, peer, peerNS, err)
	}
	return nil
}

func (l *Lab) build() error {
	p := prefix(l.Name)
	l.Router = Node{Name: "router", Netns: p + "router"}
	l.NodeNS = Node{Name: "node", Netns: p + "node", Addr4: netip.MustParseAddr("10.113.0.2"), Addr6: netip.MustParseAddr("fd00:113::2")}
	for i := 1; i <= l.cfg.Clients; i++ {
		l.Clients = append(l.Clients, Node{Name: fmt.Sprintf("c%d", i), Netns: fmt.Sprintf("%sc%d", p, i),
			Addr4: netip.MustParseAddr(fmt.Sprintf("10.111.%d.2", i)), Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:111:%d::2", i))})
	}
	for j := 1; j <= l.cfg.Reals; j++ {
		l.Reals = append(l.Reals, Node{Name: fmt.Sprintf("r%d", j), Netns: fmt.Sprintf("%sr%d", p, j),
			Addr4: netip.MustParseAddr(fmt.Sprintf("10.113.0.%d", 10+j)), Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:113::%d", 10+j))})
	}
	all := []Node{l.Router, l.NodeNS}
	all = append(append(all, l.Clients...), l.Reals...)
	for _, n := range all {
		if err := createNetns(n.Netns); err != nil {
			return err
		}
	}
	l.logf("namespaces: %d clients, router, node, %d reals (%s*)", len(l.Clients), len(l.Reals), p)

	// Router: forwards both families, no reverse-path filter (the
	// encapsulated packets' outer sources are lbd's, routed nowhere).
	if err := InNetns(l.Router.Netns, func() error {
		for _, k := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
			if err := writeSysctl(k, "1"); err != nil {
				return err
			}
		}
		for _, k := range []string{"all", "default"} {
			if err := writeSysctl("net/ipv4/conf/"+k+"/rp_filter", "0"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}

	// lbd's interfaces: here, no IPv6, and one address each (see
	// linkNode).
	for i := range l.Nodes {
		if err := l.linkNode(&l.Nodes[i]); err != nil {
			return err
		}
	}
	l.GatewayMAC = l.Nodes[0].GatewayMAC

	err := InNetns(l.Router.Netns, func() error {
		// The node's segment, where the reals are.
		if err := vethInto("nd0", "eth0", l.NodeNS.Netns); err != nil {
			return err
		}
		if err := configure("nd0", 0, mustPrefix("10.113.0.1/24"), mustPrefix("fd00:113::1/64")); err != nil {
			return err
		}
		for i, c := range l.Clients {
			rif := fmt.Sprintf("c%d", i+1)
			if err := vethInto(rif, "eth0", c.Netns); err != nil {
				return err
			}
			if err := configure(rif, 0, mustPrefix(fmt.Sprintf("10.111.%d.1/24", i+1)), mustPrefix(fmt.Sprintf("fd00:111:%d::1/64", i+1))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i, c := range l.Clients {
		err := InNetns(c.Netns, func() error {
			// MTU 1400: room for the 40 bytes of an IPv6 outer header
			// within the fabric's 1500.
			if err := configure("eth0", 1400, netip.PrefixFrom(c.Addr4, 24), netip.PrefixFrom(c.Addr6, 64)); err != nil {
				return err
			}
			if err := txChecksumOff("eth0"); err != nil {
				return err
			}
			return defaultRoutes(fmt.Sprintf("10.111.%d.1", i+1), fmt.Sprintf("fd00:111:%d::1", i+1))
		})
		if err != nil {
			return err
		}
	}
	return l.attachReals()
}

func family(ip string) int {
	if strings.Contains(ip, ":") {
		return netlink.FAMILY_V6
	}
	return netlink.FAMILY_V4
}
