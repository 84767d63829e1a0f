package control

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"

	"github.com/lbd-dev/lbd/control/health"
	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// Diff is what applying a desired set changes: VIPs added, removed and
// changed, ordered by address, protocol and port.
type Diff struct {
	Added   []*VIP
	Removed []*VIP
	Changed []VIPChange
	// Base is the version (SetVersion) of the set the diff was computed
	// against: a dry run's Base, given back as IfSet(Base), applies
	// exactly the diff shown or nothing.
	Base string
}

// Empty reports whether the diff changes nothing.
func (d Diff) Empty() bool { return len(d.Added) == 0 && len(d.Removed) == 0 && len(d.Changed) == 0 }

// VIPChange is how one VIP differs between the current and the desired
// state.
type VIPChange struct {
	Old, New *VIP
	// Settings names the settings that differ, by their API names
	// (sticky, ring_size, health_check...).
	Settings     []string
	AddedReals   []Real
	RemovedReals []Real
	ChangedReals []RealChange
}

// RealChange is a real whose weight or state changes.
type RealChange struct{ Old, New Real }

// diffVIP compares two normalized VIPs of the same key; ok is false when
// they are equal.
func diffVIP(old, new *VIP) (ch VIPChange, ok bool) {
	ch = VIPChange{Old: old, New: new}
	setting := func(name string, differ bool) {
		if differ {
			ch.Settings = append(ch.Settings, name)
		}
	}
	for _, f := range lb.VIPFlagTable {
		if f.Setting {
			setting(f.Key, old.Flags&f.Flag != new.Flags&f.Flag)
		}
	}
	setting("encap", old.Encap != new.Encap)
	setting("ring_size", old.RingSize != new.RingSize)
	setting("health_check", !reflect.DeepEqual(old.Health, new.Health))
	setting("down_flows", old.DownFlows != new.DownFlows)
	setting("all_down", old.AllDown != new.AllDown)
	setting("disabled", old.Disabled != new.Disabled)
	setting("description", old.Description != new.Description)
	for _, r := range new.Reals {
		o, had := old.Real(r.Addr)
		switch {
		case !had:
			ch.AddedReals = append(ch.AddedReals, r)
		case o != r:
			ch.ChangedReals = append(ch.ChangedReals, RealChange{Old: o, New: r})
		}
	}
	for _, r := range old.Reals {
		if _, still := new.Real(r.Addr); !still {
			ch.RemovedReals = append(ch.RemovedReals, r)
		}
	}
	ok = len(ch.Settings) > 0 || len(ch.AddedReals) > 0 || len(ch.RemovedReals) > 0 || len(ch.ChangedReals) > 0
	return ch, ok
}

// diffSets compares two whole states.
func diffSets(cur, want map[lb.VIPKey]*VIP) Diff {
	var d Diff
	for _, v := range sortedVIPs(want) {
		old, had := cur[v.Key]
		if !had {
			d.Added = append(d.Added, v.Clone())
			continue
		}
		if ch, ok := diffVIP(old.Clone(), v.Clone()); ok {
			d.Changed = append(d.Changed, ch)
		}
	}
	for _, v := range sortedVIPs(cur) {
		if _, still := want[v.Key]; !still {
			d.Removed = append(d.Removed, v.Clone())
		}
	}
	return d
}

// Apply makes the desired state exactly vips: VIPs it does not name are
// removed, the others created or changed to match. It is one
// transaction like every change: every VIP is validated first, the whole
// new state is saved, then the datapath converged; on any failure
// nothing changes (an *ApplyError or *InvalidError says why). Applying
// the set the controller already has changes nothing and writes nothing.
// With dryRun it only says what it would change. conds are checked
// first, under the same lock (a dry run checks them too).
func (c *Controller) Apply(vips []VIP, dryRun bool, conds ...Precondition) (Diff, error) {
	return c.apply(vips, dryRun, c.store.Save, conds)
}

// ApplyFrom is Apply of a desired state that comes from elsewhere (the
// fleet's store): it is saved through save, not the controller's Saver,
// and so is the old state again when the change fails and is rolled
// back, so that neither is written back where the state came from.
func (c *Controller) ApplyFrom(vips []VIP, save func(map[lb.VIPKey]*VIP) error) (Diff, error) {
	return c.apply(vips, false, save, nil)
}

