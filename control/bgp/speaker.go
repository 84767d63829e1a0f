// Package bgp announces this node's VIPs to its routers over BGP, so that
// routers spread a VIP's traffic over every lbd node that serves it (ECMP)
// and stop sending it to a node that withdraws.
//
// The BGP protocol itself is GoBGP's (github.com/osrg/gobgp/v4), embedded
// as a library: Speaker wraps one GoBGP server with the few operations lbd
// needs (peers from the configuration, announce and withdraw host routes,
// session state). Announcer decides what to announce from the
// controller's state: a VIP address while at least one of its VIPs can be
// served, nothing while the node is drained or its datapath is not ready.
//
// The package owns the BGP sessions and the announced routes; it never
// touches the datapath or the desired state.
package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// DefaultPort is BGP's TCP port.
const DefaultPort = 179

// Peer is one BGP neighbour (usually a top-of-rack or edge router).
type Peer struct {
	Address netip.Addr
	ASN     uint32
	// Password enables TCP MD5 signatures (RFC 2385) on the session.
	Password string
	// Port is the peer's TCP port (0: 179).
	Port uint16
	// Multihop is the TTL of an eBGP session to a peer that is not
	// directly connected (0: directly connected, TTL 1).
	Multihop uint8
	// Passive waits for the peer to connect instead of dialling it.
	Passive bool
	// LocalAddress is the source address of the session (default: the
	// kernel's choice for the peer's address).
	LocalAddress netip.Addr
}

// Config is a speaker's configuration.
type Config struct {
	ASN      uint32
	RouterID netip.Addr // an IPv4 address, unique among the routers
	// ListenPort is where peers may connect; 0 does not listen (the
	// speaker only dials out, and passive peers are refused).
	ListenPort uint16
	// ListenAddresses restrict the listener (default: all addresses).
	ListenAddresses []netip.Addr
	Peers           []Peer
	// NextHopV4 and NextHopV6 are the next hops of announced IPv4 and
	// IPv6 prefixes: this node's address on the network the routers
	// forward VIP traffic over. A prefix of a family without a next hop
	// cannot be announced.
	NextHopV4, NextHopV6 netip.Addr
	// Communities are attached to every announced route (RFC 1997 values,
	// see ParseCommunity).
	Communities []uint32
	// HoldTime is proposed to the peers (the session uses the smaller of
	// the two); keepalives go every third of it. Default 9 s: a node that
	// vanishes without closing its sessions (power loss) is withdrawn
	// within that time. A killed lbd closes its sessions at once.
	HoldTime time.Duration
	// ConnectRetry is the pause between attempts to reach a peer
	// (default 5 s).
	ConnectRetry time.Duration
	// OnPeerState, if set, is called when a session changes state.
	OnPeerState func(addr netip.Addr, state string)
}

// Defaults of the timers.
const (
	DefaultHoldTime     = 9 * time.Second
	DefaultConnectRetry = 5 * time.Second
)

// Validate checks the configuration and says what to fix.
func (c *Config) Validate() error {
	if c.ASN == 0 {
		return errors.New("BGP: no local AS: set bgp.asn (--bgp-as)")
	}
	if !c.RouterID.Is4() {
		return fmt.Errorf("BGP: router id %q: want an IPv4 address unique among the routers (bgp.router_id, --bgp-router-id)", c.RouterID)
	}
	if len(c.Peers) == 0 {
		return errors.New("BGP: no peers: add one with bgp.peers (--bgp-peer ADDR,AS[,PASSWORD])")
	}
	seen := map[netip.Addr]bool{}
	for _, p := range c.Peers {
		if !p.Address.IsValid() {
			return errors.New("BGP: a peer has no address")
		}
		if seen[p.Address] {
			return fmt.Errorf("BGP: peer %s is listed twice", p.Address)
		}
		seen[p.Address] = true
		if p.ASN == 0 {
			return fmt.Errorf("BGP: peer %s has no AS", p.Address)
		}
		if p.Passive && c.ListenPort == 0 {
			return fmt.Errorf("BGP: peer %s is passive (it connects to us), but the speaker does not listen: set bgp.listen_port", p.Address)
		}
	}
	if c.NextHopV4.IsValid() && !c.NextHopV4.Is4() {
		return fmt.Errorf("BGP: IPv4 next hop %s is not an IPv4 address", c.NextHopV4)
	}
	if c.NextHopV6.IsValid() && !c.NextHopV6.Is6() {
		return fmt.Errorf("BGP: IPv6 next hop %s is not an IPv6 address", c.NextHopV6)
	}
	if c.HoldTime != 0 && c.HoldTime < 3*time.Second {
		return fmt.Errorf("BGP: hold time %s: BGP allows 0 or at least 3s", c.HoldTime)
	}
	return nil
}

