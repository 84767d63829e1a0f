package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/hostaddr"
)

// Node is the daemon's BGP: a speaker and the announcer driving it.
type Node struct {
	cfg    Config
	sp     *Speaker
	ann    *Announcer
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	log    *slog.Logger
}

// NodeOptions are what StartNode needs besides the settings.
type NodeOptions struct {
	// Interface is the LB node's interface: the router id and next hops
	// the settings leave empty are its addresses (hostaddr.Of).
	Interface string
	// DrainFile keeps the drain state across restarts.
	DrainFile string
	// Ready, when it returns an error, withdraws everything.
	Ready  func() error
	Logger *slog.Logger
}

// StartNode starts announcing ctl's VIPs when s enables BGP, and returns
// nil otherwise (a nil *Node's Close does nothing). ctx bounds the
// announcer; Close withdraws and ends the sessions.
func StartNode(ctx context.Context, s Settings, ctl *control.Controller, opts NodeOptions) (*Node, error) {
	if !s.Enabled() {
		return nil, nil
	}
	sc, err := s.SpeakerConfig()
	if err != nil {
		return nil, err
	}
	// An interface without addresses leaves them invalid: the checks
	// below say what to set instead.
	v4, v6, _ := hostaddr.Of(opts.Interface)
	if !sc.RouterID.IsValid() {
		if !v4.IsValid() {
			return nil, fmt.Errorf("BGP: no router id and interface %s has no IPv4 address to take it from: set bgp.router_id (--bgp-router-id)", opts.Interface)
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
	log := opts.Logger.With("component", "bgp")
	sp, err := Start(sc, log)
	if err != nil {
		return nil, err
	}
	ann, err := NewAnnouncer(ctl, sp, AnnouncerOptions{DrainFile: opts.DrainFile, Logger: log, Ready: opts.Ready})
	if err != nil {
		_ = sp.Close(context.Background())
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	n := &Node{cfg: sc, sp: sp, ann: ann, cancel: cancel, done: make(chan struct{}), log: log}
	go func() {
		defer close(n.done)
		ann.Run(ctx)
	}()
	log.Info("announcing VIPs over BGP", "next_hop_v4", sc.NextHopV4, "next_hop_v6", sc.NextHopV6, "drained", ann.Drained())
	return n, nil
}

// Close withdraws every VIP and ends the sessions (graceful shutdown).
// It may be called more than once.
func (n *Node) Close() {
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

// NodeStatus is the node's BGP at one moment.
type NodeStatus struct {
	Drained  bool
	LocalAS  uint32
	RouterID netip.Addr
	Peers    []PeerStatus
	Prefixes []PrefixState
}

// Status returns the sessions, the VIP addresses and the drain state.
// With an error it still returns what it has besides the sessions.
func (n *Node) Status(ctx context.Context) (NodeStatus, error) {
	st := NodeStatus{Drained: n.ann.Drained(), LocalAS: n.cfg.ASN, RouterID: n.cfg.RouterID}
	peers, err := n.sp.Peers(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return st, err
	}
	st.Peers = peers
	st.Prefixes = n.ann.Prefixes()
	return st, nil
}

// Kick makes the announcer check now what it announces (e.g. after its
// Ready changed); nil-safe.
func (n *Node) Kick() {
	if n != nil {
		n.ann.Kick()
	}
}

// SetDrained withdraws every VIP (true) or announces again what the node
// can serve (false).
func (n *Node) SetDrained(drained bool) error { return n.ann.SetDrained(drained) }
