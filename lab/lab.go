// Package lab builds lbd's traffic lab out of network namespaces on one
// Linux machine, runs lbd and real servers in it, and tears it down: what
// `lbd lab up|down|status` (and `make demo`) and the end-to-end tests use.
//
// Topology (Katran's model; every address private to the lab):
//
//	client i (netns) eth0 10.111.i.2 ──── c<i> router (netns) lb0 10.112.0.1 ──── <host veth> lbd serve, XDP
//	                                        │  routes the VIPs to lbd       (host namespace, 10.112.0.2 for
//	                                        │                                health checks only; XDP_TX back
//	                                        │                                to the router's MAC)
//	                                       nd0 10.113.0.1
//	                                        │
//	                              node (netns) eth0 10.113.0.2   the "host" of the reals
//	                                 ├── IPVLAN/macvlan/veth ── real j (netns) eth0 10.113.0.(10+j), VIPs on lo
//
// Clients send to the VIP through the router; lbd's XDP program
// encapsulates towards a real and sends the packet back to the router,
// which routes it to the real by its outer address. The real decapsulates
// (kernel ipip/ip6tnl, or lbd's TC program on kernels without them),
// answers from the VIP straight to the client through the router: the
// reply never passes lbd (direct server return). IPv6 mirrors IPv4
// (fd00:111:i::2, fd00:112::1, fd00:113::…, VIP fd00:200::1).
//
// Reals are attached to the node the way container runtimes attach
// containers: IPVLAN (L2) on the node's interface when the kernel has it,
// else macvlan (bridge mode), else a veth into a bridge. lbd's interface is
// in the caller's namespace; the lab gives it one address and a route for
// the IPv4 VIP into the lab, for lbd's health checks, and nothing else: no
// packet of the lab can leave the machine.
//
// With Config.LBNodes > 1 the lab has several lbd nodes, each with its own
// link to the router, and the router runs BIRD 2 and routes the IPv4 VIP
// over the nodes that announce it over BGP (ECMP, layer-4 hash) instead of
// the static route: see nodes.go.
package lab

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/lbd-dev/lbd/bpf/tc"
	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/realsetup"
)

// Lab addresses and ports.
var (
	VIP4 = netip.MustParseAddr("10.200.0.1")
	VIP6 = netip.MustParseAddr("fd00:200::1")
)

// Ports the real servers answer on (TCP and UDP alike for WhoPort).
const (
	HTTPPort = 80 // HTTP: the body is the real's name
	WhoPort  = 7  // TCP: the real's name on a line, then an echo of each line; UDP: the name for each datagram
)

// Real-attachment modes.
const (
	LinkAuto    = "auto"
	LinkIPVLAN  = "ipvlan"
	LinkMacvlan = "macvlan"
	LinkVeth    = "veth"
)

// StateRoot holds each lab's state file, logs and lbd state directory.
const StateRoot = "/run/lbd-lab"

// Config describes a lab to bring up.
type Config struct {
	// Name is 1 to 10 lowercase letters or digits; it prefixes every
	// namespace (lbdlab-NAME-…), the host interface (lblNAME) and the
	// pin directories.
	Name    string
	Clients int // default 2
	Reals   int // default 3
	// Binary is the lbd binary: the lab runs `lbd real setup`, `lbd lab
	// real-server` and `lbd serve` from it. Env is added to their
	// environment (tests re-executing their own binary set a switch).
	Binary string
	Env    []string
	// RealLink is LinkAuto, LinkIPVLAN, LinkMacvlan or LinkVeth.
	RealLink string
	// Decap is passed to lbd real setup: auto, kernel or bpf.
	Decap string
	// API is the address lbd serve's REST API listens on (default
	// 127.0.0.1:8080). Empty LBD: lbd is not started.
	API string
	// NoLBD leaves lbd serve out (start it with StartLBD / StartNode).
	NoLBD bool
	// LBNodes is the number of lbd nodes (default 1). With more, the
	// router runs BIRD 2 and routes the VIP over every node that
	// announces it over BGP (ECMP): see nodes.go. Node 0 listens on API;
	// the others on free ports (State.Nodes).
	LBNodes int
	// Bird is the BIRD 2 binary for LBNodes > 1 (default: FindBird).
	Bird string
	// Log receives progress lines (nil: discarded).
	Log io.Writer
}

