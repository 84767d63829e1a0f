package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// Routes is what the announcer needs of a speaker; *Speaker is one.
type Routes interface {
	Announce(p netip.Prefix) error
	Withdraw(p netip.Prefix) error
}

// Why a prefix is not announced.
const (
	ReasonAnnounced = ""
	ReasonDrained   = "node is drained (lbd drain --undo announces again)"
	ReasonNoReal    = "no VIP at this address has a healthy active real"
	ReasonShutdown  = "lbd is shutting down"
)

// PrefixState is one VIP address as the announcer sees it.
type PrefixState struct {
	Prefix    netip.Prefix
	Announced bool
	// Reason says why the prefix is not announced (empty when it is).
	Reason string
	// VIPs are the VIPs at this address (names as lb.VIPName).
	VIPs []string
	// Since is when the prefix was last announced or withdrawn.
	Since time.Time
}

// AnnouncerOptions configure an Announcer.
type AnnouncerOptions struct {
	// Ready says why the datapath cannot serve (nil: it can). While it
	// returns an error nothing is announced.
	Ready func() error
	// DrainFile keeps the drain state across restarts: it exists while
	// the node is drained. Empty: the drain state lives in memory only.
	DrainFile string
	// Resync is how often the announcements are checked against the
	// controller without an event (default 5 s); it catches readiness
	// changes and retries failed announcements.
	Resync time.Duration
	Logger *slog.Logger
}

// Announcer keeps a speaker's announcements in step with what this node
// can serve: the address of a VIP is announced while at least one VIP at
// that address has a real that takes new flows and is up (several VIPs -
// ports, protocols - may share an address), unless the node is drained
// or its datapath is not ready.
type Announcer struct {
	ctl    *control.Controller
	routes Routes
	opts   AnnouncerOptions
	log    *slog.Logger
	kick   chan struct{}

	mu       sync.Mutex
	drained  bool
	stopped  bool
	prefixes map[netip.Prefix]*PrefixState
}

// NewAnnouncer returns an announcer of ctl's VIPs through routes. It reads
// the drain state from opts.DrainFile; nothing is announced before Sync
// or Run.
func NewAnnouncer(ctl *control.Controller, routes Routes, opts AnnouncerOptions) (*Announcer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Resync <= 0 {
		opts.Resync = 5 * time.Second
	}
	a := &Announcer{ctl: ctl, routes: routes, opts: opts, log: opts.Logger, kick: make(chan struct{}, 1), prefixes: map[netip.Prefix]*PrefixState{}}
	if opts.DrainFile != "" {
		_, err := os.Stat(opts.DrainFile)
		switch {
		case err == nil:
			a.drained = true
			a.log.Warn("node is drained (from a previous lbd drain): no VIP is announced until lbd drain --undo", "drain_file", opts.DrainFile)
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("read drain state: %w", err)
		}
	}
	return a, nil
}

// Run follows the controller's events (VIP changes, real health) and
// re-checks every Resync, until ctx ends. It does not withdraw anything
// when it returns: that is Shutdown's job.
func (a *Announcer) Run(ctx context.Context) {
	events, done := a.ctl.Subscribe(256)
	defer done()
	t := time.NewTicker(a.opts.Resync)
	defer t.Stop()
	a.Sync()
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-events:
			if !ok {
				return
			}
			if e.Type != "vip_changed" && e.Type != "real_health" {
				continue
			}
		case <-a.kick:
		case <-t.C:
		}
		a.Sync()
	}
}

