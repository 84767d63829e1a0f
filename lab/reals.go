// The reals: how they are linked to the node (IPVLAN, macvlan or veth),
// set up for direct server return (lbd real setup) and broken or repaired
// on purpose by tests.

package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/bpf/tc"
	"github.com/lbd-dev/lbd/realsetup"
)

// attachReals links the reals to the node: IPVLAN, else macvlan, else veth.
func (l *Lab) attachReals() error {
	modes := []string{l.cfg.RealLink}
	if l.cfg.RealLink == LinkAuto {
		modes = []string{LinkIPVLAN, LinkMacvlan, LinkVeth}
	}
	var tried []string
	for _, mode := range modes {
		err := InNetns(l.NodeNS.Netns, func() error { return l.attachRealsWith(mode) })
		if err == nil {
			// The node's own address: on eth0, or on the bridge with veth.
			hostIf := "eth0"
			if mode == LinkVeth {
				hostIf = "br0"
			}
			if err := InNetns(l.NodeNS.Netns, func() error {
				if err := configure(hostIf, 0, netip.PrefixFrom(l.NodeNS.Addr4, 24), netip.PrefixFrom(l.NodeNS.Addr6, 64)); err != nil {
					return err
				}
				return defaultRoutes("10.113.0.1", "fd00:113::1")
			}); err != nil {
				return err
			}
			l.RealLink = mode
			if len(tried) == 0 {
				l.LinkReason = "the kernel has " + mode
			} else {
				l.LinkReason = strings.Join(tried, "; ")
			}
			l.logf("reals attached by %s (%s)", mode, l.LinkReason)
			return nil
		}
		if l.cfg.RealLink != LinkAuto || !errors.Is(err, unix.EOPNOTSUPP) {
			return err
		}
		tried = append(tried, fmt.Sprintf("no %s in this kernel (%v)", mode, err))
		_ = InNetns(l.NodeNS.Netns, l.unattachReals)
	}
	return fmt.Errorf("cannot attach the reals: %v", tried)
}

func (l *Lab) unattachReals() error {
	for _, r := range l.Reals {
		if link, err := netlink.LinkByName(r.Name); err == nil {
			_ = netlink.LinkDel(link)
		}
	}
	if link, err := netlink.LinkByName("br0"); err == nil {
		_ = netlink.LinkDel(link)
	}
	return nil
}

// attachRealsWith runs in the node's namespace.
func (l *Lab) attachRealsWith(mode string) error {
	eth0, err := netlink.LinkByName("eth0")
	if err != nil {
		return err
	}
	if mode == LinkVeth {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("add bridge br0: %w", err)
		}
		if err := netlink.LinkSetMaster(eth0, br); err != nil {
			return fmt.Errorf("eth0 into br0: %w", err)
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
	}
	for _, r := range l.Reals {
		f, err := os.Open(filepath.Join(netnsDir, r.Netns))
		if err != nil {
			return err
		}
		ns := netlink.NsFd(int(f.Fd()))
		attrs := netlink.LinkAttrs{Name: r.Name, ParentIndex: eth0.Attrs().Index, Namespace: ns}
		var link netlink.Link
		switch mode {
		case LinkIPVLAN:
			link = &netlink.IPVlan{LinkAttrs: attrs, Mode: netlink.IPVLAN_MODE_L2}
		case LinkMacvlan:
			link = &netlink.Macvlan{LinkAttrs: attrs, Mode: netlink.MACVLAN_MODE_BRIDGE}
		case LinkVeth:
			link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: r.Name}, PeerName: "eth0", PeerNamespace: ns}
		}
		err = netlink.LinkAdd(link)
		f.Close()
		if err != nil {
			return fmt.Errorf("add %s link for %s: %w", mode, r.Name, err)
		}
		if mode == LinkVeth {
			br, _ := netlink.LinkByName("br0")
			local, err := netlink.LinkByName(r.Name)
			if err != nil {
				return err
			}
			if err := netlink.LinkSetMaster(local, br); err != nil {
				return err
			}
			if err := netlink.LinkSetUp(local); err != nil {
				return err
			}
		}
	}
	return nil
}

// setupReals configures each real's interface and routes, runs `lbd real
// setup` in it and starts its server.
func (l *Lab) setupReals() error {
	for _, r := range l.Reals {
		err := InNetns(r.Netns, func() error {
			if l.RealLink != LinkVeth {
				link, err := netlink.LinkByName(r.Name)
				if err != nil {
					return err
				}
				if err := netlink.LinkSetName(link, "eth0"); err != nil {
					return fmt.Errorf("rename %s to eth0: %w", r.Name, err)
				}
			}
			if err := configure("eth0", 0, netip.PrefixFrom(r.Addr4, 24), netip.PrefixFrom(r.Addr6, 64)); err != nil {
				return err
			}
			return defaultRoutes("10.113.0.1", "fd00:113::1")
		})
		if err != nil {
			return err
		}
		res, err := l.setupReal(r)
		if err != nil {
			return err
		}
		l.Decap, l.DecapInfo = res.Decap, res.Detail
		if res.Reason != "" {
			l.DecapInfo += " — " + res.Reason
		}
	}
	l.logf("reals decapsulate with %s: %s", l.Decap, l.DecapInfo)
	for i := range l.Reals {
		if err := l.StartReal(i); err != nil {
			return err
		}
	}
	l.logf("real servers answer on TCP %d (HTTP) and TCP/UDP %d (name, then echo)", HTTPPort, WhoPort)
	return nil
}

// setupReal runs lbd real setup in a real's namespace (idempotent).
func (l *Lab) setupReal(r Node) (realsetup.Result, error) {
	var res realsetup.Result
	out, err := l.RunIn(r.Netns, "real", "setup", "-o", "json", "--decap", l.cfg.Decap, "--interface", "eth0",
		"--pin-dir", "/sys/fs/bpf/"+prefix(l.Name)+r.Name,
		"--state-file", filepath.Join(Dir(l.Name), r.Name, "real-setup.json"), VIP4.String(), VIP6.String())
	if err != nil {
		return res, fmt.Errorf("lbd real setup in %s: %w: %s", r.Netns, err, out)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("lbd real setup in %s: %w: %s", r.Netns, err, out)
	}
	return res, nil
}

// RepairReal runs lbd real setup in real i again.
func (l *Lab) RepairReal(i int) error {
	_, err := l.setupReal(l.Reals[i])
	return err
}

// BreakDecap removes only real i's decapsulation (its kernel tunnel
// devices, or lbd's TC program): the real's server keeps answering on
// its own address, but nothing sent through the tunnel reaches it.
func (l *Lab) BreakDecap(i int) error {
	return InNetns(l.Reals[i].Netns, func() error {
		found := false
		for _, dev := range []string{realsetup.IPIPDevice, realsetup.IP6TnlDevice} {
			if link, err := netlink.LinkByName(dev); err == nil {
				if err := netlink.LinkDel(link); err != nil {
					return fmt.Errorf("delete %s: %w", dev, err)
				}
				found = true
			}
		}
		n, err := tc.DetachProgram("eth0", tc.Ingress, "lbd_decap")
		if err != nil {
			return fmt.Errorf("detach lbd_decap: %w", err)
		}
		if !found && n == 0 {
			return fmt.Errorf("real %s has no decapsulation to break", l.Reals[i].Name)
		}
		return nil
	})
}
