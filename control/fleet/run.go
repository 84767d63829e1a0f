package fleet

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Loop writes this node's report every interval, reads the fleet's
// reports, and with quorum health gives the controller the reals a
// quorum sees down. bgpState says what the node announces.
type Loop struct {
	Node     *Node
	Every    time.Duration
	Safety   Safety
	Health   HealthMode
	Quorum   int
	BGPState func() string

	mu          sync.Mutex
	fleetFP     string
	differSince time.Time
	reports     []Report
}

// Run runs the loop until ctx ends.
func (l *Loop) Run(ctx context.Context) {
	rep := l.Node.s.NewReporter()
	t := time.NewTicker(l.Every)
	defer t.Stop()
	for {
		l.tick(ctx, rep)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-l.Node.Changed():
		}
	}
}

func (l *Loop) tick(ctx context.Context, rep *Reporter) {
	ctl := l.Node.ctl.Load()
	now := time.Now()
	own := ctl.Fingerprint()
	fp0, since0 := l.view()
	stale := l.Node.Safety(l.Safety, now, own, fp0, since0).Stale
	bgp := "off"
	if l.BGPState != nil {
		bgp = l.BGPState()
	}
	r := Report{Revision: l.Node.Applied(), Fingerprint: own, BGP: bgp, Stale: stale, Down: DownNames(ctl.LocalDown())}
	if err := rep.Publish(ctx, r); err == nil {
		l.Node.contact(time.Now())
	}
	rs, err := l.Node.s.Reports(ctx)
	if err != nil {
		return
	}
	l.Node.contact(time.Now())
	fp := FleetFingerprint(l.Node.Applied(), rs)
	l.mu.Lock()
	l.reports = rs
	if fp != "" {
		l.fleetFP = fp
	}
	if l.fleetFP != "" && own != l.fleetFP {
		if l.differSince.IsZero() {
			l.differSince = now
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
	st, err := l.Node.s.FleetStatus(ctx)
	if err == nil {
		return st, false, nil
	}
	l.mu.Lock()
	rs := l.reports
	l.mu.Unlock()
	if rs == nil {
		return Status{}, true, err
	}
	return Agreement(l.Node.s.cfg.Fleet, l.Node.Applied(), rs), true, nil
}
