package xdp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// AddReal defines a real address and returns its ID; adding an address
// that is already defined returns the same ID. Reals are shared by all
// VIPs that use them. It fails with ErrLimit when MaxReals-1 reals exist.
func (b *Balancer) AddReal(addr netip.Addr) (RealID, error) {
	if err := lb.CheckAddr("real", addr); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if id, ok := b.reals[addr]; ok {
		return id, nil
	}
	return b.defineIndex(addr, false)
}

// RemoveReal undefines a real's index that AddReal gave. Ring slots that still hold its ID drop
// their packets, and connection table entries that point to it choose a
// real again on their next packet: take it out of every ring first.
func (b *Balancer) RemoveReal(addr netip.Addr) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	id, ok := b.reals[addr]
	if !ok {
		return fmt.Errorf("real %s: %w", addr, ErrNotFound)
	}
	var def balancerRealDef
	if err := b.objs.Reals.Update(uint32(id), &def, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("real %s: clear reals map: %w", addr, err)
	}
	delete(b.slots, id)
	b.forgetIndex(addr, id)
	b.realIDs[id] = false
	return nil
}

// forgetIndex: id, an index of addr, is no longer defined; if it stood
// for addr in b.reals, another index of addr does if there is one. b.mu
// is held.
func (b *Balancer) forgetIndex(addr netip.Addr, id RealID) {
	if b.reals[addr] != id {
		return
	}
	delete(b.reals, addr)
	for other, a := range b.slots {
		if a == addr && (b.reals[addr] == 0 || other < b.reals[addr]) {
			b.reals[addr] = other
		}
	}
}

// AddRealSlot defines a new real index for addr, even if addr has other
// indices. The controller gives each (VIP, real) pair its own index, so
// that real_stats, which the datapath keeps per index, counts per pair.
// The index's counters start from zero. Indices are taken round-robin:
// a freed one is reused only after every other free one, so a packet in
// flight through a freed index cannot be counted against its next pair.
// It fails with ErrLimit when MaxReals-1 indices are in use.
func (b *Balancer) AddRealSlot(addr netip.Addr) (RealID, error) {
	if err := lb.CheckAddr("real", addr); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.defineIndex(addr, true)
}

