// Package fakedp is an in-memory stand-in for the XDP balancer's map
// operations (control.Datapath), for tests of control and api that need
// no kernel. It keeps the balancer's contract (errors wrap datapath.ErrNotFound,
// ErrExists, ErrLimit) and can be made to fail on chosen operations.
package fakedp

import (
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/lbd-dev/lbd/lb"
	"github.com/lbd-dev/lbd/lb/datapath"
)

// Datapath is the fake. Its exported fields are its state, for tests to
// inspect and tamper with.
type Datapath struct {
	VIPMap       map[lb.VIPKey]datapath.VIP
	Rings        map[lb.VIPKey][]uint32
	RealMap      map[netip.Addr]datapath.RealID // the latest index of each address
	Slots        map[datapath.RealID]netip.Addr // every defined index
	Usage        datapath.TableUsage
	nextNum      uint32
	nextID       datapath.RealID
	MaxVIPs      int
	FlowList     []datapath.Flow
	VIPCounters  map[lb.VIPKey]datapath.VIPStats
	RealCounters map[datapath.RealID]datapath.RealStats
	Global       datapath.GlobalStats
	Config       datapath.Config
	Calls        []string
	// Fail, if set, is asked before every mutation; a non-nil result is
	// returned instead of doing it.
	Fail func(op string) error
	// Now is the clock Tick reads (zero: just after the latest flow).
	Now time.Time
	// BeforeFlows, if set, is called at the start of every Flows, e.g. to
	// change the table between the pages of a listing.
	BeforeFlows func()
}

// New returns an empty fake with room for 512 VIPs.
func New() *Datapath {
	return &Datapath{
		VIPMap: map[lb.VIPKey]datapath.VIP{}, Rings: map[lb.VIPKey][]uint32{},
		RealMap: map[netip.Addr]datapath.RealID{}, Slots: map[datapath.RealID]netip.Addr{}, nextID: 1, MaxVIPs: 512,
		VIPCounters: map[lb.VIPKey]datapath.VIPStats{}, RealCounters: map[datapath.RealID]datapath.RealStats{},
	}
}

// ErrInjected is what tests usually make Fail return.
var ErrInjected = errors.New("injected failure")

func (f *Datapath) mutate(op string) error {
	f.Calls = append(f.Calls, op)
	if f.Fail != nil {
		return f.Fail(op)
	}
	return nil
}

func (f *Datapath) AddVIP(key lb.VIPKey, flags lb.VIPFlags) error {
	if err := f.mutate("AddVIP " + key.String()); err != nil {
		return err
	}
	if _, ok := f.VIPMap[key]; ok {
		return fmt.Errorf("VIP %s: %w", key, datapath.ErrExists)
	}
	if len(f.VIPMap) >= f.MaxVIPs {
		return fmt.Errorf("VIP %s: all VIP slots in use: %w", key, datapath.ErrLimit)
	}
	f.nextNum++
	f.VIPMap[key] = datapath.VIP{Key: key, Num: f.nextNum, Flags: flags, Gen: f.nextNum}
	return nil
}

// RestoreVIP installs a removed VIP again with its number and generation.
func (f *Datapath) RestoreVIP(v datapath.VIP) error {
	if err := f.mutate("RestoreVIP " + v.Key.String()); err != nil {
		return err
	}
	if _, ok := f.VIPMap[v.Key]; ok {
		return fmt.Errorf("VIP %s: %w", v.Key, datapath.ErrExists)
	}
	v.RingSize = 0
	f.VIPMap[v.Key] = v
	return nil
}

// ReadMaps returns the fake's state as the kernel maps would hold it: the
// fake has no drift below its own bookkeeping.
func (f *Datapath) ReadMaps() (*datapath.MapState, error) {
	s := &datapath.MapState{VIPs: map[lb.VIPKey]uint32{}, VIPInfo: map[uint32]datapath.VIPInfo{},
		VIPAddrs: map[netip.Addr]datapath.AddrFlags{}, Reals: map[datapath.RealID]netip.Addr{}, Config: f.Config}
	keys := slices.Collect(maps.Keys(f.VIPMap))
	for k, v := range f.VIPMap {
		s.VIPs[k] = v.Num
		s.VIPInfo[v.Num] = datapath.VIPInfo{Flags: v.Flags, RingSize: v.RingSize, Buf: v.Buf, Gen: v.Gen}
		s.VIPAddrs[k.Addr] = datapath.AddrFlagsOf(k.Addr, keys)
	}
	for id, a := range f.Slots {
		s.Reals[id] = a
	}
	return s, nil
}

