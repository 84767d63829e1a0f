package hostaddr

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/internal/nsexec"
	"github.com/lbd-dev/lbd/internal/privtest"
)

// inNewNetns runs f in a fresh network namespace with a veth pair
// hostaddr0/hostaddr1, both up.
func inNewNetns(t *testing.T, f func(link netlink.Link) error) {
	t.Helper()
	privtest.Require(t)
	ns, err := nsexec.New()
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := nsexec.Do(ns, func() error {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "hostaddr0"}, PeerName: "hostaddr1"}); err != nil {
			return err
		}
		link, err := netlink.LinkByName("hostaddr0")
		if err != nil {
			return err
		}
		for _, n := range []string{"hostaddr0", "hostaddr1"} {
			l, err := netlink.LinkByName(n)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return err
			}
		}
		return f(link)
	}); err != nil {
		t.Fatal(err)
	}
}

func addAddr(link netlink.Link, cidr string) error {
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	a.Flags |= 0x80 // IFA_F_NODAD: usable at once
	return netlink.AddrAdd(link, a)
}

// TestOfOneRule: link-local and loopback-like addresses never count;
// private IPv4 and ULA IPv6 do, the first of each family wins.
func TestOfOneRule(t *testing.T) {
	inNewNetns(t, func(link netlink.Link) error {
		v4, v6, err := Of("hostaddr0")
		if err != nil {
			return err
		}
		// Only the kernel's fe80:: address so far.
		if v4.IsValid() || v6.IsValid() {
			t.Errorf("no global address yet: got %v %v", v4, v6)
		}
		for _, a := range []string{"169.254.7.7/16", "10.113.9.1/24", "10.113.9.2/24", "fd00:113::1/64", "2001:db8::1/64"} {
			if err := addAddr(link, a); err != nil {
				return err
			}
		}
		v4, v6, err = Of("hostaddr0")
		if err != nil {
			return err
		}
		if v4 != netip.MustParseAddr("10.113.9.1") {
			t.Errorf("IPv4: got %v, want 10.113.9.1 (the first global one; 169.254/16 is link-local)", v4)
		}
		if !v6.IsValid() || v6.IsLinkLocalUnicast() || !v6.IsGlobalUnicast() {
			t.Errorf("IPv6: got %v, want one of the global ones", v6)
		}
		if _, _, err := Of("hostaddr-none"); err == nil {
			t.Error("no error for a missing interface")
		}
		return nil
	})
}

func TestGatewayMAC(t *testing.T) {
	inNewNetns(t, func(link netlink.Link) error {
		if _, err := GatewayMAC(); !errors.Is(err, ErrNoDefaultRoute) {
			t.Errorf("no default route: got %v, want ErrNoDefaultRoute", err)
		}
		if err := addAddr(link, "10.113.9.1/24"); err != nil {
			return err
		}
		gw := net.ParseIP("10.113.9.254")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw}); err != nil {
			return err
		}
		_, err := GatewayMAC()
		if !errors.Is(err, ErrNoNeighbour) || err.Error() != "the MAC of gateway [10.113.9.254] is not in the neighbour table (ping it once)" {
			t.Errorf("gateway without a neighbour entry: got %v", err)
		}
		mac, _ := net.ParseMAC("02:11:22:33:44:55")
		if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT, IP: gw, HardwareAddr: mac}); err != nil {
			return err
		}
		got, err := GatewayMAC()
		if err != nil || got.String() != mac.String() {
			t.Errorf("gateway MAC: got %v, %v; want %v", got, err, mac)
		}
		return nil
	})
}
