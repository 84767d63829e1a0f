package control

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/lbd-dev/lbd/bpf/xdp"
	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/control/maglev"
)

// Saver persists the desired state; *Store is the real one.
type Saver interface {
	Save(vips map[xdp.VIPKey]*VIP) error
}

// Controller owns the desired state and keeps the datapath in step with
// it. It is safe for concurrent use; changes are serialised.
type Controller struct {
	dp    Datapath
	store Saver
	log   *slog.Logger
	rates *rateTracker
	// drifts counts the VIPs Reconcile found differing, over the
	// controller's life.
	drifts atomic.Uint64

	usageMu sync.Mutex
	usage   TableUsage // the last count of the connection tables

	subMu         sync.Mutex
	subs          map[chan Event]struct{}
	eventsDropped atomic.Uint64

	mu       sync.Mutex
	health   *healthState // nil until StartHealth
	gue4     bool         // the node can send GUE to IPv4 reals
	gue6     bool         // ... and to IPv6 reals
	checkGUE bool
	vips     map[xdp.VIPKey]*VIP
	builder  maglev.Builder
	// slots is the datapath's real index of each (VIP, real) pair: each
	// pair has its own, so that the datapath counts per pair.
	slots map[RealKey]xdp.RealID
	// removed holds the final counters of pairs that left their VIP (summed
	// if a pair left more than once), until the VIP's counters are reset
	// or the VIP is deleted: with them a VIP's total stays the sum of its
	// reals.
	removed map[RealKey]xdp.RealStats
	// adopt: until the first Reconcile ends, a pair without an index may
	// take a defined index of its address that no pair owns (the pinned
	// datapath of an earlier run). Later such an index is a leftover
	// whose connection table entries may belong to another VIP: it is
	// collected, never adopted.
	adopt bool
	// lastCounters is what the counters file was last written with.
	lastCounters  Counters
	countersSaved bool
}

// RealKey names one real of one VIP.
type RealKey struct {
	VIP  xdp.VIPKey
	Addr netip.Addr
}

// New returns a controller for dp with the given desired state (usually
// from Store.Load). Nothing is applied until Reconcile.
func New(dp Datapath, store Saver, desired map[xdp.VIPKey]*VIP, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	vips := make(map[xdp.VIPKey]*VIP, len(desired))
	for k, v := range desired {
		vips[k] = v.Clone()
	}
	return &Controller{dp: dp, store: store, log: log, vips: vips, rates: newRateTracker(), subs: map[chan Event]struct{}{},
		slots: map[RealKey]xdp.RealID{}, removed: map[RealKey]xdp.RealStats{}, adopt: true}
}

// SetGUESources tells the controller for which real address families the
// node has a GUE source address, so that a GUE VIP with reals it could not
// reach is refused instead of having its packets dropped. Without a call,
// nothing is checked.
func (c *Controller) SetGUESources(v4, v6 bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gue4, c.gue6, c.checkGUE = v4, v6, true
}

// checkEncap refuses a GUE VIP with a real of a family the node has no
// GUE source for.
func (c *Controller) checkEncap(v *VIP) error {
	if !c.checkGUE || v.Encap != EncapGUE {
		return nil
	}
	for _, r := range v.Reals {
		if r.Addr.Is4() && !c.gue4 {
			return invalid("encap", "VIP %s uses GUE, but this node has no IPv4 GUE source for real %s: start lbd with --gue-source-v4, or use ipip", VIPName(v.Key), r.Addr)
		}
		if r.Addr.Is6() && !c.gue6 {
			return invalid("encap", "VIP %s uses GUE, but this node has no IPv6 GUE source for real %s: start lbd with --gue-source-v6, or use ipip", VIPName(v.Key), r.Addr)
		}
	}
	return nil
}

// VIPs returns the desired VIPs, ordered by address, protocol and port.
func (c *Controller) VIPs() []*VIP {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := sortedVIPs(c.vips)
	for i, v := range out {
		out[i] = v.Clone()
	}
	return out
}

// VIP returns one desired VIP.
func (c *Controller) VIP(key xdp.VIPKey) (*VIP, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vips[key]
	if !ok {
		return nil, notFound(key)
	}
	return v.Clone(), nil
}

