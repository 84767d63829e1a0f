package xdp

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// GlobalStats reads the global counters.
func (b *Balancer) GlobalStats() (GlobalStats, error) {
	var per []balancerGlobalCounters
	if err := b.objs.Stats.Lookup(uint32(0), &per); err != nil {
		return GlobalStats{}, fmt.Errorf("read stats map: %w", err)
	}
	var g GlobalStats
	for _, c := range per {
		for i := range g {
			g[i] += c.Counters[i]
		}
	}
	return g, nil
}

// VIPStats reads one VIP's counters.
func (b *Balancer) VIPStats(key lb.VIPKey) (VIPStats, error) {
	v, err := b.LookupVIP(key)
	if err != nil {
		return VIPStats{}, err
	}
	var per []balancerVipCounters
	if err := b.objs.VipStats.Lookup(v.Num, &per); err != nil {
		return VIPStats{}, fmt.Errorf("VIP %s: read counters: %w", key, err)
	}
	var s VIPStats
	for _, c := range per {
		s.Packets += c.Packets
		s.Bytes += c.Bytes
		s.LRUHits += c.LruHits
		s.LRUMisses += c.LruMisses
	}
	return s, nil
}

// RealStats reads one real's counters.
func (b *Balancer) RealStats(id RealID) (RealStats, error) {
	if id == 0 || uint32(id) >= b.limits.MaxReals {
		return RealStats{}, fmt.Errorf("real %d: %w", id, ErrNotFound)
	}
	var per []balancerRealCounters
	if err := b.objs.RealStats.Lookup(uint32(id), &per); err != nil {
		return RealStats{}, fmt.Errorf("real %d: read counters: %w", id, err)
	}
	var s RealStats
	for _, c := range per {
		s.Packets += c.Packets
		s.Bytes += c.Bytes
	}
	return s, nil
}

func (b *Balancer) clearVIPStats(num uint32) error {
	zero := make([]balancerVipCounters, ebpf.MustPossibleCPU())
	if err := b.objs.VipStats.Update(num, zero, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset counters of VIP number %d: %w", num, err)
	}
	return nil
}

func (b *Balancer) clearRealStats(idx ...uint32) error {
	ncpu := ebpf.MustPossibleCPU()
	zero := make([]balancerRealCounters, ncpu*len(idx))
	if err := batchUpdate(b.objs.RealStats, idx, zero, ncpu); err != nil {
		return fmt.Errorf("reset counters of real %d: %w", idx[0], err)
	}
	return nil
}

// ResetVIPStats zeroes a VIP's counters.
func (b *Balancer) ResetVIPStats(key lb.VIPKey) error {
	v, err := b.LookupVIP(key)
	if err != nil {
		return err
	}
	return b.clearVIPStats(v.Num)
}

// ResetRealStats zeroes the counters of a defined real index.
func (b *Balancer) ResetRealStats(id RealID) error {
	b.mu.Lock()
	_, ok := b.slots[id]
	b.mu.Unlock()
	if !ok {
		return fmt.Errorf("real index %d: %w", id, ErrNotFound)
	}
	return b.clearRealStats(uint32(id))
}