// Sync makes the announcements match the controller's state now.
func (a *Announcer) Sync() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return
	}
	serving := a.ctl.ServingVIPs()
	notReady := ""
	if a.opts.Ready != nil {
		if err := a.opts.Ready(); err != nil {
			notReady = "datapath not ready: " + err.Error()
		}
	}
	want := map[netip.Prefix]*PrefixState{}
	for key, ok := range serving {
		p := HostPrefix(key.Addr)
		st := want[p]
		if st == nil {
			st = &PrefixState{Prefix: p, Reason: ReasonNoReal}
			want[p] = st
		}
		st.VIPs = append(st.VIPs, lb.VIPName(key))
		if ok {
			st.Reason = ReasonAnnounced
		}
	}
	for _, st := range want {
		slices.Sort(st.VIPs)
		switch {
		case st.Reason != ReasonAnnounced:
		case a.drained:
			st.Reason = ReasonDrained
		case notReady != "":
			st.Reason = notReady
		}
	}
	// Withdraw first: an address that goes away must not linger.
	for p, old := range a.prefixes {
		if st := want[p]; old.Announced && (st == nil || st.Reason != ReasonAnnounced) {
			reason := "VIP address removed"
			if st != nil {
				reason = st.Reason
			}
			if err := a.routes.Withdraw(p); err != nil {
				a.log.Error("BGP: withdraw failed; retrying at the next sync", "prefix", p, "err", err)
				if st == nil {
					st = &PrefixState{Prefix: p, Reason: reason}
					want[p] = st
				}
				st.Announced, st.Since = true, old.Since
				continue
			}
			a.log.Info("BGP: withdrew VIP address", "prefix", p, "reason", reason)
			a.ctl.Publish(control.Event{Type: "bgp_withdraw", VIP: p.String(), Reason: reason})
			if st != nil {
				st.Since = time.Now()
			}
		}
	}
	for p, st := range want {
		old := a.prefixes[p]
		if st.Reason != ReasonAnnounced {
			if old != nil && !old.Announced && st.Since.IsZero() {
				st.Since = old.Since
			}
			continue
		}
		if old != nil && old.Announced {
			st.Announced, st.Since = true, old.Since
			continue
		}
		if err := a.routes.Announce(p); err != nil {
			st.Reason = err.Error()
			if old == nil || old.Reason != st.Reason {
				a.log.Error("BGP: announce failed; retrying at the next sync", "prefix", p, "err", err)
			}
			continue
		}
		st.Announced, st.Since = true, time.Now()
		a.log.Info("BGP: announced VIP address", "prefix", p, "vips", st.VIPs)
		a.ctl.Publish(control.Event{Type: "bgp_announce", VIP: p.String()})
	}
	a.prefixes = want
}

// Prefixes returns the state of every VIP address, sorted.
func (a *Announcer) Prefixes() []PrefixState {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]PrefixState, 0, len(a.prefixes))
	for _, p := range slices.SortedFunc(maps.Keys(a.prefixes), comparePrefixes) {
		st := *a.prefixes[p]
		st.VIPs = slices.Clone(st.VIPs)
		out = append(out, st)
	}
	return out
}

// Drained reports whether the node is drained.
func (a *Announcer) Drained() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.drained
}

// SetDrained drains the node (withdraws every VIP; the datapath keeps
// forwarding what still arrives, so established flows finish or move to
// other nodes as the routers converge) or undoes it (announces again what
// can be served). The state is saved first, so a restart keeps it.
func (a *Announcer) SetDrained(drained bool) error {
	a.mu.Lock()
	if a.opts.DrainFile != "" {
		if err := writeDrainFile(a.opts.DrainFile, drained); err != nil {
			a.mu.Unlock()
			return err
		}
	}
	changed := a.drained != drained
	a.drained = drained
	a.mu.Unlock()
	if changed {
		a.log.Warn("BGP: drain state changed", "drained", drained)
		state := "drained"
		if !drained {
			state = "undrained"
		}
		a.ctl.Publish(control.Event{Type: "bgp_drain", State: state})
	}
	a.Sync()
	return nil
}

func writeDrainFile(path string, drained bool) error {
	if !drained {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clear drain state: %w", err)
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save drain state: %w", err)
	}
	if err := os.WriteFile(path, []byte("drained by lbd drain; lbd drain --undo (or deleting this file before lbd starts) announces the VIPs again\n"), 0o600); err != nil {
		return fmt.Errorf("save drain state: %w", err)
	}
	return nil
}

// Shutdown withdraws everything and stops following the controller: for
// a graceful exit (SIGTERM), before the speaker closes its sessions.
func (a *Announcer) Shutdown() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	for p, st := range a.prefixes {
		if !st.Announced {
			continue
		}
		if err := a.routes.Withdraw(p); err != nil {
			a.log.Warn("BGP: withdraw at shutdown", "prefix", p, "err", err)
			continue
		}
		st.Announced, st.Reason, st.Since = false, ReasonShutdown, time.Now()
	}
}

// Kick asks Run to sync now (e.g. after the datapath became ready).
func (a *Announcer) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}
