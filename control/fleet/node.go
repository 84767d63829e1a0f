package fleet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
)

// Node runs one lbd node in a fleet. It is the controller's Saver: a
// change made on this node (REST API, lbd apply) is written to etcd in a
// transaction guarded by the revision this node applied, and persisted
// to the local state file only once etcd took it; a node behind the
// fleet gets control.ErrConflict (409) and converges from the watch. The
// watch applies every fleet change through Controller.ApplyFrom, which
// persists it locally only (never back to etcd, also when the node
// cannot apply it and rolls back), so a node cut off keeps its last
// applied state across restarts.
type Node struct {
	s     *Store
	local *control.Store
	ctl   atomic.Pointer[control.Controller]

	mu      sync.Mutex
	applied int64

	lastContact atomic.Int64 // unix nanoseconds
	synced      atomic.Bool
	changed     chan struct{}
}

// NewNode returns the fleet node; local is the state file (the persisted
// last applied state). Attach the controller before Run.
func NewNode(s *Store, local *control.Store) *Node {
	return &Node{s: s, local: local, changed: make(chan struct{}, 1)}
}

// Attach sets the controller the watch applies to.
func (n *Node) Attach(c *control.Controller) { n.ctl.Store(c) }

// Store is the node's etcd store.
func (n *Node) Store() *Store { return n.s }

// SaveCounters and LoadCounters keep the counters in the local file.
func (n *Node) SaveCounters(c control.Counters) error { return n.local.SaveCounters(c) }

// LoadCounters reads the local counters file.
func (n *Node) LoadCounters() (control.Counters, error) { return n.local.LoadCounters() }

// Save is called by the controller, under its lock, with the whole new
// desired state of a change made on this node.
func (n *Node) Save(vips map[lb.VIPKey]*control.VIP) error {
	data, err := control.EncodeState(vips)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	resp, err := n.txn(data)
	if err != nil {
		return fmt.Errorf("write the fleet's desired state to etcd: %w (not made on this node; etcd did not confirm it either way: see lbd fleet status)", err)
	}
	if !resp.ok {
		return fmt.Errorf("%w: the fleet changed since this node applied revision %d; it converges in a moment, then retry", control.ErrConflict, n.applied)
	}
	n.applied = resp.rev
	n.contact(time.Now())
	// etcd has it: a local file that cannot be written now is written
	// again with the next revision the watch applies.
	_ = n.local.Save(vips)
	return nil
}

type txnResult struct {
	ok  bool
	rev int64
}

// txn writes data if the key is still at the applied revision (retried
// through an election, see Store.put). n.mu is held.
func (n *Node) txn(data []byte) (txnResult, error) {
	ok, rev, err := n.s.put(context.Background(), n.applied, data)
	return txnResult{ok: ok, rev: rev}, err
}

func (n *Node) contact(t time.Time) { n.lastContact.Store(t.UnixNano()) }

// LastContact is when etcd last answered this node.
func (n *Node) LastContact() time.Time {
	v := n.lastContact.Load()
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}

// Applied is the revision of the fleet state this node runs.
func (n *Node) Applied() int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.applied
}

// Synced tells whether the node applied the fleet's state since it
// started (until then it must not announce).
func (n *Node) Synced() bool { return n.synced.Load() }

// Changed is signalled after every applied fleet revision.
func (n *Node) Changed() <-chan struct{} { return n.changed }

// apply makes the controller run d.
func (n *Node) apply(d Desired) {
	ctl := n.ctl.Load()
	n.mu.Lock()
	if d.Revision <= n.applied && n.synced.Load() {
		n.mu.Unlock()
		return
	}
	prev := n.applied
	n.mu.Unlock()
	list := make([]control.VIP, 0, len(d.VIPs))
	for _, v := range d.VIPs {
		list = append(list, *v)
	}
	// The controller calls save under its lock: once with the new state
	// (it runs revision d from then on), and once more with the old one
	// if the datapath refuses the change and it rolls back. No change of
	// this node's API comes in between (the same lock).
	saves := 0
	save := func(vips map[lb.VIPKey]*control.VIP) error {
		if err := n.local.Save(vips); err != nil {
			return err
		}
		saves++
		n.mu.Lock()
		if saves == 1 {
			n.applied = d.Revision
		} else {
			n.applied = prev
		}
		n.mu.Unlock()
		return nil
	}
	_, err := ctl.ApplyFrom(list, save)
	if err != nil {
		n.s.log("fleet state not applied; keeping the last applied state", "revision", d.Revision, "err", err)
		return
	}
	if saves == 0 {
		// Nothing to change: the node already ran it.
		n.mu.Lock()
		n.applied = max(n.applied, d.Revision)
		n.mu.Unlock()
	}
	n.synced.Store(true)
	select {
	case n.changed <- struct{}{}:
	default:
	}
}

// Run watches the fleet until ctx ends.
func (n *Node) Run(ctx context.Context) {
	n.s.Watch(ctx, n.apply, n.contact)
}