// Node is one namespace of the lab.
type Node struct {
	Name  string     `json:"name"`  // e.g. "c1", "r2", "router"
	Netns string     `json:"netns"` // e.g. "lbdlab-demo-c1"
	Addr4 netip.Addr `json:"addr4,omitzero"`
	Addr6 netip.Addr `json:"addr6,omitzero"`
	Pid   int        `json:"pid,omitempty"` // its server process (reals)
}

// State is a running lab, saved in StateRoot/NAME/lab.json.
type State struct {
	Name       string `json:"name"`
	Binary     string `json:"binary"`
	RealLink   string `json:"real_link"`   // ipvlan | macvlan | veth
	LinkReason string `json:"link_reason"` // why that one
	Decap      string `json:"decap"`       // kernel | bpf
	DecapInfo  string `json:"decap_info"`
	Router     Node   `json:"router"`
	NodeNS     Node   `json:"node"`
	Clients    []Node `json:"clients"`
	Reals      []Node `json:"reals"`
	HostIf     string `json:"host_interface"`
	GatewayMAC string `json:"gateway_mac"`
	API        string `json:"api"`
	TokenFile  string `json:"token_file"`
	LBDState   string `json:"lbd_state_dir"`
	PinDir     string `json:"pin_dir"`
	LBDPid     int    `json:"lbd_pid,omitempty"`
	// Nodes are the lbd nodes; the fields above are node 0's, kept for
	// the single-node lab's users.
	Nodes      []LBNode `json:"nodes,omitempty"`
	BirdPid    int      `json:"bird_pid,omitempty"`
	BirdSocket string   `json:"bird_socket,omitempty"`
}

// Lab is a lab brought up (or found) by this process.
type Lab struct {
	State
	cfg  Config
	cmds map[int]*exec.Cmd // children this process started, to reap
}

var nameRE = regexp.MustCompile(`^[a-z0-9]{1,10}$`)

func prefix(name string) string { return "lbdlab-" + name + "-" }

// Dir is the lab's state directory.
func Dir(name string) string { return filepath.Join(StateRoot, name) }

func (c *Config) defaults() error {
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("lab name %q: use 1 to 10 lowercase letters or digits", c.Name)
	}
	if c.Clients == 0 {
		c.Clients = 2
	}
	if c.Reals == 0 {
		c.Reals = 3
	}
	if c.Clients < 1 || c.Clients > 50 || c.Reals < 1 || c.Reals > 50 {
		return fmt.Errorf("clients %d, reals %d: each must be between 1 and 50", c.Clients, c.Reals)
	}
	if c.LBNodes == 0 {
		c.LBNodes = 1
	}
	if c.LBNodes < 1 || c.LBNodes > MaxLBNodes {
		return fmt.Errorf("%d lbd nodes: want 1 to %d", c.LBNodes, MaxLBNodes)
	}
	if c.RealLink == "" {
		c.RealLink = LinkAuto
	}
	if c.Decap == "" {
		c.Decap = realsetup.DecapAuto
	}
	if c.API == "" {
		c.API = "127.0.0.1:8080"
	}
	if c.Binary == "" {
		bin, err := os.Executable()
		if err != nil {
			return err
		}
		c.Binary = bin
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return nil
}

func (l *Lab) logf(format string, a ...any) { fmt.Fprintf(l.cfg.Log, format+"\n", a...) }