// CreateVIP adds a VIP; it fails with ErrConflict if it exists.
func (c *Controller) CreateVIP(v VIP) (*VIP, error) {
	return c.change("create VIP "+VIPName(v.Key), v.Key, func(cur *VIP) (*VIP, error) {
		if cur != nil {
			return nil, fmt.Errorf("VIP %s already exists: change it with PUT or PATCH: %w", VIPName(v.Key), ErrConflict)
		}
		return &v, nil
	})
}

// PutVIP creates or replaces a VIP as a whole (settings and reals) and
// reports whether it was created.
func (c *Controller) PutVIP(v VIP) (vip *VIP, created bool, err error) {
	vip, err = c.change("put VIP "+VIPName(v.Key), v.Key, func(cur *VIP) (*VIP, error) {
		created = cur == nil
		return &v, nil
	})
	return vip, created, err
}

// VIPUpdate changes some settings of a VIP; nil fields are left alone.
type VIPUpdate struct {
	Sticky *bool
	NoLRU  *bool
	// NoFlowSearch: see VIP.NoFlowSearch.
	NoFlowSearch *bool
	Encap        *Encap
	RingSize     *uint32
	Health       *health.Spec
	DownFlows    *DownFlows
	AllDown      *AllDown
}

// UpdateVIP changes a VIP's settings, keeping its reals.
func (c *Controller) UpdateVIP(key xdp.VIPKey, u VIPUpdate) (*VIP, error) {
	return c.change("update VIP "+VIPName(key), key, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		if u.Sticky != nil {
			cur.Sticky = *u.Sticky
		}
		if u.NoLRU != nil {
			cur.NoLRU = *u.NoLRU
		}
		if u.NoFlowSearch != nil {
			cur.NoFlowSearch = *u.NoFlowSearch
		}
		if u.Encap != nil {
			cur.Encap = *u.Encap
		}
		if u.RingSize != nil {
			cur.RingSize = *u.RingSize
		}
		if u.Health != nil {
			cur.Health = *u.Health
		}
		if u.DownFlows != nil {
			cur.DownFlows = *u.DownFlows
		}
		if u.AllDown != nil {
			cur.AllDown = *u.AllDown
		}
		return cur, nil
	})
}

// DeleteVIP removes a VIP. Its connection table entries stop matching at
// once and age out of the table.
func (c *Controller) DeleteVIP(key xdp.VIPKey) error {
	_, err := c.change("delete VIP "+VIPName(key), key, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		return nil, nil
	})
	return err
}

// SetReals replaces a VIP's whole set of reals.
func (c *Controller) SetReals(key xdp.VIPKey, reals []Real) (*VIP, error) {
	return c.change("set reals of VIP "+VIPName(key), key, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		cur.Reals = slices.Clone(reals)
		return cur, nil
	})
}

// PutReal adds a real to a VIP or changes its weight and state, and
// reports whether it was added.
func (c *Controller) PutReal(key xdp.VIPKey, r Real) (vip *VIP, created bool, err error) {
	vip, err = c.change("put real "+r.Addr.String()+" of VIP "+VIPName(key), key, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		i := slices.IndexFunc(cur.Reals, func(x Real) bool { return x.Addr == r.Addr })
		if i < 0 {
			created = true
			cur.Reals = append(cur.Reals, r)
		} else {
			cur.Reals[i] = r
		}
		return cur, nil
	})
	return vip, created, err
}

// DeleteReal removes a real from a VIP. Its flows of this VIP move to
// other reals (set it draining first to let them finish).
func (c *Controller) DeleteReal(key xdp.VIPKey, addr netip.Addr) (*VIP, error) {
	return c.change("delete real "+addr.String()+" of VIP "+VIPName(key), key, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		i := slices.IndexFunc(cur.Reals, func(x Real) bool { return x.Addr == addr })
		if i < 0 {
			return nil, fmt.Errorf("real %s of VIP %s: %w", addr, VIPName(key), ErrNotFound)
		}
		cur.Reals = slices.Delete(cur.Reals, i, i+1)
		return cur, nil
	})
}