// ParseCommunity parses a community as "AS:VALUE" (each 0..65535) or one
// of the well-known names no-export, no-advertise, no-export-subconfed,
// blackhole.
func ParseCommunity(s string) (uint32, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "no-export":
		return 0xFFFFFF01, nil
	case "no-advertise":
		return 0xFFFFFF02, nil
	case "no-export-subconfed":
		return 0xFFFFFF03, nil
	case "blackhole":
		return 0xFFFF029A, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: want AS:VALUE with both parts 0..65535 (e.g. 65000:100), or no-export", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

// FormatCommunity is ParseCommunity's inverse for AS:VALUE communities.
func FormatCommunity(c uint32) string {
	return strconv.Itoa(int(c>>16)) + ":" + strconv.Itoa(int(c&0xffff))
}

// Speaker is one embedded GoBGP server with its peers. It is safe for
// concurrent use.
type Speaker struct {
	srv    *server.BgpServer
	cfg    Config
	log    *slog.Logger
	cancel context.CancelFunc

	mu        sync.Mutex
	announced map[netip.Prefix]bool
	closed    bool
}

// Start starts a BGP speaker with cfg's peers. Sessions come up in the
// background; Peers reports their state.
func Start(cfg Config, log *slog.Logger) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.HoldTime == 0 {
		cfg.HoldTime = DefaultHoldTime
	}
	if cfg.ConnectRetry == 0 {
		cfg.ConnectRetry = DefaultConnectRetry
	}
	// GoBGP logs every session event at info; ours are enough at info.
	level := new(slog.LevelVar)
	level.Set(slog.LevelWarn)
	if log.Enabled(context.Background(), slog.LevelDebug) {
		level.Set(slog.LevelDebug)
	}
	srv := server.NewBgpServer(server.LoggerOption(log.With("component", "gobgp"), level))
	go srv.Serve()
	s := &Speaker{srv: srv, cfg: cfg, log: log, announced: map[netip.Prefix]bool{}}

	port := int32(cfg.ListenPort)
	if port == 0 {
		port = -1 // GoBGP: negative does not listen
	}
	global := &api.Global{Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: port}
	for _, a := range cfg.ListenAddresses {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: global}); err != nil {
		cancel()
		srv.Stop()
		return nil, fmt.Errorf("start BGP (AS %d, router id %s, port %d): %w", cfg.ASN, cfg.RouterID, cfg.ListenPort, err)
	}
	err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(e *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if e.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			state := strings.ToLower(strings.TrimPrefix(e.Peer.State.SessionState.String(), "BGP_FSM_"))
			log.Info("BGP session", "peer", e.Peer.Conf.NeighborAddress, "state", state, "reason", e.Peer.State.DisconnectMessage)
			if cfg.OnPeerState != nil {
				cfg.OnPeerState(e.Peer.Conf.NeighborAddress, state)
			}
		},
	}, server.WatchPeer())
	if err != nil {
		s.stop()
		return nil, fmt.Errorf("watch BGP sessions: %w", err)
	}
	for _, p := range cfg.Peers {
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			s.stop()
			return nil, fmt.Errorf("add BGP peer %s (AS %d): %w", p.Address, p.ASN, err)
		}
	}
	log.Info("BGP speaker started", "asn", cfg.ASN, "router_id", cfg.RouterID, "listen_port", cfg.ListenPort, "peers", len(cfg.Peers))
	return s, nil
}

func (s *Speaker) apiPeer(p Peer) *api.Peer {
	hold := uint64(s.cfg.HoldTime / time.Second)
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Transport: &api.Transport{
			RemotePort:  uint32(p.Port),
			PassiveMode: p.Passive,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: hold, KeepaliveInterval: max(hold/3, 1),
			ConnectRetry: uint64(max(s.cfg.ConnectRetry/time.Second, 1)), IdleHoldTimeAfterReset: 1,
		}},
		// Both families on every session: an IPv6 VIP may be announced
		// over an IPv4 session and the other way round.
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}, Enabled: true}},
		},
	}
	if p.Port == 0 {
		ap.Transport.RemotePort = DefaultPort
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.Multihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	return ap
}

// HostPrefix is the /32 or /128 of an address: what a VIP is announced as.
func HostPrefix(a netip.Addr) netip.Prefix {
	return netip.PrefixFrom(a, a.BitLen())
}

