package lab

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Several lbd nodes (Config.LBNodes > 1): an edge site in small. Every
// node has its own link to the router and its own `lbd serve` (all in the
// caller's namespace, each with its own interface, state directory, pin
// directory and API port; lbd's locks are per interface and pin
// directory). The router runs BIRD 2, which peers with every node over
// eBGP and installs the IPv4 VIP as one multipath route with a next hop
// per announcing node, hashed on the layer-4 5-tuple
// (fib_multipath_hash_policy=1): no static VIP route.
//
//	client ── router (BIRD, AS 65000) ─ lb0 10.112.0.1 ── lbl<name>   10.112.0.2  lbd node 0 (AS 65001)
//	                                  ─ lb1 10.114.0.1 ── lbl<name>-1 10.114.0.2  lbd node 1
//	                                  ─ lb<i> 10.(113+i).0.1 ...
//
// The IPv6 VIP is not routed in this mode (the nodes' links carry no IPv6
// to announce it from), and only node 0 has the host route that lbd's
// health checks use: leave health checks off, or know that they are node
// 0's alone.

// BGP autonomous systems of the multi-node lab.
const (
	RouterAS = 65000
	NodeAS   = 65001
)

// MaxLBNodes bounds Config.LBNodes (one digit in interface names).
const MaxLBNodes = 4

// LBNode is one lbd node of the lab and its link to the router.
type LBNode struct {
	Index      int        `json:"index"`
	HostIf     string     `json:"host_interface"` // lbd's interface, in the caller's namespace
	RouterIf   string     `json:"router_interface"`
	Addr       netip.Addr `json:"addr"`        // on HostIf: BGP session, next hop, health checks
	RouterAddr netip.Addr `json:"router_addr"` // on RouterIf: the BGP peer
	GatewayMAC string     `json:"gateway_mac"` // RouterIf's MAC
	API        string     `json:"api"`
	TokenFile  string     `json:"token_file"`
	StateDir   string     `json:"state_dir"`
	PinDir     string     `json:"pin_dir"`
	Log        string     `json:"log"`
	Pid        int        `json:"pid,omitempty"`
}

// hostIf is node i's interface name: node 0 keeps the single-node name;
// the others add "-i", which no lab name contains, so that one lab's
// names never match another's.
func hostIf(name string, i int) string {
	if i == 0 {
		return "lbl" + name
	}
	return "lbl" + name + "-" + strconv.Itoa(i)
}

func pinDir(name string, i int) string {
	if i == 0 {
		return "/sys/fs/bpf/" + prefix(name) + "lbd"
	}
	return "/sys/fs/bpf/" + prefix(name) + "lbd" + strconv.Itoa(i)
}

// planNodes fills in l.Nodes: node 0 as the single-node lab has it, the
// others with free API ports on 127.0.0.1.
func (l *Lab) planNodes() error {
	l.Nodes = nil
	for i := range l.cfg.LBNodes {
		n := LBNode{Index: i, HostIf: hostIf(l.Name, i), RouterIf: "lb" + strconv.Itoa(i), PinDir: pinDir(l.Name, i)}
		third := 112
		if i > 0 {
			third = 113 + i // 10.113 is the reals' segment
		}
		n.Addr = netip.AddrFrom4([4]byte{10, byte(third), 0, 2})
		n.RouterAddr = netip.AddrFrom4([4]byte{10, byte(third), 0, 1})
		if i == 0 {
			n.API, n.StateDir, n.Log = l.cfg.API, filepath.Join(Dir(l.Name), "lbd"), "lbd.log"
		} else {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return fmt.Errorf("find a free port for node %d's API: %w", i, err)
			}
			n.API = ln.Addr().String()
			ln.Close()
			n.StateDir, n.Log = filepath.Join(Dir(l.Name), "lbd"+strconv.Itoa(i)), "lbd"+strconv.Itoa(i)+".log"
		}
		n.TokenFile = filepath.Join(n.StateDir, "token")
		if err := os.MkdirAll(n.StateDir, 0o700); err != nil {
			return err
		}
		l.Nodes = append(l.Nodes, n)
	}
	return nil
}

// multi reports whether the lab has several lbd nodes behind BGP.
func (l *Lab) multi() bool { return len(l.Nodes) > 1 }