// FilterOf: the fake has no filter.
func (f *Datapath) FilterOf([]netip.Addr) []uint64 { return nil }

func (f *Datapath) RepairVIP(key lb.VIPKey) error { return f.mutate("RepairVIP " + key.String()) }
func (f *Datapath) ClearVIPEntry(key lb.VIPKey) error {
	return f.mutate("ClearVIPEntry " + key.String())
}
func (f *Datapath) ClearVIPInfo(num uint32) error { return f.mutate(fmt.Sprint("ClearVIPInfo ", num)) }
func (f *Datapath) SyncAddrs() error              { return f.mutate("SyncAddrs") }
func (f *Datapath) RepairRealSlot(id datapath.RealID) error {
	return f.mutate(fmt.Sprint("RepairRealSlot ", id))
}
func (f *Datapath) ClearReal(id datapath.RealID) error { return f.mutate(fmt.Sprint("ClearReal ", id)) }
func (f *Datapath) SetConfig(c datapath.Config) error {
	if err := f.mutate("SetConfig"); err != nil {
		return err
	}
	f.Config = c
	return nil
}

func (f *Datapath) SetVIPFlags(key lb.VIPKey, flags lb.VIPFlags) error {
	if err := f.mutate("SetVIPFlags " + key.String()); err != nil {
		return err
	}
	v, ok := f.VIPMap[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, datapath.ErrNotFound)
	}
	v.Flags = flags
	f.VIPMap[key] = v
	return nil
}

func (f *Datapath) RemoveVIP(key lb.VIPKey) error {
	if err := f.mutate("RemoveVIP " + key.String()); err != nil {
		return err
	}
	if _, ok := f.VIPMap[key]; !ok {
		return fmt.Errorf("VIP %s: %w", key, datapath.ErrNotFound)
	}
	delete(f.VIPMap, key)
	delete(f.Rings, key)
	return nil
}

func (f *Datapath) VIPs() []datapath.VIP { return slices.Collect(maps.Values(f.VIPMap)) }

func (f *Datapath) LookupVIP(key lb.VIPKey) (datapath.VIP, error) {
	v, ok := f.VIPMap[key]
	if !ok {
		return datapath.VIP{}, fmt.Errorf("VIP %s: %w", key, datapath.ErrNotFound)
	}
	return v, nil
}

func (f *Datapath) SetRing(key lb.VIPKey, ring []uint32) error {
	if err := f.mutate("SetRing " + key.String()); err != nil {
		return err
	}
	v, ok := f.VIPMap[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, datapath.ErrNotFound)
	}
	for _, id := range ring {
		if _, ok := f.Slots[datapath.RealID(id)]; id != 0 && !ok {
			return fmt.Errorf("ring holds undefined real %d", id)
		}
	}
	f.Rings[key] = slices.Clone(ring)
	v.RingSize = uint32(len(ring))
	f.VIPMap[key] = v
	return nil
}

func (f *Datapath) Ring(key lb.VIPKey) ([]uint32, error) {
	if _, ok := f.VIPMap[key]; !ok {
		return nil, fmt.Errorf("VIP %s: %w", key, datapath.ErrNotFound)
	}
	return slices.Clone(f.Rings[key]), nil
}

func (f *Datapath) AddReal(addr netip.Addr) (datapath.RealID, error) {
	if id, ok := f.RealMap[addr]; ok {
		return id, nil
	}
	if err := f.mutate("AddReal " + addr.String()); err != nil {
		return 0, err
	}
	id := f.nextID
	f.nextID++
	f.RealMap[addr] = id
	f.Slots[id] = addr
	return id, nil
}

func (f *Datapath) AddRealSlots(addrs []netip.Addr) ([]datapath.RealID, error) {
	if err := f.mutate(fmt.Sprintf("AddRealSlots %v", addrs)); err != nil {
		return nil, err
	}
	ids := make([]datapath.RealID, len(addrs))
	for k, addr := range addrs {
		id := f.nextID
		f.nextID++
		if _, ok := f.RealMap[addr]; !ok {
			f.RealMap[addr] = id
		}
		f.Slots[id] = addr
		delete(f.RealCounters, id)
		ids[k] = id
	}
	return ids, nil
}