func (c *Controller) apply(vips []VIP, dryRun bool, save func(map[lb.VIPKey]*VIP) error, conds []Precondition) (Diff, error) {
	want := make(map[lb.VIPKey]*VIP, len(vips))
	for i := range vips {
		v := vips[i].Clone()
		v.normalize()
		if err := v.Validate(); err != nil {
			return Diff{}, inSet(i, v.Key, err)
		}
		if _, dup := want[v.Key]; dup {
			return Diff{}, invalid(fmt.Sprintf("vips[%d]", i), "VIP %s is listed twice: list each VIP once", lb.VIPName(v.Key))
		}
		want[v.Key] = v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkPreconditions(conds); err != nil {
		return Diff{}, err
	}
	for i := range vips {
		if err := c.checkEncap(want[vips[i].Key]); err != nil {
			return Diff{}, inSet(i, vips[i].Key, err)
		}
	}
	d := diffSets(c.vips, want)
	d.Base = SetVersion(sortedVIPs(c.vips))
	if dryRun || d.Empty() {
		return d, nil
	}
	op := fmt.Sprintf("apply %d VIPs (%d added, %d removed, %d changed)", len(want), len(d.Added), len(d.Removed), len(d.Changed))
	if err := save(want); err != nil {
		c.log.Warn("change refused: the state could not be saved; nothing was changed", "op", op, "err", err)
		return Diff{}, &ApplyError{Op: op, Err: err, RolledBack: true}
	}
	// Removed VIPs go first, so that their datapath entries are free for
	// the added ones.
	var keys []lb.VIPKey
	for _, v := range d.Removed {
		keys = append(keys, v.Key)
	}
	for _, ch := range d.Changed {
		if !onlyDescriptionChanged(ch.Old, ch.New) {
			keys = append(keys, ch.New.Key)
		}
	}
	for _, v := range d.Added {
		keys = append(keys, v.Key)
	}
	var undos []undo
	for _, k := range keys {
		before, lerr := c.dp.LookupVIP(k)
		undos = append(undos, undo{key: k, prev: c.vips[k], before: before, had: lerr == nil})
		if _, err := c.converge(k, want[k], false); err != nil {
			return Diff{}, c.rollbackMany(op, undos, err, save)
		}
	}
	c.vips = want
	c.syncHealth()
	for _, v := range d.Removed {
		c.publish(Event{Type: "vip_changed", VIP: lb.VIPName(v.Key), Reason: op})
	}
	for _, ch := range d.Changed {
		c.publish(Event{Type: "vip_changed", VIP: lb.VIPName(ch.New.Key), Reason: op})
	}
	for _, v := range d.Added {
		c.publish(Event{Type: "vip_changed", VIP: lb.VIPName(v.Key), Reason: op})
	}
	c.collectReals(want, true)
	c.saveCounters()
	c.log.Info("applied", "op", op)
	return d, nil
}

// inSet says which VIP of a set (the i-th, from 0) an error is about.
func inSet(i int, key lb.VIPKey, err error) error {
	var inv *InvalidError
	if !errors.As(err, &inv) {
		return err
	}
	return invalid(fmt.Sprintf("vips[%d].%s", i, inv.Field), "VIP %d of the set (%s): %s", i+1, lb.VIPName(key), inv.Msg)
}

// Fingerprint is a hash (SHA-256, hex) of everything that decides where
// a packet goes: the VIPs, their flags, encapsulation, ring sizes and
// policies, their reals with weights and states, and the health state
// the rings are built with. Nodes with the same inputs have the same
// fingerprint, whatever order the inputs came in; descriptions and
// health check timings do not count (they route nothing).
func (c *Controller) Fingerprint() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := sha256.New()
	b := make([]byte, 0, 256)
	for _, v := range sortedVIPs(c.vips) {
		b = append(b[:0], "vip "...)
		b = append(b, lb.VIPName(v.Key)...)
		b = append(b, " flags="...)
		b = strconv.AppendUint(b, uint64(v.DatapathFlags()), 16)
		b = append(b, " ring="...)
		b = strconv.AppendUint(b, uint64(v.RingSize), 10)
		b = append(b, " down_flows="...)
		b = append(b, v.DownFlows...)
		b = append(b, " all_down="...)
		b = append(b, v.AllDown...)
		b = append(b, " disabled="...)
		b = strconv.AppendBool(b, v.Disabled)
		checked := v.Health.Type != health.None
		b = append(b, " checked="...)
		b = strconv.AppendBool(b, checked)
		b = append(b, '\n')
		for _, r := range v.Reals {
			b = append(b, " real "...)
			b = r.Addr.AppendTo(b)
			b = append(b, " weight="...)
			b = strconv.AppendUint(b, uint64(r.Weight), 10)
			b = append(b, " state="...)
			b = append(b, r.State...)
			if checked {
				b = append(b, " down="...)
				b = strconv.AppendBool(b, c.isDown(v.Key, r.Addr))
			}
			b = append(b, '\n')
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// undo is what a rollback needs to put one VIP back: its desired state
// before the change (nil: absent) and the datapath's view of it then.
type undo struct {
	key    lb.VIPKey
	prev   *VIP
	before datapath.VIP
	had    bool
}

// rollbackMany puts the datapath and the state file back as they were
// before a change whose new state was saved but could not be applied:
// each VIP (as before, had: the datapath's view then) under its old
// number and generation, and the old state saved again.
func (c *Controller) rollbackMany(op string, undos []undo, cause error, save func(map[lb.VIPKey]*VIP) error) error {
	var rbErr error
	for _, u := range slices.Backward(undos) {
		var err error
		if _, lerr := c.dp.LookupVIP(u.key); u.had && errors.Is(lerr, datapath.ErrNotFound) {
			err = c.dp.RestoreVIP(u.before)
		}
		if err == nil {
			_, err = c.converge(u.key, u.prev, true)
		}
		if err != nil {
			rbErr = fmt.Errorf("VIP %s: %w", lb.VIPName(u.key), err)
			break
		}
	}
	// Pairs the failed change defined were never part of the state:
	// their indices go, without keeping counters as removed reals.
	c.collectReals(c.vips, false)
	c.saveCounters()
	if err := save(c.vips); err != nil {
		rbErr = errors.Join(rbErr, fmt.Errorf("the state file keeps the change the datapath does not have: %w", err))
	}
	if rbErr != nil {
		c.log.Error("change failed and rollback failed", "op", op, "err", cause, "rollback_err", rbErr)
		return &ApplyError{Op: op, Err: cause, RollbackErr: rbErr}
	}
	c.log.Warn("change failed, rolled back", "op", op, "err", cause)
	return &ApplyError{Op: op, Err: cause, RolledBack: true}
}
