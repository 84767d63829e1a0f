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
//
// The files, by job: lab.go (configuration, Up), topology.go (namespaces,
// links, addresses, routes), reals.go (linking and setting up the reals),
// nodes.go (the lbd nodes and BIRD), process.go (starting and stopping
// the lab's processes), state.go (the state file), teardown.go (Down,
// Leftovers), netns.go (namespace helpers), traffic.go (test traffic),
// realserver.go (the reals' server).
package lab

import (
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"

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