// linkNode builds node n's link: the host side with its address (node 0:
// and the VIP route for health checks), the router side with XDP_PASS
// (veth delivers XDP_TX frames only to a peer with a program) and the
// node's neighbour entry, and in single-node mode the static VIP routes.
func (l *Lab) linkNode(n *LBNode) error {
	if err := vethInto(n.HostIf, n.RouterIf, l.Router.Netns); err != nil {
		return err
	}
	_ = writeSysctl("net/ipv6/conf/"+n.HostIf+"/disable_ipv6", "1")
	if err := configure(n.HostIf, 0, netip.PrefixFrom(n.Addr, 24)); err != nil {
		return err
	}
	host, err := netlink.LinkByName(n.HostIf)
	if err != nil {
		return err
	}
	if n.Index == 0 {
		// lbd's health checks (sent from this namespace, encapsulated to
		// each real on the way out) reach the reals through this route,
		// and their answers come back. Both stay inside the lab.
		_, vip4, _ := net.ParseCIDR(VIP4.String() + "/32")
		if err := netlink.RouteAdd(&netlink.Route{Dst: vip4, Gw: net.IP(n.RouterAddr.AsSlice()), LinkIndex: host.Attrs().Index}); err != nil {
			return fmt.Errorf("route to the VIP for health checks: %w", err)
		}
	}
	hostMAC := host.Attrs().HardwareAddr
	return InNetns(l.Router.Netns, func() error {
		addrs := []netip.Prefix{netip.PrefixFrom(n.RouterAddr, 24)}
		if n.Index == 0 {
			addrs = append(addrs, mustPrefix("fd00:112::1/64"))
		}
		if err := configure(n.RouterIf, 0, addrs...); err != nil {
			return err
		}
		rl, err := netlink.LinkByName(n.RouterIf)
		if err != nil {
			return err
		}
		n.GatewayMAC = rl.Attrs().HardwareAddr.String()
		if err := attachXDPPass(n.RouterIf); err != nil {
			return err
		}
		return l.routerSide(n, hostMAC)
	})
}

// routerSide (in the router's namespace) sets node n's neighbour entries
// and, with a single node, the static VIP routes through it. It is
// idempotent: a link set down loses them, SetNodeLink up puts them back.
func (l *Lab) routerSide(n *LBNode, hostMAC net.HardwareAddr) error {
	rl, err := netlink.LinkByName(n.RouterIf)
	if err != nil {
		return err
	}
	neigh := []string{n.Addr.String()}
	if n.Index == 0 {
		neigh = append(neigh, "fd00:112::2")
	}
	for _, a := range neigh {
		if err := netlink.NeighSet(&netlink.Neigh{LinkIndex: rl.Attrs().Index, IP: net.ParseIP(a), HardwareAddr: hostMAC,
			State: netlink.NUD_PERMANENT, Family: family(a)}); err != nil {
			return fmt.Errorf("neighbour %s: %w", a, err)
		}
	}
	if l.multi() {
		return nil // BIRD routes the VIP
	}
	for _, r := range [][2]string{{VIP4.String() + "/32", "10.112.0.2"}, {VIP6.String() + "/128", "fd00:112::2"}} {
		_, dst, _ := net.ParseCIDR(r[0])
		if err := netlink.RouteReplace(&netlink.Route{Dst: dst, Gw: net.ParseIP(r[1]), LinkIndex: rl.Attrs().Index}); err != nil {
			return fmt.Errorf("route %s via lbd: %w", r[0], err)
		}
	}
	return nil
}

// SetNodeLink sets node i's link down or up on the router's side: down,
// the router loses the node at once (as when a node's cable or NIC dies;
// BIRD ends the BGP session when the interface goes); up, it comes back
// with its neighbour entries (and, single-node, the static VIP routes).
func (l *Lab) SetNodeLink(i int, up bool) error {
	n := &l.Nodes[i]
	host, err := netlink.LinkByName(n.HostIf)
	if err != nil {
		return err
	}
	return InNetns(l.Router.Netns, func() error {
		rl, err := netlink.LinkByName(n.RouterIf)
		if err != nil {
			return err
		}
		if !up {
			if err := netlink.LinkSetDown(rl); err != nil {
				return fmt.Errorf("set %s down: %w", n.RouterIf, err)
			}
			return nil
		}
		if err := netlink.LinkSetUp(rl); err != nil {
			return fmt.Errorf("set %s up: %w", n.RouterIf, err)
		}
		return l.routerSide(n, host.Attrs().HardwareAddr)
	})
}

