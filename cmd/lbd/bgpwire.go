package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"
	"github.com/vishvananda/netlink"

	"github.com/lbd-dev/lbd/api"
	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/control/bgp"
)

// bgpConfig is the bgp: section of the configuration. BGP is off unless
// it names a local AS or a peer.
type bgpConfig struct {
	ASN uint32 `yaml:"asn"`
	// RouterID defaults to the interface's first IPv4 address.
	RouterID string `yaml:"router_id"`
	// ListenPort is where peers may connect (default 179; 0: only dial out).
	ListenPort uint16 `yaml:"listen_port"`
	// NextHopV4/V6 default to the interface's addresses.
	NextHopV4   string          `yaml:"next_hop_v4"`
	NextHopV6   string          `yaml:"next_hop_v6"`
	Communities []string        `yaml:"communities"`
	HoldTime    time.Duration   `yaml:"hold_time"`
	Peers       []bgpPeerConfig `yaml:"peers"`

	// Set by flags only: --bgp-peer replaces the file's peers,
	// --bgp-next-hop sets the next hop of its address's family.
	peerFlags    []string
	nextHopFlags []string
}

type bgpPeerConfig struct {
	Address      string `yaml:"address"`
	ASN          uint32 `yaml:"asn"`
	Password     string `yaml:"password"`
	Port         uint16 `yaml:"port"`
	Multihop     uint8  `yaml:"multihop"`
	Passive      bool   `yaml:"passive"`
	LocalAddress string `yaml:"local_address"`
}

func defaultBGPConfig() bgpConfig { return bgpConfig{ListenPort: bgp.DefaultPort} }

func (c *bgpConfig) bindFlags(fs *pflag.FlagSet) {
	fs.Uint32Var(&c.ASN, "bgp-as", c.ASN, "announce the VIPs over BGP from this local AS (BGP is off without it or a peer)")
	fs.StringVar(&c.RouterID, "bgp-router-id", c.RouterID, "BGP router id, an IPv4 address (default: the interface's first IPv4 address)")
	fs.StringArrayVar(&c.peerFlags, "bgp-peer", nil, "BGP peer as ADDR,AS[,PASSWORD] (repeatable; replaces the config file's peers)")
	fs.Uint16Var(&c.ListenPort, "bgp-listen-port", c.ListenPort, "TCP port for BGP peers to connect to (0: do not listen, only dial out)")
	fs.StringArrayVar(&c.nextHopFlags, "bgp-next-hop", nil, "next hop of announced VIPs, one per address family (default: the interface's address)")
}

func (c *bgpConfig) enabled() bool {
	return c.ASN != 0 || len(c.Peers) > 0 || len(c.peerFlags) > 0
}

// speakerConfig turns the section into the speaker's configuration; the
// router id and next hops the section leaves empty stay unset (the
// daemon fills them in from the interface).
func (c *bgpConfig) speakerConfig() (bgp.Config, error) {
	sc := bgp.Config{ASN: c.ASN, ListenPort: c.ListenPort, HoldTime: c.HoldTime}
	var err error
	if c.RouterID != "" {
		if sc.RouterID, err = netip.ParseAddr(c.RouterID); err != nil {
			return sc, fmt.Errorf("BGP router id %q: want an IPv4 address", c.RouterID)
		}
	}
	for _, s := range append([]string{c.NextHopV4, c.NextHopV6}, c.nextHopFlags...) {
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return sc, fmt.Errorf("BGP next hop %q: want an IP address", s)
		}
		if a.Is4() {
			sc.NextHopV4 = a
		} else {
			sc.NextHopV6 = a
		}
	}
	for _, s := range c.Communities {
		v, err := bgp.ParseCommunity(s)
		if err != nil {
			return sc, fmt.Errorf("BGP: %w", err)
		}
		sc.Communities = append(sc.Communities, v)
	}
	peers := c.Peers
	if len(c.peerFlags) > 0 {
		peers = nil
		for _, f := range c.peerFlags {
			p, err := parsePeerFlag(f)
			if err != nil {
				return sc, err
			}
			peers = append(peers, p)
		}
	}
	for _, p := range peers {
		bp := bgp.Peer{ASN: p.ASN, Password: p.Password, Port: p.Port, Multihop: p.Multihop, Passive: p.Passive}
		if bp.Address, err = netip.ParseAddr(p.Address); err != nil {
			return sc, fmt.Errorf("BGP peer address %q: want an IP address", p.Address)
		}
		if p.LocalAddress != "" {
			if bp.LocalAddress, err = netip.ParseAddr(p.LocalAddress); err != nil {
				return sc, fmt.Errorf("BGP peer %s local address %q: want an IP address", p.Address, p.LocalAddress)
			}
		}
		sc.Peers = append(sc.Peers, bp)
	}
	return sc, nil
}

// parsePeerFlag parses --bgp-peer ADDR,AS[,PASSWORD].
func parsePeerFlag(s string) (bgpPeerConfig, error) {
	parts := strings.SplitN(s, ",", 3)
	if len(parts) < 2 {
		return bgpPeerConfig{}, fmt.Errorf("--bgp-peer %q: want ADDR,AS[,PASSWORD], e.g. 192.0.2.254,65000", s)
	}
	as, err := strconv.ParseUint(strings.TrimSpace(parts[1]), 10, 32)
	if err != nil || as == 0 {
		return bgpPeerConfig{}, fmt.Errorf("--bgp-peer %q: AS %q must be a number from 1 to 4294967295", s, parts[1])
	}
	p := bgpPeerConfig{Address: strings.TrimSpace(parts[0]), ASN: uint32(as)}
	if len(parts) == 3 {
		p.Password = parts[2]
	}
	return p, nil
}

