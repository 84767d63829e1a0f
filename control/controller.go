package control

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/control/maglev"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// Saver persists the desired state; *Store is the real one.
type Saver interface {
	Save(vips map[lb.VIPKey]*VIP) error
}

// stagedSaver is a Saver that can report a failed write before the
// change goes live and finish making it durable meanwhile (Store).
type stagedSaver interface {
	SaveStaged(vips map[lb.VIPKey]*VIP) (wait func() error, err error)
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

	events eventBus

	mu       sync.Mutex
	health   *healthState // nil until StartHealth
	gue4     bool         // the node can send GUE to IPv4 reals
	gue6     bool         // ... and to IPv6 reals
	checkGUE bool
	// dpConfig is the datapath configuration Reconcile keeps in the
	// config map (nil: not checked).
	dpConfig *datapath.Config
	vips     map[lb.VIPKey]*VIP
	builder  maglev.Builder
	// planTable and ringBuf are reused by planRing and ringPlan.ring:
	// one ring is built at a time (c.mu), and the datapath copies what
	// it takes.
	planTable []uint32
	ringBuf   []uint32
	// ringSums: see ringSum.
	ringSums map[lb.VIPKey]ringSum
	ringSeed maphash.Seed
	// slots is the datapath's real index of each (VIP, real) pair: each
	// pair has its own, so that the datapath counts per pair.
	slots map[RealKey]datapath.RealID
	// removed holds the final counters of pairs that left their VIP (summed
	// if a pair left more than once), until the VIP's counters are reset
	// or the VIP is deleted: with them a VIP's total stays the sum of its
	// reals.
	removed map[RealKey]datapath.RealStats
	// adopt: until the first Reconcile ends, a pair without an index may
	// take a defined index of its address that no pair owns (the pinned
	// datapath of an earlier run). Later such an index is a leftover
	// whose connection table entries may belong to another VIP: it is
	// collected, never adopted.
	adopt bool
	// shared: the fleet decides which reals are down (SetSharedDown);
	// this node's probes only fill localDown, its observations.
	shared    bool
	localDown map[RealKey]bool
	// lastCounters is what the counters file was last written with.
	lastCounters  Counters
	countersSaved bool
}

// RealKey names one real of one VIP.
type RealKey struct {
	VIP  lb.VIPKey
	Addr netip.Addr
}