// change runs one transaction on one VIP: fn turns the current desired
// VIP (a copy, nil if absent) into the next one (nil deletes it); the
// result is validated, converged into the datapath and saved. On any
// failure the datapath is converged back and the state is unchanged.
func (c *Controller) change(op string, key xdp.VIPKey, fn func(cur *VIP) (*VIP, error)) (*VIP, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur := c.vips[key]
	next, err := fn(cur.Clone())
	if err != nil {
		return nil, err
	}
	if next != nil {
		next.normalize()
		if err := next.Validate(); err != nil {
			return nil, err
		}
		if err := c.checkEncap(next); err != nil {
			return nil, err
		}
		if next.Key != key {
			return nil, invalid("vip", "a VIP's protocol, address and port cannot change: create a new VIP")
		}
	}
	all := maps.Clone(c.vips)
	if next == nil {
		delete(all, key)
	} else {
		all[key] = next
	}
	if _, err := c.converge(key, next, false); err != nil {
		return nil, c.rollback(op, key, cur, err)
	}
	if err := c.store.Save(all); err != nil {
		return nil, c.rollback(op, key, cur, err)
	}
	c.vips = all
	c.syncHealth()
	c.publish(Event{Type: "vip_changed", VIP: VIPName(key), Reason: op})
	// Only now may reals that left the state be undefined: before the
	// save a rollback would have to define them again under new indices,
	// and their connection table entries would be lost. Undefining a
	// pair's index deletes its connection table entries: its flows follow
	// the ring again.
	c.collectReals(all, true)
	c.saveCounters()
	c.log.Info("applied", "op", op)
	return next.Clone(), nil
}

func (c *Controller) rollback(op string, key xdp.VIPKey, prev *VIP, cause error) error {
	_, rbErr := c.converge(key, prev, true)
	c.collectReals(c.vips, false) // reals the failed change defined: never part of the state
	if rbErr != nil {
		c.log.Error("change failed and rollback failed", "op", op, "err", cause, "rollback_err", rbErr)
		return &ApplyError{Op: op, Err: cause, RollbackErr: rbErr}
	}
	c.log.Warn("change failed, rolled back", "op", op, "err", cause)
	return &ApplyError{Op: op, Err: cause, RolledBack: true}
}

// converge makes the datapath's view of one VIP match want (nil: absent)
// and says what it changed. It only touches what differs, so it serves for
// changes, for rollbacks and for drift repair alike. It defines the reals
// want needs but undefines none: that is collectReals' job, once the
// whole state is settled. verify reads the live ring back and installs the
// built one only if they differ (drift repair, rollback); without it the
// built ring is installed as it is, which costs less than reading a ring
// back when a change has just altered it.
func (c *Controller) converge(key xdp.VIPKey, want *VIP, verify bool) ([]string, error) {
	var changes []string
	have, err := c.dp.LookupVIP(key)
	exists := err == nil
	if err != nil && !errors.Is(err, xdp.ErrNotFound) {
		return nil, err
	}
	if want == nil {
		if exists {
			if err := c.dp.RemoveVIP(key); err != nil {
				return changes, err
			}
			changes = append(changes, "removed VIP")
		}
		return changes, nil
	}

	flags := want.Flags()
	switch {
	case !exists:
		if err := c.dp.AddVIP(key, flags); err != nil {
			return changes, err
		}
		changes = append(changes, "added VIP")
	case have.Flags != flags:
		if err := c.dp.SetVIPFlags(key, flags); err != nil {
			return changes, err
		}
		changes = append(changes, fmt.Sprintf("set flags %#x (were %#x)", flags, have.Flags))
	}

	live := c.dp.RealSlots()
	ids := make(map[netip.Addr]xdp.RealID, len(want.Reals))
	var liveRing []xdp.RealID // read only to adopt indices
	ringRead := false
	for _, r := range want.Reals {
		pk := RealKey{key, r.Addr}
		if id, ok := c.slots[pk]; ok && live[id] == r.Addr {
			ids[r.Addr] = id
			continue
		}
		delete(c.slots, pk) // none, or the datapath lost it
		if c.adopt {
			if !ringRead && exists {
				liveRing, _ = c.dp.Ring(key)
				ringRead = true
			}
			if id, ok := c.adoptSlot(r.Addr, live, liveRing); ok {
				c.slots[pk] = id
				ids[r.Addr] = id
				continue
			}
		}
		id, err := c.dp.AddRealSlot(r.Addr)
		if err != nil {
			return changes, err
		}
		live[id] = r.Addr
		c.slots[pk] = id
		changes = append(changes, "defined real "+r.Addr.String())
		ids[r.Addr] = id
	}

	ring, err := c.buildRing(want, ids)
	if err != nil {
		return changes, err
	}
	same := false
	if verify {
		current, err := c.dp.Ring(key)
		if err != nil {
			return changes, err
		}
		same = slices.Equal(current, ring)
	}
	if !same {
		if err := c.dp.SetRing(key, ring); err != nil {
			return changes, err
		}
		changes = append(changes, fmt.Sprintf("replaced ring (%d slots)", len(ring)))
	}
	return changes, nil
}