// validate checks what can be checked without the interface.
func (c *bgpConfig) validate() error {
	if !c.enabled() {
		return nil
	}
	sc, err := c.speakerConfig()
	if err != nil {
		return err
	}
	if !sc.RouterID.IsValid() {
		sc.RouterID = netip.MustParseAddr("0.0.0.1") // filled in from the interface later
	}
	return sc.Validate()
}

// bgpNode is the daemon's BGP: a speaker and the announcer driving it.
type bgpNode struct {
	cfg    bgp.Config
	sp     *bgp.Speaker
	ann    *bgp.Announcer
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	log    *slog.Logger
}

// startBGP starts announcing ctl's VIPs when BGP is configured (nil
// otherwise). Nothing is announced while notReady holds an error.
func startBGP(ctx context.Context, cfg serveConfig, ctl *control.Controller, notReady *atomic.Pointer[error], log *slog.Logger) (*bgpNode, error) {
	if !cfg.BGP.enabled() {
		return nil, nil
	}
	sc, err := cfg.BGP.speakerConfig()
	if err != nil {
		return nil, err
	}
	v4, v6 := interfaceAddrs(cfg.Interface)
	if !sc.RouterID.IsValid() {
		if !v4.IsValid() {
			return nil, fmt.Errorf("BGP: no router id and interface %s has no IPv4 address to take it from: set bgp.router_id (--bgp-router-id)", cfg.Interface)
		}
		sc.RouterID = v4
	}
	if !sc.NextHopV4.IsValid() {
		sc.NextHopV4 = v4
	}
	if !sc.NextHopV6.IsValid() {
		sc.NextHopV6 = v6
	}
	sc.OnPeerState = func(a netip.Addr, state string) {
		ctl.Publish(control.Event{Type: "bgp_session", State: state, Reason: "peer " + a.String()})
	}
	log = log.With("component", "bgp")
	sp, err := bgp.Start(sc, log)
	if err != nil {
		return nil, err
	}
	ann, err := bgp.NewAnnouncer(ctl, sp, bgp.AnnouncerOptions{
		DrainFile: filepath.Join(cfg.StateDir, "drained"),
		Logger:    log,
		Ready: func() error {
			if p := notReady.Load(); p != nil {
				return *p
			}
			return nil
		},
	})
	if err != nil {
		_ = sp.Close(context.Background())
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &bgpNode{cfg: sc, sp: sp, ann: ann, cancel: cancel, done: make(chan struct{}), log: log}
	go func() {
		defer close(n.done)
		ann.Run(ctx)
	}()
	log.Info("announcing VIPs over BGP", "next_hop_v4", sc.NextHopV4, "next_hop_v6", sc.NextHopV6, "drained", ann.Drained())
	return n, nil
}

// interfaceAddrs returns the first global unicast IPv4 and IPv6 addresses
// of an interface (invalid when it has none).
func interfaceAddrs(ifname string) (v4, v6 netip.Addr) {
	link, err := netlink.LinkByName(ifname)
	if err != nil {
		return
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok || !a.IP.IsGlobalUnicast() {
			continue
		}
		ip = ip.Unmap()
		if ip.Is4() && !v4.IsValid() {
			v4 = ip
		}
		if ip.Is6() && !v6.IsValid() {
			v6 = ip
		}
	}
	return
}

// apiBGP is the node as the API sees it (a nil interface when BGP is off).
func (n *bgpNode) apiBGP() api.BGP {
	if n == nil {
		return nil
	}
	return n
}

// close withdraws every VIP and ends the sessions (graceful shutdown).
func (n *bgpNode) close() {
	if n == nil {
		return
	}
	n.once.Do(func() {
		n.cancel()
		<-n.done
		start := time.Now()
		n.ann.Shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := n.sp.Close(ctx); err != nil {
			n.log.Warn("BGP close", "err", err)
		}
		n.log.Info("withdrew every VIP and closed the BGP sessions", "took", time.Since(start))
	})
}

// Status implements api.BGP.
func (n *bgpNode) Status(ctx context.Context) (api.BGPStatusJSON, error) {
	st := api.BGPStatusJSON{Enabled: true, Drained: n.ann.Drained(), LocalAS: n.cfg.ASN, RouterID: n.cfg.RouterID.String(),
		Peers: []api.BGPPeerJSON{}, Prefixes: []api.BGPPrefixJSON{}}
	peers, err := n.sp.Peers(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return st, err
	}
	for _, p := range peers {
		j := api.BGPPeerJSON{Address: p.Address.String(), AS: p.ASN, State: p.State, RoutesSent: p.RoutesSent, RoutesReceived: p.RoutesReceived, LastError: p.LastError}
		if !p.Since.IsZero() {
			j.EstablishedAt = p.Since.UTC().Format(time.RFC3339)
			j.UptimeSeconds = int64(time.Since(p.Since) / time.Second)
		}
		st.Peers = append(st.Peers, j)
	}
	for _, p := range n.ann.Prefixes() {
		j := api.BGPPrefixJSON{Prefix: p.Prefix.String(), Announced: p.Announced, Reason: p.Reason, VIPs: p.VIPs}
		if !p.Since.IsZero() {
			j.Since = p.Since.UTC().Format(time.RFC3339Nano)
		}
		st.Prefixes = append(st.Prefixes, j)
	}
	return st, nil
}

// SetDrained implements api.BGP.
func (n *bgpNode) SetDrained(drained bool) error { return n.ann.SetDrained(drained) }