// Up builds the lab, sets up the reals, starts their servers and (unless
// NoLBD) lbd serve. On failure it tears down what it built.
func Up(cfg Config) (l *Lab, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	p := prefix(cfg.Name)
	if existing := listNetns(p); len(existing) > 0 {
		return nil, fmt.Errorf("lab %q exists (%v): remove it first with `%s lab down --name %s`", cfg.Name, existing, cfg.Binary, cfg.Name)
	}
	l = &Lab{cfg: cfg, cmds: map[int]*exec.Cmd{}}
	l.Name, l.Binary, l.API = cfg.Name, cfg.Binary, cfg.API
	l.HostIf = "lbl" + cfg.Name
	l.LBDState = filepath.Join(Dir(cfg.Name), "lbd")
	l.TokenFile = filepath.Join(l.LBDState, "token")
	l.PinDir = "/sys/fs/bpf/" + p + "lbd"
	defer func() {
		if err != nil {
			_ = l.Down()
			l = nil
		}
	}()
	if err := os.MkdirAll(l.LBDState, 0o700); err != nil {
		return l, err
	}
	if err := l.planNodes(); err != nil {
		return l, err
	}
	if err := l.build(); err != nil {
		return l, err
	}
	if err := l.setupReals(); err != nil {
		return l, err
	}
	if l.multi() {
		if err := l.startBird(); err != nil {
			return l, err
		}
	}
	if err := l.save(); err != nil {
		return l, err
	}
	if !cfg.NoLBD {
		for i := range l.Nodes {
			if err := l.StartNode(i); err != nil {
				return l, err
			}
		}
	}
	return l, l.save()
}

// selfBinary is the path of this lbd binary, for hints to run it.
func selfBinary() string {
	if bin, err := os.Executable(); err == nil {
		return bin
	}
	return "lbd"
}

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