// birdConfig is the router's BIRD 2 configuration: a passive eBGP
// session per node (the nodes dial out; their speakers do not listen, as
// they share a namespace), every IPv4 host route in the VIP range
// accepted, and equal routes installed as one multipath route.
func (l *Lab) birdConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by the lbd lab (package lab) for lab %s
log stderr all;
router id %s;
protocol device { scan time 10; }
protocol kernel {
	ipv4 { import none; export where source = RTS_BGP; };
	merge paths yes limit 16;
}
filter lbd_vips {
	if net ~ [ 10.200.0.0/16{32,32} ] then accept;
	reject;
}
template bgp lbd {
	local as %d;
	passive on;
	check link yes;
	hold time 9;
	ipv4 { import filter lbd_vips; export none; };
}
`, l.Name, l.Nodes[0].RouterAddr, RouterAS)
	for _, n := range l.Nodes {
		fmt.Fprintf(&b, "protocol bgp node%d from lbd { neighbor %s as %d; source address %s; interface %q; }\n",
			n.Index, n.Addr, NodeAS, n.RouterAddr, n.RouterIf)
	}
	return b.String()
}

// FindBird returns the path of the BIRD 2 daemon (bird on PATH, else
// /usr/sbin/bird), or an error saying how to install it.
func FindBird() (string, error) {
	if p, err := exec.LookPath("bird"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/bird"); err == nil {
		return "/usr/sbin/bird", nil
	}
	return "", errors.New("BIRD 2 (bird) is not installed: apt-get install bird2 (scripts/install-deps.sh), needed for a lab with several lbd nodes")
}

// birdMarker is in BIRD's command line (its configuration's path), for
// Down to find it.
func birdMarker(name string) string { return filepath.Join(Dir(name), "bird.") }

// startBird writes the configuration and runs BIRD in the router's
// namespace, in the foreground (its log: bird.log).
func (l *Lab) startBird() error {
	bin := l.cfg.Bird
	if bin == "" {
		var err error
		if bin, err = FindBird(); err != nil {
			return err
		}
	}
	// Layer-4 hashing: the connections of one client spread over the
	// nodes, and all packets of one connection take one.
	if err := InNetns(l.Router.Netns, func() error { return writeSysctl("net/ipv4/fib_multipath_hash_policy", "1") }); err != nil {
		return err
	}
	conf := filepath.Join(Dir(l.Name), "bird.conf")
	if err := os.WriteFile(conf, []byte(l.birdConfig()), 0o600); err != nil {
		return err
	}
	l.BirdSocket = filepath.Join(Dir(l.Name), "bird.ctl")
	cmd := exec.Command(bin, "-f", "-c", conf, "-s", l.BirdSocket, "-P", filepath.Join(Dir(l.Name), "bird.pid"))
	if err := l.startLogged(l.Router.Netns, "bird.log", cmd); err != nil {
		return err
	}
	l.BirdPid = cmd.Process.Pid
	exited := make(chan struct{})
	go func() { _, _ = cmd.Process.Wait(); close(exited) }()
	l.cmds[cmd.Process.Pid] = nil // reaped above
	// Up once its control socket exists.
	for range 100 {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(Dir(l.Name), "bird.log"))
			return fmt.Errorf("bird exited at start:\n%s", tail(string(log), 20))
		default:
		}
		if _, err := os.Stat(l.BirdSocket); err == nil {
			l.logf("router: BIRD (pid %d, AS %d) peers with %d lbd nodes (AS %d), ECMP with layer-4 hashing; birdc -s %s", l.BirdPid, RouterAS, len(l.Nodes), NodeAS, l.BirdSocket)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("bird started but has no control socket %s after 5 s (log: %s)", l.BirdSocket, filepath.Join(Dir(l.Name), "bird.log"))
}

// VIPNextHops reads the router's kernel route to vip and returns its next
// hops (one per node that announces it; none without a route).
func (l *Lab) VIPNextHops(vip netip.Addr) ([]netip.Addr, error) {
	var hops []netip.Addr
	err := InNetns(l.Router.Netns, func() error {
		fam := netlink.FAMILY_V4
		if vip.Is6() {
			fam = netlink.FAMILY_V6
		}
		dst := &net.IPNet{IP: net.IP(vip.AsSlice()), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}
		routes, err := netlink.RouteListFiltered(fam, &netlink.Route{Dst: dst, Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
		if err != nil {
			return fmt.Errorf("router's route to %s: %w", vip, err)
		}
		for _, r := range routes {
			if r.Gw != nil {
				if a, ok := netip.AddrFromSlice(r.Gw); ok {
					hops = append(hops, a.Unmap())
				}
			}
			for _, nh := range r.MultiPath {
				if a, ok := netip.AddrFromSlice(nh.Gw); ok {
					hops = append(hops, a.Unmap())
				}
			}
		}
		return nil
	})
	return hops, err
}
