package fleet

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lbd-dev/lbd/control"
	"github.com/lbd-dev/lbd/lb"
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
func (n *Node) Save(vips map[lb.VIPKey]*control.VIP) error {
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

// txn writes data if the key is still at the applied revision. An
// attempt that fails on the way (the member it went to died) is retried
// on the others, three times at most: a retry that finds the key
// already holding data at a newer revision is the earlier attempt's
// success. n.mu is held.
func (n *Node) txn(data []byte) (txnResult, error) {
	key := n.s.DesiredKey()
	var last error
	for range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), n.s.cfg.RequestTimeout)
		resp, err := n.s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", n.applied)).
			Then(clientv3.OpPut(key, string(data))).
			Else(clientv3.OpGet(key)).
			Commit()
		cancel()
		if err != nil {
			last = err
			continue
		}
		if resp.Succeeded {
			return txnResult{ok: true, rev: resp.Header.Revision}, nil
		}
		if last != nil {
			// An earlier attempt may have written it.
			if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 && bytes.Equal(kvs[0].Value, data) {
				return txnResult{ok: true, rev: kvs[0].ModRevision}, nil
			}
		}
		return txnResult{}, nil
	}
	return txnResult{}, last
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