func (f *Datapath) RemoveRealSlots(ids []datapath.RealID) (map[datapath.RealID]datapath.RealStats, error) {
	if err := f.mutate(fmt.Sprintf("RemoveRealSlots %v", ids)); err != nil {
		return nil, err
	}
	for _, id := range ids {
		if _, ok := f.Slots[id]; !ok {
			return nil, fmt.Errorf("real index %d: %w", id, datapath.ErrNotFound)
		}
	}
	final := map[datapath.RealID]datapath.RealStats{}
	for _, id := range ids {
		addr := f.Slots[id]
		delete(f.Slots, id)
		if f.RealMap[addr] == id {
			delete(f.RealMap, addr)
			for other, a := range f.Slots {
				if a == addr {
					f.RealMap[addr] = other
				}
			}
		}
		final[id] = f.RealCounters[id]
		f.FlowList = slices.DeleteFunc(f.FlowList, func(fl datapath.Flow) bool { return fl.Real == id })
	}
	return final, nil
}

func (f *Datapath) RealSlots() map[datapath.RealID]netip.Addr { return maps.Clone(f.Slots) }

func (f *Datapath) ResetVIPStats(key lb.VIPKey) error {
	if err := f.mutate("ResetVIPStats " + key.String()); err != nil {
		return err
	}
	delete(f.VIPCounters, key)
	return nil
}

func (f *Datapath) ResetRealStats(id datapath.RealID) error {
	if err := f.mutate(fmt.Sprintf("ResetRealStats %d", id)); err != nil {
		return err
	}
	delete(f.RealCounters, id)
	return nil
}

func (f *Datapath) FlowTableUsage() (datapath.TableUsage, error) { return f.Usage, nil }

func (f *Datapath) RemoveReal(addr netip.Addr) error {
	if err := f.mutate("RemoveReal " + addr.String()); err != nil {
		return err
	}
	if _, ok := f.RealMap[addr]; !ok {
		return fmt.Errorf("real %s: %w", addr, datapath.ErrNotFound)
	}
	delete(f.Slots, f.RealMap[addr])
	delete(f.RealMap, addr)
	return nil
}

func (f *Datapath) Reals() map[netip.Addr]datapath.RealID { return maps.Clone(f.RealMap) }

func (f *Datapath) GlobalStats() (datapath.GlobalStats, error) { return f.Global, nil }

func (f *Datapath) VIPStats(key lb.VIPKey) (datapath.VIPStats, error) {
	if _, ok := f.VIPMap[key]; !ok {
		return datapath.VIPStats{}, fmt.Errorf("VIP %s: %w", key, datapath.ErrNotFound)
	}
	return f.VIPCounters[key], nil
}

func (f *Datapath) RealStats(id datapath.RealID) (datapath.RealStats, error) {
	return f.RealCounters[id], nil
}

// Flows yields FlowList. The fake's clock is wall time in milliseconds:
// a flow's LastTick is its LastSeen's.
func (f *Datapath) Flows() iter.Seq2[datapath.Flow, error] {
	return func(yield func(datapath.Flow, error) bool) {
		if f.BeforeFlows != nil {
			f.BeforeFlows()
		}
		for _, fl := range f.FlowList {
			fl.LastTick = uint32(fl.LastSeen.UnixMilli())
			if !yield(fl, nil) {
				return
			}
		}
	}
}

// Tick is Now in milliseconds, or if Now is zero a millisecond after the
// latest LastSeen of FlowList.
func (f *Datapath) Tick() (uint32, error) {
	now := f.Now
	if now.IsZero() {
		for _, fl := range f.FlowList {
			if fl.LastSeen.After(now) {
				now = fl.LastSeen
			}
		}
		now = now.Add(time.Millisecond)
	}
	return uint32(now.UnixMilli()), nil
}

func (f *Datapath) DeleteFlows(match func(datapath.Flow) bool) (int, error) {
	n := len(f.FlowList)
	f.FlowList = slices.DeleteFunc(f.FlowList, match)
	return n - len(f.FlowList), nil
}