// buildRing builds a VIP's Maglev ring from its eligible reals that are not
// down (all eligible ones if every one is down and the VIP serves all
// then). With none, the ring is one empty slot: new flows are dropped
// (counted as no-real) while flows in the connection table keep their
// (draining) reals.
func (c *Controller) buildRing(v *VIP, ids map[netip.Addr]xdp.RealID) ([]xdp.RealID, error) {
	backends := make([]maglev.Backend, 0, len(v.Reals))
	var downs []maglev.Backend // eligible but failing their health checks
	for _, r := range v.Reals {
		if !r.Eligible() {
			continue
		}
		b := maglev.Backend{Name: r.Addr.String(), ID: uint32(ids[r.Addr]), Weight: r.Weight}
		if v.Health.Type != health.None && c.isDown(v.Key, r.Addr) {
			downs = append(downs, b)
			continue
		}
		backends = append(backends, b)
	}
	if len(backends) == 0 && v.AllDown == ServeAll {
		backends = downs // fail open: a broken health check does not take the VIP down
	}
	if len(backends) == 0 {
		return []xdp.RealID{0}, nil
	}
	table := make([]uint32, v.RingSize)
	if err := c.builder.BuildInto(table, backends); err != nil {
		return nil, fmt.Errorf("build Maglev ring: %w", err)
	}
	ring := make([]xdp.RealID, len(table))
	for i, id := range table {
		ring[i] = xdp.RealID(id)
	}
	return ring, nil
}

// adoptSlot finds a datapath index of addr that no pair owns: after a
// restart the datapath (pinned) kept its indices while the controller
// forgot whose they were. An index in the VIP's live ring is preferred;
// any such index sends to the same address, so forwarding is right
// whichever is taken (only counters of a real shared by VIPs could be
// attributed to the other VIP, if neither ring holds it).
func (c *Controller) adoptSlot(addr netip.Addr, live map[xdp.RealID]netip.Addr, ring []xdp.RealID) (xdp.RealID, bool) {
	owned := make(map[xdp.RealID]bool, len(c.slots))
	for _, id := range c.slots {
		owned[id] = true
	}
	for _, id := range ring {
		if id != 0 && live[id] == addr && !owned[id] {
			return id, true
		}
	}
	var best xdp.RealID
	for id, a := range live {
		if a == addr && !owned[id] && (best == 0 || id < best) {
			best = id
		}
	}
	return best, best != 0
}

// collectReals undefines the datapath's real indices of pairs that no
// desired VIP has, keeping their final counters (for a VIP that still
// exists, if keep) in c.removed. A failure here is harmless (an unused
// index costs one slot) and left to the next reconcile.
func (c *Controller) collectReals(all map[xdp.VIPKey]*VIP, keep bool) []string {
	live := c.dp.RealSlots()
	owner := make(map[xdp.RealID]RealKey, len(c.slots))
	for pk, id := range c.slots {
		if live[id] != pk.Addr {
			delete(c.slots, pk)
			continue
		}
		owner[id] = pk
	}
	var gone []xdp.RealID
	for id := range live {
		if pk, ok := owner[id]; ok {
			if v := all[pk.VIP]; v != nil {
				if _, still := v.Real(pk.Addr); still {
					continue
				}
			}
		}
		gone = append(gone, id)
	}
	for pk := range c.removed {
		if all[pk.VIP] == nil {
			delete(c.removed, pk) // the VIP's counters went with it
		}
	}
	if len(gone) == 0 {
		return nil
	}
	slices.Sort(gone)
	final, err := c.dp.RemoveRealSlots(gone)
	if err != nil {
		c.log.Warn("could not undefine unused reals; the next reconcile retries", "indices", gone, "err", err)
		return nil
	}
	var changes []string
	for _, id := range gone {
		pk, ok := owner[id]
		if !ok {
			changes = append(changes, fmt.Sprintf("undefined real %s (index %d, of no VIP)", live[id], id))
			continue
		}
		delete(c.slots, pk)
		if keep && all[pk.VIP] != nil {
			r := c.removed[pk]
			r.Packets += final[id].Packets
			r.Bytes += final[id].Bytes
			c.removed[pk] = r
		}
		changes = append(changes, "undefined real "+pk.Addr.String()+" of VIP "+VIPName(pk.VIP))
	}
	return changes
}

