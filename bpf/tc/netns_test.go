package tc

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/lbd-dev/lbd/internal/nsexec"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Network namespace helpers on netlink alone (no iproute2), so that the
// tests also run in the VM matrix's busybox guests.

// testNS is a network namespace the test created (and deletes on cleanup).
type testNS struct {
	name string
	h    netns.NsHandle
}

// uniq returns a short random suffix, so that parallel runs do not collide.
func uniq(t testing.TB) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func newNetns(t testing.TB, prefix string) *testNS {
	t.Helper()
	name := "lbdtc-" + prefix + "-" + uniq(t)
	n := &testNS{name: name}
	h, err := nsexec.NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	n.h = h
	t.Cleanup(func() {
		n.h.Close()
		_ = netns.DeleteNamed(name)
	})
	n.must(t, func() error { return linkUp("lo") })
	return n
}

// do runs f on an OS thread switched into the namespace. Sockets and
// netlink handles opened by f stay in the namespace after it returns.
func (n *testNS) do(f func() error) error {
	if err := nsexec.Do(n.h, f); err != nil {
		return fmt.Errorf("netns %s: %w", n.name, err)
	}
	return nil
}

// must is do, failing the test on error.
func (n *testNS) must(t testing.TB, f func() error) {
	t.Helper()
	if err := n.do(f); err != nil {
		t.Fatalf("in netns %s: %v", n.name, err)
	}
}

func linkUp(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	return netlink.LinkSetUp(l)
}

// addAddr adds an address (CIDR) to an interface, without DAD for IPv6.
func addAddr(ifname, cidr string) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return err
	}
	if a.IP.To4() == nil {
		a.Flags |= unix.IFA_F_NODAD
	}
	if err := netlink.AddrAdd(l, a); err != nil {
		return fmt.Errorf("add %s to %s: %w", cidr, ifname, err)
	}
	return nil
}

// addRoute routes dst (CIDR; "" for the default route) via gw.
func addRoute(dst, gw string) error {
	r := &netlink.Route{Gw: net.IP(netip.MustParseAddr(gw).AsSlice())}
	if dst != "" {
		_, n, err := net.ParseCIDR(dst)
		if err != nil {
			return err
		}
		r.Dst = n
	} else if netip.MustParseAddr(gw).Is4() {
		r.Dst = &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	} else {
		r.Dst = &net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
	}
	if err := netlink.RouteAdd(r); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

// setNeigh makes a permanent neighbour entry: no ARP/ND round trip.
func setNeigh(ifname, ip string, mac net.HardwareAddr) error {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return err
	}
	a := netip.MustParseAddr(ip)
	fam := unix.AF_INET
	if a.Is6() {
		fam = unix.AF_INET6
	}
	return netlink.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: netlink.NUD_PERMANENT,
		IP: net.IP(a.AsSlice()), HardwareAddr: mac})
}
