package fleet

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node runs one lbd node in a fleet. It is the controller's Saver: a
// change made on this node (REST API, lbd apply) is written to etcd in a
// transaction guarded by the revision this node applied, and persisted
// to the local state file only once etcd took it; a node behind the
// fleet gets control.ErrConflict (409) and converges from the watch. The
// watch applies every fleet change through Controller.Apply and
// persists it locally, so a node cut off keeps its last applied state
// across restarts.
type Node struct {
	s     *Store
	local *control.Store
	ctl   atomic.Pointer[control.Controller]

	mu sync.Mutex
	// pending is the canonical document the watch is applying (its Save
	// is local only) and pendingRev its revision.
	pending    []byte
	pendingRev int64
	applied    int64

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
// desired state of a change.
func (n *Node) Save(vips map[xdp.VIPKey]*control.VIP) error {
	data, err := control.EncodeState(vips)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.pending != nil && bytes.Equal(data, n.pending) {
		// The watch applying the fleet's state: persist locally only.
		if err := n.local.Save(vips); err != nil {
			return err
		}
		n.applied, n.pending = n.pendingRev, nil
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), n.s.cfg.RequestTimeout)
	defer cancel()
	resp, err := n.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(n.s.DesiredKey()), "=", n.applied)).
		Then(clientv3.OpPut(n.s.DesiredKey(), string(data))).
		Commit()
	if err != nil {
		return fmt.Errorf("write the fleet's desired state to etcd: %w (the change was not made on any node)", err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: the fleet changed since this node applied revision %d; it converges in a moment, then retry", control.ErrConflict, n.applied)
	}
	n.applied = resp.Header.Revision
	n.contact(time.Now())
	if err := n.local.Save(vips); err != nil {
		// etcd has it; the watch will persist it again.
		return nil
	}
	return nil
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
	data, err := control.EncodeState(d.VIPs)
	if err != nil {
		n.mu.Unlock()
		return
	}
	n.pending, n.pendingRev = data, d.Revision
	n.mu.Unlock()
	list := make([]control.VIP, 0, len(d.VIPs))
	for _, v := range d.VIPs {
		list = append(list, *v)
	}
	_, err = ctl.Apply(list, false)
	n.mu.Lock()
	if err == nil && n.pending != nil {
		// Nothing to change: the node already ran it.
		n.applied, n.pending = d.Revision, nil
	}
	n.pending = nil
	n.mu.Unlock()
	if err != nil {
		n.s.log("fleet state not applied; keeping the last applied state", "revision", d.Revision, "err", err)
		return
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
