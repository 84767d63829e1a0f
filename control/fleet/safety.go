package fleet

import "time"

// Safety decides, from how fresh a node's view of the fleet is, whether
// it is stale and whether it keeps its BGP announcement.
type Safety struct {
	// StaleAfter: no answer from etcd for this long → the node reports
	// itself stale (it keeps forwarding with its last applied state).
	StaleAfter time.Duration
	// WithdrawAfter: stale this long, or running another fingerprint than
	// the fleet this long → withdraw the announcement, so that ECMP sends
	// its flows to nodes that agree. 0 never withdraws.
	WithdrawAfter time.Duration
}

// View is what a node knows at a moment.
type View struct {
	Now         time.Time
	LastContact time.Time
	// Synced: the node applied the fleet's desired state at least once
	// since it started (it holds its announcement until then).
	Synced bool
	// Own and Fleet fingerprints; Fleet is "" when unknown.
	Own, Fleet string
	// DifferSince is when Own first differed from Fleet (zero if equal).
	DifferSince time.Time
}

// Stale tells whether the node's view is older than StaleAfter.
func (s Safety) Stale(v View) bool {
	return v.LastContact.IsZero() || v.Now.Sub(v.LastContact) > s.StaleAfter
}

// Announce tells whether the node should announce its VIPs now.
func (s Safety) Announce(v View) bool {
	if !v.Synced {
		return false
	}
	if s.WithdrawAfter <= 0 {
		return true
	}
	if s.Stale(v) && v.Now.Sub(v.LastContact) > s.WithdrawAfter {
		// Cut off: it cannot know whether it still agrees.
		return false
	}
	if v.Fleet != "" && v.Own != v.Fleet && !v.DifferSince.IsZero() && v.Now.Sub(v.DifferSince) > s.WithdrawAfter {
		return false
	}
	return true
}