// Drift is one VIP whose datapath state differed from the desired state,
// with what was done about it.
type Drift struct {
	VIP     string   `json:"vip"`
	Changes []string `json:"changes"`
	Error   string   `json:"error,omitempty"`
}

// Reconcile converges the whole datapath to the desired state: desired
// VIPs are installed or repaired, VIPs the state does not name are
// removed, unused reals undefined. It returns what differed; on a fresh
// datapath that is everything, on a healthy one nothing.
func (c *Controller) Reconcile() ([]Drift, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var drifts []Drift
	var errs []error
	keys := make(map[xdp.VIPKey]bool)
	for _, v := range c.dp.VIPs() {
		keys[v.Key] = true
	}
	for k := range c.vips {
		keys[k] = true
	}
	ordered := slices.SortedFunc(maps.Keys(keys), compareKeys)
	for _, k := range ordered {
		changes, err := c.converge(k, c.vips[k], true)
		if err != nil {
			errs = append(errs, fmt.Errorf("VIP %s: %w", VIPName(k), err))
		}
		if len(changes) > 0 || err != nil {
			d := Drift{VIP: VIPName(k), Changes: changes}
			if err != nil {
				d.Error = err.Error()
			}
			drifts = append(drifts, d)
		}
	}
	if changes := c.collectReals(c.vips, true); len(changes) > 0 {
		drifts = append(drifts, Drift{VIP: "", Changes: changes})
	}
	c.adopt = false
	c.saveCounters()
	c.syncHealth()
	c.drifts.Add(uint64(len(drifts)))
	for _, d := range drifts {
		c.log.Warn("datapath differed from desired state", "vip", d.VIP, "changes", d.Changes, "error", d.Error)
	}
	return drifts, errors.Join(errs...)
}

// Drifts is the number of differences Reconcile has found and repaired
// (or tried to) since the controller was made.
func (c *Controller) Drifts() uint64 { return c.drifts.Load() }

// RingShare is how many ring slots a real holds.
type RingShare struct {
	Real  netip.Addr
	Slots int
}

// Ring summarises a VIP's ring as the datapath has it: slots per real
// (reals with no slots included), and the empty slots.
func (c *Controller) Ring(key xdp.VIPKey) (size int, shares []RingShare, empty int, err error) {
	v, err := c.VIP(key)
	if err != nil {
		return 0, nil, 0, err
	}
	ring, err := c.dp.Ring(key)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("read ring of VIP %s: %w", VIPName(key), err)
	}
	counts := make(map[xdp.RealID]int)
	for _, id := range ring {
		counts[id]++
	}
	c.mu.Lock()
	reals := make(map[netip.Addr]xdp.RealID, len(v.Reals))
	for _, r := range v.Reals {
		reals[r.Addr] = c.slots[RealKey{key, r.Addr}]
	}
	c.mu.Unlock()
	for _, r := range v.Reals {
		id := reals[r.Addr]
		n := 0
		if id != 0 {
			n = counts[id]
			delete(counts, id)
		}
		shares = append(shares, RingShare{Real: r.Addr, Slots: n})
	}
	for _, n := range counts { // empty slots, or reals the state does not name (drift)
		empty += n
	}
	return len(ring), shares, empty, nil
}

func notFound(key xdp.VIPKey) error {
	return fmt.Errorf("VIP %s: %w", VIPName(key), ErrNotFound)
}

func sortedVIPs(vips map[xdp.VIPKey]*VIP) []*VIP {
	out := slices.Collect(maps.Values(vips))
	slices.SortFunc(out, func(a, b *VIP) int { return compareKeys(a.Key, b.Key) })
	return out
}
