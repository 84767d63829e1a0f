package xdp

import (
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// RealID is a real's index in the datapath: what ring slots hold. 0 is
// never a real.
type RealID uint32

// AddReal defines a real address and returns its ID; adding an address
// that is already defined returns the same ID. Reals are shared by all
// VIPs that use them. It fails with ErrLimit when MaxReals-1 reals exist.
func (b *Balancer) AddReal(addr netip.Addr) (RealID, error) {
	if err := checkAddr("real", addr); err != nil {
		return 0, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if id, ok := b.reals[addr]; ok {
		return id, nil
	}
	idx, ok := takeFree(b.realIDs, 1)
	if !ok {
		return 0, fmt.Errorf("real %s: all %d real slots are in use (raise the max reals limit): %w", addr, b.limits.MaxReals-1, ErrLimit)
	}
	if err := b.clearRealStats(idx); err != nil {
		b.realIDs[idx] = false
		return 0, err
	}
	words, fam := addrWords(addr)
	def := balancerRealDef{Addr: words, Family: uint32(fam)}
	if err := b.objs.Reals.Update(idx, &def, ebpf.UpdateAny); err != nil {
		b.realIDs[idx] = false
		return 0, fmt.Errorf("real %s: write reals map: %w", addr, err)
	}
	b.reals[addr] = RealID(idx)
	return RealID(idx), nil
}

// RemoveReal undefines a real. Ring slots that still hold its ID drop
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
	delete(b.reals, addr)
	b.realIDs[id] = false
	return nil
}

// Reals lists the defined reals.
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
	for a, i := range b.reals {
		if i == id {
			return a, true
		}
	}
	return netip.Addr{}, false
}
