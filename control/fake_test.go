package control

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"

	"github.com/lbd-dev/lbd/bpf/xdp"
)

// fakeDatapath is an in-memory Datapath with the same contract as
// *xdp.Balancer (errors wrap xdp.ErrNotFound / ErrExists / ErrLimit), and
// a hook to make chosen operations fail.
type fakeDatapath struct {
	vips    map[xdp.VIPKey]xdp.VIP
	rings   map[xdp.VIPKey][]xdp.RealID
	reals   map[netip.Addr]xdp.RealID
	nextNum uint32
	nextID  xdp.RealID
	maxVIPs int
	flows   []xdp.Flow
	stats   map[xdp.VIPKey]xdp.VIPStats
	rstats  map[xdp.RealID]xdp.RealStats
	global  xdp.GlobalStats
	calls   []string
	// fail, if set, is asked before every mutation; a non-nil result is
	// returned instead of doing it.
	fail func(op string) error
}

func newFake() *fakeDatapath {
	return &fakeDatapath{
		vips: map[xdp.VIPKey]xdp.VIP{}, rings: map[xdp.VIPKey][]xdp.RealID{},
		reals: map[netip.Addr]xdp.RealID{}, nextID: 1, maxVIPs: 512,
		stats: map[xdp.VIPKey]xdp.VIPStats{}, rstats: map[xdp.RealID]xdp.RealStats{},
	}
}

var errInjected = errors.New("injected failure")

func (f *fakeDatapath) mutate(op string) error {
	f.calls = append(f.calls, op)
	if f.fail != nil {
		return f.fail(op)
	}
	return nil
}

func (f *fakeDatapath) AddVIP(key xdp.VIPKey, flags xdp.VIPFlags) error {
	if err := f.mutate("AddVIP " + VIPName(key)); err != nil {
		return err
	}
	if _, ok := f.vips[key]; ok {
		return fmt.Errorf("VIP %s: %w", key, xdp.ErrExists)
	}
	if len(f.vips) >= f.maxVIPs {
		return fmt.Errorf("VIP %s: all VIP slots in use: %w", key, xdp.ErrLimit)
	}
	f.nextNum++
	f.vips[key] = xdp.VIP{Key: key, Num: f.nextNum, Flags: flags}
	return nil
}

func (f *fakeDatapath) SetVIPFlags(key xdp.VIPKey, flags xdp.VIPFlags) error {
	if err := f.mutate("SetVIPFlags " + VIPName(key)); err != nil {
		return err
	}
	v, ok := f.vips[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, xdp.ErrNotFound)
	}
	v.Flags = flags
	f.vips[key] = v
	return nil
}

func (f *fakeDatapath) RemoveVIP(key xdp.VIPKey) error {
	if err := f.mutate("RemoveVIP " + VIPName(key)); err != nil {
		return err
	}
	if _, ok := f.vips[key]; !ok {
		return fmt.Errorf("VIP %s: %w", key, xdp.ErrNotFound)
	}
	delete(f.vips, key)
	delete(f.rings, key)
	return nil
}

func (f *fakeDatapath) VIPs() []xdp.VIP { return slices.Collect(maps.Values(f.vips)) }

func (f *fakeDatapath) LookupVIP(key xdp.VIPKey) (xdp.VIP, error) {
	v, ok := f.vips[key]
	if !ok {
		return xdp.VIP{}, fmt.Errorf("VIP %s: %w", key, xdp.ErrNotFound)
	}
	return v, nil
}

func (f *fakeDatapath) SetRing(key xdp.VIPKey, ring []xdp.RealID) error {
	if err := f.mutate("SetRing " + VIPName(key)); err != nil {
		return err
	}
	v, ok := f.vips[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, xdp.ErrNotFound)
	}
	for _, id := range ring {
		if id != 0 && !slices.Contains(slices.Collect(maps.Values(f.reals)), id) {
			return fmt.Errorf("ring holds undefined real %d", id)
		}
	}
	f.rings[key] = slices.Clone(ring)
	v.RingSize = uint32(len(ring))
	f.vips[key] = v
	return nil
}

func (f *fakeDatapath) Ring(key xdp.VIPKey) ([]xdp.RealID, error) {
	if _, ok := f.vips[key]; !ok {
		return nil, fmt.Errorf("VIP %s: %w", key, xdp.ErrNotFound)
	}
	return slices.Clone(f.rings[key]), nil
}

func (f *fakeDatapath) AddReal(addr netip.Addr) (xdp.RealID, error) {
	if id, ok := f.reals[addr]; ok {
		return id, nil
	}
	if err := f.mutate("AddReal " + addr.String()); err != nil {
		return 0, err
	}
	id := f.nextID
	f.nextID++
	f.reals[addr] = id
	return id, nil
}

func (f *fakeDatapath) RemoveReal(addr netip.Addr) error {
	if err := f.mutate("RemoveReal " + addr.String()); err != nil {
		return err
	}
	if _, ok := f.reals[addr]; !ok {
		return fmt.Errorf("real %s: %w", addr, xdp.ErrNotFound)
	}
	delete(f.reals, addr)
	return nil
}

func (f *fakeDatapath) Reals() map[netip.Addr]xdp.RealID { return maps.Clone(f.reals) }

func (f *fakeDatapath) GlobalStats() (xdp.GlobalStats, error) { return f.global, nil }

func (f *fakeDatapath) VIPStats(key xdp.VIPKey) (xdp.VIPStats, error) {
	if _, ok := f.vips[key]; !ok {
		return xdp.VIPStats{}, fmt.Errorf("VIP %s: %w", key, xdp.ErrNotFound)
	}
	return f.stats[key], nil
}

func (f *fakeDatapath) RealStats(id xdp.RealID) (xdp.RealStats, error) { return f.rstats[id], nil }

func (f *fakeDatapath) Flows() iter.Seq2[xdp.Flow, error] {
	return func(yield func(xdp.Flow, error) bool) {
		for _, fl := range f.flows {
			if !yield(fl, nil) {
				return
			}
		}
	}
}

func (f *fakeDatapath) DeleteFlows(match func(xdp.Flow) bool) (int, error) {
	n := len(f.flows)
	f.flows = slices.DeleteFunc(f.flows, match)
	return n - len(f.flows), nil
}

// memStore is a Saver that keeps the last saved state and can fail.
type memStore struct {
	saved map[xdp.VIPKey]*VIP
	saves int
	err   error
}

func (m *memStore) Save(vips map[xdp.VIPKey]*VIP) error {
	if m.err != nil {
		return m.err
	}
	m.saves++
	m.saved = make(map[xdp.VIPKey]*VIP, len(vips))
	for k, v := range vips {
		m.saved[k] = v.Clone()
	}
	return nil
}