// AddRealSlots is AddRealSlot for many addresses at once, in two map
// updates in all rather than two per real: ids[i] is addrs[i]'s new
// index. On an error no index is taken.
func (b *Balancer) AddRealSlots(addrs []netip.Addr) ([]RealID, error) {
	for _, addr := range addrs {
		if err := lb.CheckAddr("real", addr); err != nil {
			return nil, err
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.defineIndices(addrs, true)
}

// defineIndex is defineIndices for one address.
func (b *Balancer) defineIndex(addr netip.Addr, roundRobin bool) (RealID, error) {
	ids, err := b.defineIndices([]netip.Addr{addr}, roundRobin)
	if err != nil {
		return 0, err
	}
	return ids[0], nil
}

// defineIndices takes a free real index for each address (round-robin
// from b.nextReal if roundRobin, else the lowest), zeroes their counters
// and writes the addresses into them, each map in one batch. On an error
// the indices are free again. b.mu is held.
func (b *Balancer) defineIndices(addrs []netip.Addr, roundRobin bool) ([]RealID, error) {
	idx := make([]uint32, 0, len(addrs))
	release := func() {
		for _, i := range idx {
			b.realIDs[i] = false
		}
	}
	next := b.nextReal
	for _, addr := range addrs {
		var i uint32
		ok := false
		if roundRobin {
			i, ok = takeFree(b.realIDs, int(next))
		}
		if !ok {
			i, ok = takeFree(b.realIDs, 1)
		}
		if !ok {
			release()
			return nil, fmt.Errorf("real %s: all %d real slots are in use (each real of each VIP takes one): raise --max-reals (max_reals; a new limit needs lbd cleanup of the old pins): %w", addr, b.limits.MaxReals-1, ErrLimit)
		}
		if roundRobin {
			next = i + 1
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		return nil, nil
	}
	if err := b.clearRealStats(idx...); err != nil {
		release()
		return nil, err
	}
	defs := make([]balancerRealDef, len(idx))
	for k, addr := range addrs {
		words, fam := addrWords(addr)
		defs[k] = balancerRealDef{Addr: words, Family: uint32(fam)}
	}
	if err := batchUpdate(b.objs.Reals, idx, defs, 1); err != nil {
		// Some may be written: free indices hold no address.
		_ = batchUpdate(b.objs.Reals, idx, make([]balancerRealDef, len(idx)), 1)
		release()
		return nil, fmt.Errorf("real %s: write reals map: %w", addrs[0], err)
	}
	b.nextReal = next
	ids := make([]RealID, len(idx))
	for k, addr := range addrs {
		ids[k] = RealID(idx[k])
		b.slots[ids[k]] = addr
		if _, ok := b.reals[addr]; !ok {
			b.reals[addr] = ids[k]
		}
	}
	return ids, nil
}

// batchUpdate writes vals[k*per:(k+1)*per] at keys[k] of an array map
// (per: the number of possible CPUs for a per-CPU map, else 1), in one
// batch where the kernel has batch updates, else one key at a time.
func batchUpdate[V any](m *ebpf.Map, keys []uint32, vals []V, per int) error {
	if len(keys) == 1 {
		if per == 1 {
			return m.Update(keys[0], &vals[0], ebpf.UpdateAny)
		}
		return m.Update(keys[0], vals, ebpf.UpdateAny)
	}
	_, err := m.BatchUpdate(keys, vals, nil)
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for k, key := range keys {
		var err error
		if per == 1 {
			err = m.Update(key, &vals[k], ebpf.UpdateAny)
		} else {
			err = m.Update(key, vals[k*per:(k+1)*per], ebpf.UpdateAny)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// RemoveRealSlots undefines real indices and returns their final
// counters. Take them out of every ring first. Connection table entries
// that name them are deleted (one pass over the tables for all of them)
// before the indices are free again, so that no entry of an old pair can
// send packets to an index's next real.
func (b *Balancer) RemoveRealSlots(ids []RealID) (map[RealID]RealStats, error) {
	b.mu.Lock()
	addrs := make(map[RealID]netip.Addr, len(ids))
	for _, id := range ids {
		addr, ok := b.slots[id]
		if !ok {
			b.mu.Unlock()
			return nil, fmt.Errorf("real index %d: %w", id, ErrNotFound)
		}
		addrs[id] = addr
	}
	b.mu.Unlock()
	for id, addr := range addrs {
		var def balancerRealDef
		if err := b.objs.Reals.Update(uint32(id), &def, ebpf.UpdateAny); err != nil {
			return nil, fmt.Errorf("real %s (index %d): clear reals map: %w", addr, id, err)
		}
	}
	// From here the datapath neither picks nor counts these indices (its
	// lookups find no real); the entries that still name them go.
	if _, err := b.DeleteFlows(func(f Flow) bool { _, gone := addrs[f.Real]; return gone }); err != nil {
		return nil, fmt.Errorf("remove reals %v: %w", ids, err)
	}
	final := make(map[RealID]RealStats, len(addrs))
	for id := range addrs {
		st, err := b.RealStats(id)
		if err != nil {
			return nil, err
		}
		final[id] = st
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, addr := range addrs {
		delete(b.slots, id)
		b.forgetIndex(addr, id)
		b.realIDs[id] = false
	}
	return final, nil
}

// RealSlots lists every defined real index with its address.
func (b *Balancer) RealSlots() map[RealID]netip.Addr {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[RealID]netip.Addr, len(b.slots))
	for id, a := range b.slots {
		out[id] = a
	}
	return out
}

// Reals lists the defined real addresses, each with one of its indices
// (the one AddReal gives).
func (b *Balancer) Reals() map[netip.Addr]RealID {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[netip.Addr]RealID, len(b.reals))
	for a, id := range b.reals {
		out[a] = id
	}
	return out
}

// RealAddr returns the address of a defined real ID.
func (b *Balancer) RealAddr(id RealID) (netip.Addr, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a, ok := b.slots[id]
	return a, ok
}