// path builds the GoBGP path of a prefix (withdraw: without attributes).
func (s *Speaker) path(p netip.Prefix, withdraw bool) (*apiutil.Path, error) {
	nlri, err := bgppkt.NewIPAddrPrefix(p)
	if err != nil {
		return nil, fmt.Errorf("prefix %s: %w", p, err)
	}
	family := bgppkt.RF_IPv4_UC
	nh := s.cfg.NextHopV4
	if p.Addr().Is6() {
		family, nh = bgppkt.RF_IPv6_UC, s.cfg.NextHopV6
	}
	path := &apiutil.Path{Family: family, Nlri: nlri, Withdrawal: withdraw}
	if withdraw {
		return path, nil
	}
	if !nh.IsValid() {
		fam := "v4"
		if p.Addr().Is6() {
			fam = "v6"
		}
		return nil, fmt.Errorf("announce %s: no IPv%s next hop: set bgp.next_hop_%s (--bgp-next-hop), or give the interface an IPv%s address", p, fam[1:], fam, fam[1:])
	}
	path.Attrs = []bgppkt.PathAttributeInterface{bgppkt.NewPathAttributeOrigin(bgppkt.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if family == bgppkt.RF_IPv4_UC {
		a, err := bgppkt.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		path.Attrs = append(path.Attrs, a)
	} else {
		a, err := bgppkt.NewPathAttributeMpReachNLRI(family, []bgppkt.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		path.Attrs = append(path.Attrs, a)
	}
	if len(s.cfg.Communities) > 0 {
		path.Attrs = append(path.Attrs, bgppkt.NewPathAttributeCommunities(slices.Clone(s.cfg.Communities)))
	}
	return path, nil
}

// ErrClosed is returned by a speaker that was closed.
var ErrClosed = errors.New("BGP speaker is closed")

// Announce advertises p to every peer (now, and to peers that connect
// later). Announcing an announced prefix does nothing.
func (s *Speaker) Announce(p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.announced[p] {
		return nil
	}
	path, err := s.path(p, false)
	if err != nil {
		return err
	}
	if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("announce %s: %w", p, err)
	}
	s.announced[p] = true
	return nil
}

// Withdraw takes p back from every peer. Withdrawing a prefix that is not
// announced does nothing.
func (s *Speaker) Withdraw(p netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if !s.announced[p] {
		return nil
	}
	path, err := s.path(p, true)
	if err != nil {
		return err
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("withdraw %s: %w", p, err)
	}
	delete(s.announced, p)
	return nil
}

// Announced returns the announced prefixes, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.SortedFunc(maps.Keys(s.announced), comparePrefixes)
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

// PeerStatus is the state of one session.
type PeerStatus struct {
	Address netip.Addr
	ASN     uint32
	// State is the session's FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string
	// Since is when the session was established (zero when it is not).
	Since time.Time
	// RoutesSent and RoutesReceived count the routes in the session's
	// Adj-RIB-Out and Adj-RIB-In.
	RoutesSent, RoutesReceived uint64
	// LastError says why the session last went down, if it did.
	LastError string
}

// Established reports whether the session is up.
func (p PeerStatus) Established() bool { return p.State == "established" }

// Peers returns the state of every configured peer, by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerStatus, error) {
	var out []PeerStatus
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := PeerStatus{}
		if p.Conf != nil {
			st.Address, _ = netip.ParseAddr(p.Conf.NeighborAddress)
			st.ASN = p.Conf.PeerAsn
		}
		if p.State != nil {
			st.State = sessionState(p.State.SessionState)
			st.LastError = p.State.DisconnectMessage
		}
		if st.Established() && p.Timers != nil && p.Timers.State != nil && p.Timers.State.Uptime != nil {
			st.Since = p.Timers.State.Uptime.AsTime()
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				st.RoutesSent += af.State.Advertised
				st.RoutesReceived += af.State.Received
			}
		}
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("list BGP peers: %w", err)
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return a.Address.Compare(b.Address) })
	return out, nil
}

func sessionState(s api.PeerState_SessionState) string {
	name := strings.TrimPrefix(s.String(), "SESSION_STATE_")
	if name == "UNSPECIFIED" {
		return "idle"
	}
	return strings.ToLower(name)
}

// Close withdraws every announced route, waits (up to ctx) until the
// withdrawals have left for the established peers, then ends every
// session with a NOTIFICATION (cease) and stops the server. The routers
// stop sending the VIPs to this node either way; the explicit withdrawal
// first lets them do so without waiting for the session to close.
func (s *Speaker) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	n := len(s.announced)
	var err error
	if n > 0 {
		err = s.srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true})
		clear(s.announced)
	}
	s.mu.Unlock()
	if n > 0 && err == nil {
		s.waitFlushed(ctx)
	}
	s.stop()
	s.log.Info("BGP speaker stopped", "withdrawn", n)
	if err != nil {
		return fmt.Errorf("withdraw all routes: %w", err)
	}
	return nil
}

// waitFlushed waits until no established peer has routes of ours left
// in its Adj-RIB-Out, or ctx ends.
func (s *Speaker) waitFlushed(ctx context.Context) {
	for {
		peers, err := s.Peers(ctx)
		if err != nil {
			return
		}
		left := false
		for _, p := range peers {
			if p.Established() && p.RoutesSent > 0 {
				left = true
			}
		}
		if !left {
			// The counts change when the withdrawals are queued; give
			// the session a moment to write them out.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *Speaker) stop() {
	if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{}); err != nil {
		s.log.Debug("stop BGP", "err", err)
	}
	s.cancel()
}