// StopReal kills real i's server.
func (l *Lab) StopReal(i int) error {
	r := &l.Reals[i]
	if r.Pid == 0 {
		return nil
	}
	pid := r.Pid
	r.Pid = 0
	if cmd := l.cmds[pid]; cmd != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		delete(l.cmds, pid)
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 200 {
		if !alive(pid) || isZombie(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("real server %s (pid %d) still running 10 s after SIGKILL", r.Name, pid)
}

// command builds a command running the lbd binary with args.
func (l *Lab) command(args ...string) *exec.Cmd {
	cmd := exec.Command(l.Binary, args...)
	cmd.Env = append(os.Environ(), l.cfg.Env...)
	return cmd
}

// RunIn runs lbd with args in the named namespace and returns its
// standard output (and standard error on failure).
func (l *Lab) RunIn(ns string, args ...string) ([]byte, error) {
	cmd := l.command(args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := startIn(ns, cmd); err != nil {
		return nil, err
	}
	if err := cmd.Wait(); err != nil {
		return []byte(stdout.String() + stderr.String()), err
	}
	return []byte(stdout.String()), nil
}

// spawn starts a long-running lbd child in ns, detached from our session,
// its output appended to logName in the lab's directory.
func (l *Lab) spawn(ns, logName string, args ...string) (*exec.Cmd, error) {
	cmd := l.command(args...)
	return cmd, l.startLogged(ns, logName, cmd)
}

// startLogged starts cmd in ns, detached from our session, its output
// appended to logName in the lab's directory.
func (l *Lab) startLogged(ns, logName string, cmd *exec.Cmd) error {
	logf, err := os.OpenFile(filepath.Join(Dir(l.Name), logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := startIn(ns, cmd); err != nil {
		return fmt.Errorf("start %s: %w", strings.Join(cmd.Args, " "), err)
	}
	if l.cmds == nil {
		l.cmds = map[int]*exec.Cmd{}
	}
	l.cmds[cmd.Process.Pid] = cmd
	return nil
}

// StartReal starts real i's server (a re-executed lbd) and waits until it
// answers.
func (l *Lab) StartReal(i int) error {
	r := &l.Reals[i]
	cmd, err := l.spawn(r.Netns, r.Name+".log", "lab", "real-server", "--name", r.Name, "--id", prefix(l.Name)+r.Name)
	if err != nil {
		return err
	}
	r.Pid = cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := InNetns(r.Netns, func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(r.Addr4.String(), strconv.Itoa(WhoPort)), time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("real server %s does not answer after 10 s: %w (log: %s)", r.Name, err, filepath.Join(Dir(l.Name), r.Name+".log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// StartLBD starts `lbd serve` on the lab's host interface and waits until
// its API is ready.
func (l *Lab) StartLBD(extra ...string) error {
	return l.StartNode(0, extra...)
}

// StartNode starts lbd node i's `lbd serve` (with more than one node:
// announcing over BGP to the router) and waits until its API is ready.
func (l *Lab) StartNode(i int, extra ...string) error {
	n := &l.Nodes[i]
	args := []string{"serve", "--interface", n.HostIf, "--xdp-mode", "native", "--gateway-mac", n.GatewayMAC,
		"--listen", n.API, "--state-dir", n.StateDir, "--token-file", n.TokenFile, "--pin-dir", n.PinDir,
		"--max-vips", "16", "--max-reals", "64", "--max-flows", "65536"}
	if ap, err := netip.ParseAddrPort(n.API); err == nil && !ap.Addr().IsLoopback() {
		// a lab API on another address is the operator's choice (lbd
		// refuses plain HTTP off loopback without this)
		args = append(args, "--insecure-listen")
	}
	if l.multi() {
		// The nodes share a namespace: their speakers dial out and do
		// not listen (BIRD waits for them, passive).
		args = append(args, "--bgp-as", strconv.Itoa(NodeAS), "--bgp-peer", fmt.Sprintf("%s,%d", n.RouterAddr, RouterAS), "--bgp-listen-port", "0")
	}
	cmd, err := l.spawn("", n.Log, append(args, extra...)...)
	if err != nil {
		return err
	}
	n.Pid = cmd.Process.Pid
	if i == 0 {
		l.LBDPid = n.Pid
	}
	deadline := time.Now().Add(15 * time.Second)
	exited := make(chan struct{})
	go func() {
		// Reap it if it dies early, so that we notice.
		_, _ = cmd.Process.Wait()
		close(exited)
	}()
	l.cmds[cmd.Process.Pid] = nil // reaped by the goroutine above
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(Dir(l.Name), n.Log))
			return fmt.Errorf("lbd serve (node %d) exited at start:\n%s", i, tail(string(log), 20))
		default:
		}
		resp, err := httpGet("http://" + n.API + "/readyz")
		if err == nil && resp == 200 {
			l.logf("lbd serve (node %d): XDP on %s (gateway %s), API http://%s, token %s", i, n.HostIf, n.GatewayMAC, n.API, n.TokenFile)
			return l.save()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("lbd serve (node %d) not ready after 15 s (log: %s)", i, filepath.Join(Dir(l.Name), n.Log))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StopLBD sends sig to lbd serve (node 0) and waits (10 s) for it to exit.
func (l *Lab) StopLBD(sig syscall.Signal) error { return l.StopNode(0, sig) }

// StopNode sends sig to node i's lbd serve and waits (10 s) for it to exit.
func (l *Lab) StopNode(i int, sig syscall.Signal) error {
	n := &l.Nodes[i]
	if n.Pid == 0 {
		return nil
	}
	pid := n.Pid
	n.Pid = 0
	if i == 0 {
		l.LBDPid = 0
	}
	if err := syscall.Kill(pid, sig); err != nil {
		return nil // gone already
	}
	for range 200 {
		if !alive(pid) || isZombie(pid) {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("lbd serve (pid %d) still running 10 s after %v", pid, sig)
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i > 0 && i+2 < len(s) {
		return s[i+2] == 'Z'
	}
	return false
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (l *Lab) save() error {
	data, _ := json.MarshalIndent(l.State, "", "  ")
	return os.WriteFile(filepath.Join(Dir(l.Name), "lab.json"), append(data, '\n'), 0o600)
}

// Load finds a running lab by name.
func Load(name string) (*Lab, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("lab name %q: use 1 to 10 lowercase letters or digits", name)
	}
	data, err := os.ReadFile(filepath.Join(Dir(name), "lab.json"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("no lab %q here (no %s): bring it up with `%s lab up --name %s`", name, filepath.Join(Dir(name), "lab.json"), selfBinary(), name)
		}
		return nil, err
	}
	l := &Lab{cmds: map[int]*exec.Cmd{}}
	if err := json.Unmarshal(data, &l.State); err != nil {
		return nil, fmt.Errorf("lab state %s: %w", name, err)
	}
	l.cfg = Config{Name: name, Binary: l.Binary, API: l.API, Log: io.Discard, LBNodes: max(len(l.Nodes), 1)}
	if len(l.Nodes) == 0 { // saved by an lbd without nodes
		l.Nodes = []LBNode{{HostIf: l.HostIf, RouterIf: "lb0", Addr: netip.MustParseAddr("10.112.0.2"), RouterAddr: netip.MustParseAddr("10.112.0.1"),
			GatewayMAC: l.GatewayMAC, API: l.API, TokenFile: l.TokenFile, StateDir: l.LBDState, PinDir: l.PinDir, Log: "lbd.log", Pid: l.LBDPid}}
	}
	return l, nil
}

// Down tears the lab down: stops its processes, deletes its namespaces,
// interface, pins and state. It works from the names alone, so it also
// cleans up after a crash, and running it twice is harmless.
func (l *Lab) Down() error { return Down(l.Name, l.cmds) }

// Down tears down the lab called name (see Lab.Down). cmds are children
// the caller started, reaped after they are killed.
func Down(name string, cmds map[int]*exec.Cmd) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("lab name %q: use 1 to 10 lowercase letters or digits", name)
	}
	p := prefix(name)
	var errs []error
	// 1. Processes: lbd serve and the real servers carry the prefix in an
	// argument (pin directory, --id), BIRD its configuration's path.
	// SIGTERM, then SIGKILL.
	pids := append(processes(p), processes(birdMarker(name))...)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	for range 100 {
		left := 0
		for _, pid := range pids {
			if alive(pid) && !isZombie(pid) {
				left++
			}
		}
		if left == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids {
		if alive(pid) && !isZombie(pid) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for pid, c := range cmds {
		if c != nil {
			_ = c.Wait()
		}
		delete(cmds, pid)
	}
	// 2. lbd's interface (its router-side peer goes with it), then the
	// XDP pins and lock files lbd serve leaves for a hitless restart.
	for i := range MaxLBNodes {
		hostIf := hostIf(name, i)
		if link, err := netlink.LinkByName(hostIf); err == nil {
			if err := netlink.LinkDel(link); err != nil {
				errs = append(errs, fmt.Errorf("delete %s: %w", hostIf, err))
			}
		}
		pinDir := pinDir(name, i)
		if _, err := os.Stat(pinDir); err == nil {
			if err := xdp.Cleanup(pinDir); err != nil {
				errs = append(errs, err)
			}
		}
	}
	xdp.RemoveStaleLocks() // those of the killed lbd serve
	// 3. Namespaces (with every link in them), the reals' pins, state.
	for _, ns := range listNetns(p) {
		if err := deleteNetns(ns); err != nil {
			errs = append(errs, err)
		}
	}
	pins, _ := filepath.Glob("/sys/fs/bpf/" + p + "*")
	for _, d := range pins {
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove pins %s: %w", d, err))
		}
	}
	if err := os.RemoveAll(Dir(name)); err != nil {
		errs = append(errs, err)
	}
	if left := Leftovers(name); len(left) > 0 {
		errs = append(errs, fmt.Errorf("lab %s is not down; left behind: %s", name, strings.Join(left, "; ")))
	}
	return errors.Join(errs...)
}

// Leftovers lists what of the lab called name is still there: processes,
// namespaces (and their mounts, reachable or not), lbd's interfaces, pins
// and the state directory. Empty once the lab is down.
func Leftovers(name string) []string {
	p := prefix(name)
	var left []string
	if pids := append(processes(p), processes(birdMarker(name))...); len(pids) > 0 {
		var live []string
		for _, pid := range pids {
			if alive(pid) && !isZombie(pid) {
				live = append(live, strconv.Itoa(pid))
			}
		}
		if len(live) > 0 {
			left = append(left, "processes "+strings.Join(live, ", "))
		}
	}
	if ns := listNetns(p); len(ns) > 0 {
		left = append(left, "namespaces "+strings.Join(ns, ", "))
	}
	if m := netnsMounts(p); len(m) > 0 {
		left = append(left, "mounts "+strings.Join(m, ", "))
	}
	var links []string
	for i := range MaxLBNodes {
		if _, err := netlink.LinkByName(hostIf(name, i)); err == nil {
			links = append(links, hostIf(name, i))
		}
	}
	if len(links) > 0 {
		left = append(left, "interfaces "+strings.Join(links, ", "))
	}
	if pins, _ := filepath.Glob("/sys/fs/bpf/" + p + "*"); len(pins) > 0 {
		left = append(left, "pins "+strings.Join(pins, ", "))
	}
	if _, err := os.Stat(Dir(name)); err == nil {
		left = append(left, "state "+Dir(name))
	}
	return left
}