// New returns a controller for dp with the given desired state (usually
// from Store.Load). Nothing is applied until Reconcile.
func New(dp Datapath, store Saver, desired map[lb.VIPKey]*VIP, log *slog.Logger) *Controller {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	vips := make(map[lb.VIPKey]*VIP, len(desired))
	for k, v := range desired {
		vips[k] = v.Clone()
	}
	return &Controller{dp: dp, store: store, log: log, vips: vips, rates: newRateTracker(),
		events:   eventBus{subs: map[chan Event]struct{}{}},
		ringSums: map[lb.VIPKey]ringSum{}, ringSeed: maphash.MakeSeed(),
		slots: map[RealKey]datapath.RealID{}, removed: map[RealKey]datapath.RealStats{}, adopt: true}
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
			return invalid("encap", "VIP %s uses GUE, but this node has no IPv4 GUE source for real %s: start lbd with --gue-source-v4, or use ipip", lb.VIPName(v.Key), r.Addr)
		}
		if r.Addr.Is6() && !c.gue6 {
			return invalid("encap", "VIP %s uses GUE, but this node has no IPv6 GUE source for real %s: start lbd with --gue-source-v6, or use ipip", lb.VIPName(v.Key), r.Addr)
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
func (c *Controller) VIP(key lb.VIPKey) (*VIP, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.vips[key]
	if !ok {
		return nil, notFound(key)
	}
	return v.Clone(), nil
}

// CreateVIP adds a VIP; it fails with ErrConflict if it exists.
func (c *Controller) CreateVIP(v VIP, conds ...Precondition) (*VIP, error) {
	return c.change("create VIP "+lb.VIPName(v.Key), v.Key, conds, func(cur *VIP) (*VIP, error) {
		if cur != nil {
			// a bad body is refused as such before the conflict
			chk := v.Clone()
			chk.normalize()
			if err := chk.Validate(); err != nil {
				return nil, err
			}
			if err := c.checkEncap(chk); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("VIP %s already exists: change it with PUT or PATCH: %w", lb.VIPName(v.Key), ErrConflict)
		}
		return &v, nil
	})
}

// PutVIP creates or replaces a VIP as a whole (settings and reals) and
// reports whether it was created.
func (c *Controller) PutVIP(v VIP, conds ...Precondition) (vip *VIP, created bool, err error) {
	vip, err = c.change("put VIP "+lb.VIPName(v.Key), v.Key, conds, func(cur *VIP) (*VIP, error) {
		created = cur == nil
		return &v, nil
	})
	return vip, created, err
}

// VIPUpdate changes some settings of a VIP; nil fields are left alone.
type VIPUpdate struct {
	// SetFlags are set and ClearFlags cleared (VIP.Flags).
	SetFlags   lb.VIPFlags
	ClearFlags lb.VIPFlags
	Encap      *Encap
	RingSize   *uint32
	Health     *health.Spec
	DownFlows  *DownFlows
	AllDown    *AllDown
	// Disabled: see VIP.Disabled.
	Disabled    *bool
	Description *string
}

// UpdateVIP changes a VIP's settings, keeping its reals.
func (c *Controller) UpdateVIP(key lb.VIPKey, u VIPUpdate, conds ...Precondition) (*VIP, error) {
	return c.change("update VIP "+lb.VIPName(key), key, conds, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		cur.Flags = cur.Flags&^u.ClearFlags | u.SetFlags
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
		if u.Disabled != nil {
			cur.Disabled = *u.Disabled
		}
		if u.Description != nil {
			cur.Description = *u.Description
		}
		return cur, nil
	})
}

// DeleteVIP removes a VIP. Its connection table entries stop matching at
// once and age out of the table.
func (c *Controller) DeleteVIP(key lb.VIPKey, conds ...Precondition) error {
	_, err := c.change("delete VIP "+lb.VIPName(key), key, conds, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		return nil, nil
	})
	return err
}

// SetReals replaces a VIP's whole set of reals.
func (c *Controller) SetReals(key lb.VIPKey, reals []Real, conds ...Precondition) (*VIP, error) {
	return c.change("set reals of VIP "+lb.VIPName(key), key, conds, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		cur.Reals = slices.Clone(reals)
		return cur, nil
	})
}

