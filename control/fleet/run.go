package fleet

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Loop writes this node's report every interval, reads the fleet's
// reports, and with quorum health gives the controller the reals a
// quorum sees down. It also tells the announcer (SetBGP) as soon as
// Hold changes, so that a withdrawal or an announcement does not wait
// for the announcer's next periodic check.
type Loop struct {
	Node   *Node
	Every  time.Duration
	Safety Safety
	Health HealthMode
	Quorum int

	holdMu      sync.Mutex
	mu          sync.Mutex
	bgpState    func() string
	holdChanged func()
	held        error
	holdKnown   bool
	fleetFP     string
	differSince time.Time
	reports     []Report
}

// SetBGP gives the loop what the node announces (state, for its report)
// and whom to tell when Hold changes (kick). Either may be nil.
func (l *Loop) SetBGP(state func() string, kick func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bgpState, l.holdChanged = state, kick
}

// Run runs the loop until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	rep := l.Node.s.NewReporter()
	t := time.NewTicker(l.Every)
	defer t.Stop()
	// Hold changes with time alone (cut off or differing for longer than
	// the withdraw time), also while a tick waits on an etcd that does
	// not answer: it is checked on its own clock.
	done := make(chan struct{})
	defer func() { <-done }()
	go func() {
		defer close(done)
		ht := time.NewTicker(l.Every)
		defer ht.Stop()
		for {
			l.checkHold()
			select {
			case <-ctx.Done():
				return
			case <-ht.C:
			}
		}
	}()
	for {
		l.tick(ctx, rep)
		l.checkHold()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.Node.Changed():
		}
	}
}

// checkHold tells the announcer when Hold changed (held or not, or why).
// Checks are serialized, so that the last state stored is the last one
// computed.
func (l *Loop) checkHold() {
	l.holdMu.Lock()
	defer l.holdMu.Unlock()
	h := l.Hold()
	l.mu.Lock()
	changed := !l.holdKnown || (h == nil) != (l.held == nil) || (h != nil && h.Error() != l.held.Error())
	l.held, l.holdKnown = h, true
	kick := l.holdChanged
	l.mu.Unlock()
	if changed && kick != nil {
		kick()
	}
}

func (l *Loop) tick(ctx context.Context, rep *Reporter) {
	ctl := l.Node.ctl.Load()
	own := ctl.Fingerprint()
	now := time.Now()
	fp0, since0 := l.view()
	stale := l.Node.Safety(l.Safety, now, own, fp0, since0).Stale
	bgp := "off"
	l.mu.Lock()
	state := l.bgpState
	l.mu.Unlock()
	if state != nil {
		bgp = state()
	}
	r := Report{Revision: l.Node.Applied(), Fingerprint: own, BGP: bgp, Stale: stale, Down: DownNames(ctl.LocalDown())}
	if err := rep.Publish(ctx, r); err == nil {
		l.Node.contact(time.Now())
	}
	rs, err := l.Node.s.Reports(ctx)
	if err != nil {
		return
	}
	seen := time.Now()
	l.Node.contact(seen)
	// The fleet's fingerprint is that of its latest revision: a node
	// that cannot apply it (and stays at an older one) differs.
	fp := FleetFingerprint(FleetRevision(rs), rs)
	own = ctl.Fingerprint()
	l.mu.Lock()
	l.reports = rs
	if fp != "" {
		l.fleetFP = fp
	}
	if l.fleetFP != "" && own != l.fleetFP {
		if l.differSince.IsZero() {
			// Since it was seen: a difference read now may have begun
			// after the tick started.
			l.differSince = seen
		}
	} else {
		l.differSince = time.Time{}
	}
	l.mu.Unlock()
	if l.Health == HealthQuorum {
		ctl.SetSharedDown(QuorumDown(rs, l.Quorum))
	}
}

func (l *Loop) view() (fleetFP string, differSince time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fleetFP, l.differSince
}

// NodeState is what the node knows of itself.
type NodeState struct {
	Stale, Announce bool
	View            View
}

// Safety evaluates the stale/withdraw rule for the node now.
func (n *Node) Safety(s Safety, now time.Time, own string, fleetFP string, differSince time.Time) NodeState {
	v := View{Now: now, LastContact: n.LastContact(), Synced: n.Synced(), Own: own, Fleet: fleetFP, DifferSince: differSince}
	return NodeState{Stale: s.Stale(v), Announce: s.Announce(v), View: v}
}

// Hold says why the node must not announce its VIPs (nil: it may): not
// synced with the fleet yet, or stale or differing for too long.
func (l *Loop) Hold() error {
	fp, since := l.view()
	st := l.Node.Safety(l.Safety, time.Now(), l.Node.ctl.Load().Fingerprint(), fp, since)
	switch {
	case st.Announce:
		return nil
	case !st.View.Synced:
		return errors.New("fleet: the fleet's desired state is not applied yet")
	case st.Stale:
		return errors.New("fleet: cut off from etcd for longer than --fleet-stale-withdraw")
	default:
		return errors.New("fleet: this node's fingerprint differs from the fleet's for longer than --fleet-stale-withdraw")
	}
}

// Stale tells whether the node is stale now.
func (l *Loop) Stale() bool {
	fp, since := l.view()
	return l.Node.Safety(l.Safety, time.Now(), "", fp, since).Stale
}

// FleetStatus is the fleet as this node sees it: from etcd when it
// answers, else the last reports it read (Stale set).
func (l *Loop) FleetStatus(ctx context.Context) (Status, bool, error) {
	l.mu.Lock()
	rs := l.reports
	l.mu.Unlock()
	if rs != nil && l.Stale() {
		// Cut off for --fleet-stale-after already: answer from the last
		// reports now rather than after one more etcd timeout.
		return Agreement(l.Node.s.cfg.Fleet, l.Node.Applied(), rs), true, nil
	}
	// Wait for etcd at most until this node would call itself stale:
	// then the answer is the last reports, marked stale, not one more
	// request timeout later.
	if lc := l.Node.LastContact(); !lc.IsZero() && rs != nil {
		if d := time.Until(lc.Add(l.Safety.StaleAfter)); d < l.Node.s.cfg.RequestTimeout {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, max(d, 10*time.Millisecond))
			defer cancel()
		}
	}
	st, err := l.Node.s.FleetStatus(ctx)
	if err == nil {
		return st, false, nil
	}
	l.mu.Lock()
	rs = l.reports
	l.mu.Unlock()
	if rs == nil {
		return Status{}, true, err
	}
	return Agreement(l.Node.s.cfg.Fleet, l.Node.Applied(), rs), true, nil
}