// PutReal adds a real to a VIP or changes its weight and state, and
// reports whether it was added.
func (c *Controller) PutReal(key lb.VIPKey, r Real, conds ...Precondition) (vip *VIP, created bool, err error) {
	vip, err = c.change("put real "+r.Addr.String()+" of VIP "+lb.VIPName(key), key, conds, func(cur *VIP) (*VIP, error) {
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
func (c *Controller) DeleteReal(key lb.VIPKey, addr netip.Addr, conds ...Precondition) (*VIP, error) {
	return c.change("delete real "+addr.String()+" of VIP "+lb.VIPName(key), key, conds, func(cur *VIP) (*VIP, error) {
		if cur == nil {
			return nil, notFound(key)
		}
		i := slices.IndexFunc(cur.Reals, func(x Real) bool { return x.Addr == addr })
		if i < 0 {
			return nil, fmt.Errorf("real %s of VIP %s: %w", addr, lb.VIPName(key), ErrNotFound)
		}
		cur.Reals = slices.Delete(cur.Reals, i, i+1)
		return cur, nil
	})
}

// change runs one transaction on one VIP: fn turns the current desired
// VIP (a copy, nil if absent) into the next one (nil deletes it); the
// result is validated, converged into the datapath and saved; conds
// are checked first, under the same lock. On any
// failure the datapath is converged back and the state is unchanged.
func (c *Controller) change(op string, key lb.VIPKey, conds []Precondition, fn func(cur *VIP) (*VIP, error)) (*VIP, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkPreconditions(conds); err != nil {
		return nil, err
	}
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
	if onlyDescriptionChanged(cur, next) {
		// Metadata only: nothing in the datapath depends on it, so the
		// change is saved and the ring left as it is.
		if err := c.store.Save(all); err != nil {
			c.log.Warn("change refused: the state could not be saved; nothing was changed", "op", op, "err", err)
			return nil, &ApplyError{Op: op, Err: err, RolledBack: true}
		}
		c.vips = all
		c.publish(Event{Type: "vip_changed", VIP: lb.VIPName(key), Reason: op})
		c.log.Info("applied", "op", op)
		return next.Clone(), nil
	}
	// Save first: a change that cannot be made durable (a full disk)
	// is refused before anything in the datapath moves. The new ring is
	// built meanwhile (it needs no map), so the fsync and the build
	// overlap. A staged save also overlaps the directory's fsync (the
	// rename's durability) with the change going live, and the answer
	// waits for it (Store.SaveStaged says why that is safe).
	var plan *ringPlan
	built := make(chan struct{})
	if next != nil {
		go func() {
			defer close(built)
			plan, _ = c.planRing(next) // on an error converge builds again and reports it
		}()
	} else {
		close(built)
	}
	durable := func() error { return nil }
	if ss, ok := c.store.(stagedSaver); ok {
		durable, err = ss.SaveStaged(all)
	} else {
		err = c.store.Save(all)
	}
	<-built
	if err != nil {
		c.log.Warn("change refused: the state could not be saved; nothing was changed", "op", op, "err", err)
		return nil, &ApplyError{Op: op, Err: err, RolledBack: true}
	}
	// What the datapath had: a rollback reinstalls a removed VIP under
	// this number and generation, so its counters and connection table
	// entries stay its own.
	before, lerr := c.dp.LookupVIP(key)
	had := lerr == nil
	if _, err := c.convergePlanned(key, next, false, plan); err != nil {
		_ = durable()
		return nil, c.rollback(op, key, cur, before, had, err)
	}
	if err := durable(); err != nil {
		// The new file is in place but its rename may not be on disk:
		// undone, the old state saved again, as for any failed change.
		return nil, c.rollback(op, key, cur, before, had, err)
	}
	c.vips = all
	c.syncHealth()
	c.publish(Event{Type: "vip_changed", VIP: lb.VIPName(key), Reason: op})
	// Only now may reals that left the state be undefined: before the
	// change is applied a rollback would have to define them again under
	// new indices, and their connection table entries would be lost.
	// Undefining a pair's index deletes its connection table entries, so
	// the flows of a real that left this VIP follow the ring again, even
	// if the real stays in another VIP (whose pair has an index of its
	// own).
	c.collectReals(all, true)
	c.saveCounters()
	c.log.Info("applied", "op", op)
	return next.Clone(), nil
}

// onlyDescriptionChanged reports whether next differs from cur (both
// normalized) in its description and in nothing else.
func onlyDescriptionChanged(cur, next *VIP) bool {
	if cur == nil || next == nil || cur.Description == next.Description {
		return false
	}
	a, b := *cur, *next
	if !slices.Equal(a.Reals, b.Reals) {
		return false
	}
	a.Reals, b.Reals = nil, nil
	a.Description, b.Description = "", ""
	return reflect.DeepEqual(a, b)
}

// rollback is rollbackMany for one VIP.
func (c *Controller) rollback(op string, key lb.VIPKey, prev *VIP, before datapath.VIP, had bool, cause error) error {
	return c.rollbackMany(op, []undo{{key: key, prev: prev, before: before, had: had}}, cause, c.store.Save)
}

// converge makes the datapath's view of one VIP match want (nil: absent)
// and says what it changed. It only touches what differs, so it serves for
// changes, for rollbacks and for drift repair alike. It defines the reals
// want needs but undefines none: that is collectReals' job, once the
// whole state is settled. verify reads the live ring back and installs the
// built one only if they differ (drift repair, rollback); without it the
// built ring is installed as it is, which costs less than reading a ring
// back when a change has just altered it.
func (c *Controller) converge(key lb.VIPKey, want *VIP, verify bool) ([]string, error) {
	return c.convergePlanned(key, want, verify, nil)
}

// convergePlanned is converge with want's ring already planned (nil:
// build it here).
func (c *Controller) convergePlanned(key lb.VIPKey, want *VIP, verify bool, plan *ringPlan) ([]string, error) {
	var changes []string
	have, err := c.dp.LookupVIP(key)
	exists := err == nil
	if err != nil && !errors.Is(err, datapath.ErrNotFound) {
		return nil, err
	}
	if want == nil {
		delete(c.ringSums, key)
		if exists {
			if err := c.dp.RemoveVIP(key); err != nil {
				return changes, err
			}
			changes = append(changes, "removed VIP")
		}
		return changes, nil
	}

	flags := want.DatapathFlags()
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
	ids := make(map[netip.Addr]datapath.RealID, len(want.Reals))
	var adopt *adopter    // built once per change, only if an index is to be adopted
	var need []netip.Addr // the reals that get a new index
	unreadable := false
	for _, r := range want.Reals {
		pk := RealKey{key, r.Addr}
		if id, ok := c.slots[pk]; ok && live[id] == r.Addr {
			ids[r.Addr] = id
			continue
		}
		delete(c.slots, pk) // none, or the datapath lost it
		if c.adopt {
			if adopt == nil {
				var ring []uint32
				if exists {
					ring, _ = c.dp.Ring(key)
				}
				adopt = c.newAdopter(live, ring)
			}
			if id, ok := adopt.take(r.Addr); ok {
				c.slots[pk] = id
				ids[r.Addr] = id
				continue
			}
		}
		need = append(need, r.Addr)
	}
	if len(need) > 0 {
		// The new indices in one go: a change of many reals is a few
		// map updates, not a few per real.
		defined, err := c.dp.AddRealSlots(need)
		if err != nil {
			return changes, err
		}
		for k, addr := range need {
			id := defined[k]
			c.slots[RealKey{key, addr}] = id
			changes = append(changes, "defined real "+addr.String())
			ids[addr] = id
		}
	}

	reals, backends := c.ringInputs(want)
	sig := ringSig(want, reals, backends, ids)
	if verify {
		// A live ring that cannot be read (its buffer removed, or of
		// another size than vip_info says) is replaced like one that
		// differs.
		current, err := c.dp.Ring(key)
		if errors.Is(err, datapath.ErrRingUnreadable) {
			// A recovered ring lbd may not open (no CAP_SYS_ADMIN):
			// unknown, not a drift. The built ring is written into
			// the idle buffer and flipped to, as a change does; being
			// the same Maglev table, it moves no flow.
			unreadable = true
		}
		if err == nil {
			sum := c.sumRing(current)
			if s, ok := c.ringSums[key]; ok && s.sig == sig && s.sum == sum {
				return changes, nil
			}
			if plan == nil {
				if plan, err = c.planRing(want); err != nil {
					return changes, err
				}
			}
			if slices.Equal(current, plan.ring(&c.ringBuf, ids)) {
				c.ringSums[key] = ringSum{sig: sig, sum: sum}
				return changes, nil
			}
		}
	}
	if plan == nil {
		if plan, err = c.planRing(want); err != nil {
			return changes, err
		}
	}
	ring := plan.ring(&c.ringBuf, ids)
	delete(c.ringSums, key)
	if err := c.dp.SetRing(key, ring); err != nil {
		return changes, err
	}
	c.ringSums[key] = ringSum{sig: sig, sum: c.sumRing(ring)}
	if unreadable {
		c.log.Info(fmt.Sprintf("ring of VIP %s not readable without CAP_SYS_ADMIN: rewritten (identical Maglev table, no flow moves)", lb.VIPName(key)), "slots", len(ring))
		return changes, nil
	}
	changes = append(changes, fmt.Sprintf("replaced ring (%d slots)", len(ring)))
	return changes, nil
}

// ringPlan is a VIP's Maglev ring built before its reals have datapath
// IDs: a slot holds 1 + the index of its real in reals, 0 none; ring
// puts the IDs in, and the datapath takes the table as it is then. A ring
// depends on the reals' names and weights only, so a change can build it
// while its state is being saved, before any real is defined.
type ringPlan struct {
	reals []netip.Addr
	table []uint32
}

// ring is the plan with the reals' IDs, in buf (grown as needed).
func (p *ringPlan) ring(buf *[]uint32, ids map[netip.Addr]datapath.RealID) []uint32 {
	byIndex := make([]uint32, len(p.reals)+1)
	for i, a := range p.reals {
		byIndex[i+1] = uint32(ids[a])
	}
	ring := slices.Grow((*buf)[:0], len(p.table))[:len(p.table)]
	*buf = ring
	for i, x := range p.table {
		ring[i] = byIndex[x]
	}
	return ring
}

// ringInputs are what a VIP's ring is built from: its eligible reals
// (backend i+1 of the plan is reals[i]) and the Maglev backends that are
// not down (all eligible ones if every one is down and the VIP serves all
// then). A disabled VIP has no backends, whatever its AllDown policy: its
// ring is empty, as when every real is down and the VIP drops. The caller
// holds c.mu (health state).
func (c *Controller) ringInputs(v *VIP) (reals []netip.Addr, backends []maglev.Backend) {
	backends = make([]maglev.Backend, 0, len(v.Reals))
	if v.Disabled {
		return nil, backends
	}
	var downs []maglev.Backend // eligible but failing their health checks
	for _, r := range v.Reals {
		if !r.Eligible() {
			continue
		}
		reals = append(reals, r.Addr)
		b := maglev.Backend{Name: r.Addr.String(), ID: uint32(len(reals)), Weight: r.Weight}
		if v.Health.Type != health.None && c.isDown(v.Key, r.Addr) {
			downs = append(downs, b)
			continue
		}
		backends = append(backends, b)
	}
	if len(backends) == 0 && v.AllDown == ServeAll {
		backends = downs // fail open: a broken health check does not take the VIP down
	}
	return reals, backends
}

// planRing builds a VIP's Maglev ring from its ringInputs. With no
// backend, the ring is one empty slot: new flows are dropped (counted as
// no-real) while flows in the connection table keep their (draining)
// reals. The caller holds c.mu (health state, c.builder).
func (c *Controller) planRing(v *VIP) (*ringPlan, error) {
	reals, backends := c.ringInputs(v)
	p := &ringPlan{reals: reals}
	if len(backends) == 0 {
		p.table = []uint32{0}
		return p, nil
	}
	p.table = slices.Grow(c.planTable[:0], int(v.RingSize))[:v.RingSize]
	c.planTable = p.table
	if err := c.builder.BuildInto(p.table, backends); err != nil {
		return nil, fmt.Errorf("build Maglev ring: %w", err)
	}
	return p, nil
}

// ringSig names a ring by what it is built from, with the IDs of the
// VIP's own (VIP, real) pairs (ids, as converge has them): rings with the
// same signature are the same. A disabled VIP's (empty) ring has a
// signature of its own, so that disabling or enabling a VIP never finds
// the ring sum of the other state.
func ringSig(v *VIP, reals []netip.Addr, backends []maglev.Backend, ids map[netip.Addr]datapath.RealID) string {
	if v.Disabled {
		return "disabled"
	}
	if len(backends) == 0 {
		return "empty"
	}
	b := make([]byte, 0, 16+24*len(backends))
	b = strconv.AppendUint(b, uint64(v.RingSize), 10)
	for _, be := range backends {
		b = append(b, ' ')
		b = append(b, be.Name...)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(be.Weight), 10)
		b = append(b, '/')
		b = strconv.AppendUint(b, uint64(ids[reals[be.ID-1]]), 10)
	}
	return string(b)
}

// ringSum remembers the ring last installed in (or found in sync with)
// a VIP's live buffer: its signature and a hash of its slots. A
// reconcile that reads back a ring with that hash, for a VIP whose ring
// would have that signature, need not build it again: the Maglev build
// is most of what a reconcile costs.
type ringSum struct {
	sig string
	sum uint64
}

func (c *Controller) sumRing(ring []uint32) uint64 {
	var h maphash.Hash
	h.SetSeed(c.ringSeed)
	var buf [4096]byte
	b := buf[:0]
	for _, id := range ring {
		b = binary.NativeEndian.AppendUint32(b, id)
		if len(b) == len(buf) {
			h.Write(b)
			b = buf[:0]
		}
	}
	h.Write(b)
	return h.Sum64()
}

// adopter finds datapath indices of an address that no pair owns: after
// a restart the datapath (pinned) kept its indices while the controller
// forgot whose they were. An index in the VIP's live ring is preferred;
// any such index sends to the same address, so forwarding is right
// whichever is taken (only counters of a real shared by VIPs could be
// attributed to the other VIP, if neither ring holds it). It reads the
// owned indices and the ring once per change, not once per real (a
// 65537-slot ring scanned per real made replacing 100 reals take
// tens of milliseconds).
type adopter struct {
	live   map[datapath.RealID]netip.Addr
	owned  map[datapath.RealID]bool
	inRing []datapath.RealID // the ring's distinct indices, in the order of first occurrence
}

func (c *Controller) newAdopter(live map[datapath.RealID]netip.Addr, ring []uint32) *adopter {
	a := &adopter{live: live, owned: make(map[datapath.RealID]bool, len(c.slots))}
	for _, id := range c.slots {
		a.owned[id] = true
	}
	seen := map[datapath.RealID]bool{}
	for _, slot := range ring {
		if id := datapath.RealID(slot); id != 0 && !seen[id] {
			seen[id] = true
			a.inRing = append(a.inRing, id)
		}
	}
	return a
}

// take returns an unowned index of addr, the ring's first if it has one,
// else the lowest, and marks it owned.
func (a *adopter) take(addr netip.Addr) (datapath.RealID, bool) {
	var best datapath.RealID
	for _, id := range a.inRing {
		if a.live[id] == addr && !a.owned[id] {
			best = id
			break
		}
	}
	if best == 0 {
		for id, ad := range a.live {
			if ad == addr && !a.owned[id] && (best == 0 || id < best) {
				best = id
			}
		}
	}
	if best != 0 {
		a.owned[best] = true
	}
	return best, best != 0
}

// collectReals undefines the datapath's real indices of pairs that no
// desired VIP has, keeping their final counters (for a VIP that still
// exists, if keep) in c.removed. A failure here is harmless (an unused
// index costs one slot) and left to the next reconcile.
func (c *Controller) collectReals(all map[lb.VIPKey]*VIP, keep bool) []string {
	live := c.dp.RealSlots()
	owner := make(map[datapath.RealID]RealKey, len(c.slots))
	for pk, id := range c.slots {
		if live[id] != pk.Addr {
			delete(c.slots, pk)
			continue
		}
		owner[id] = pk
	}
	var gone []datapath.RealID
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
		changes = append(changes, "undefined real "+pk.Addr.String()+" of VIP "+lb.VIPName(pk.VIP))
	}
	return changes
}

// Drift is one difference between the kernel maps and the desired state,
// by VIP ("" for what belongs to no one VIP) and map, with what was done
// about it.
type Drift struct {
	VIP string `json:"vip"`
	// Map is the kernel map that differed: vips, vip_info, vip_addrs,
	// vip_filter, reals, rings or config.
	Map     string   `json:"map,omitempty"`
	Changes []string `json:"changes"`
	Error   string   `json:"error,omitempty"`
}

// Reconcile converges the whole datapath to the desired state, reading
// what the kernel maps really hold: entries of vips, vip_info, vip_addrs,
// vip_filter, reals and config that were removed, added or altered
// behind lbd's back are rewritten (a VIP keeps its number and
// generation), desired VIPs are installed, their live rings read back and
// rewritten where they differ, VIPs the state does not name removed and
// unused reals undefined. It returns what differed, by VIP and map; on a
// fresh datapath that is everything, on a healthy one nothing.
func (c *Controller) Reconcile() ([]Drift, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	drifts, err := c.repairMaps()
	if err != nil {
		errs = append(errs, err)
	}
	keys := make(map[lb.VIPKey]bool)
	for _, v := range c.dp.VIPs() {
		keys[v.Key] = true
	}
	for k := range c.vips {
		keys[k] = true
	}
	ordered := slices.SortedFunc(maps.Keys(keys), lb.VIPKey.Compare)
	for _, k := range ordered {
		changes, err := c.converge(k, c.vips[k], true)
		if err != nil {
			errs = append(errs, fmt.Errorf("VIP %s: %w", lb.VIPName(k), err))
		}
		var byMap []Drift
		for _, ch := range changes {
			m := changeMap(ch)
			i := slices.IndexFunc(byMap, func(d Drift) bool { return d.Map == m })
			if i < 0 {
				byMap = append(byMap, Drift{VIP: lb.VIPName(k), Map: m})
				i = len(byMap) - 1
			}
			byMap[i].Changes = append(byMap[i].Changes, ch)
		}
		if err != nil {
			if len(byMap) == 0 {
				byMap = append(byMap, Drift{VIP: lb.VIPName(k), Map: datapath.MapVIPs})
			}
			byMap[len(byMap)-1].Error = err.Error()
		}
		drifts = append(drifts, byMap...)
	}
	if changes := c.collectReals(c.vips, true); len(changes) > 0 {
		drifts = append(drifts, Drift{VIP: "", Map: datapath.MapReals, Changes: changes})
	}
	c.adopt = false
	c.saveCounters()
	c.syncHealth()
	c.drifts.Add(uint64(len(drifts)))
	for _, d := range drifts {
		c.log.Warn("datapath differed from desired state", "vip", d.VIP, "map", d.Map, "changes", d.Changes, "error", d.Error)
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
func (c *Controller) Ring(key lb.VIPKey) (size int, shares []RingShare, empty int, err error) {
	v, err := c.VIP(key)
	if err != nil {
		return 0, nil, 0, err
	}
	ring, err := c.dp.Ring(key)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("read ring of VIP %s: %w", lb.VIPName(key), err)
	}
	counts := make(map[datapath.RealID]int)
	for _, id := range ring {
		counts[datapath.RealID(id)]++
	}
	c.mu.Lock()
	reals := make(map[netip.Addr]datapath.RealID, len(v.Reals))
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

func notFound(key lb.VIPKey) error {
	return fmt.Errorf("VIP %s: %w", lb.VIPName(key), ErrNotFound)
}

func sortedVIPs(vips map[lb.VIPKey]*VIP) []*VIP {
	out := slices.Collect(maps.Values(vips))
	slices.SortFunc(out, func(a, b *VIP) int { return a.Key.Compare(b.Key) })
	return out
}
