package xdp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// rawVIPKey is a key as the vips map has it.
func rawVIPKey(k lb.VIPKey) balancerVipKey {
	words, fam := addrWords(k.Addr)
	return balancerVipKey{Addr: words, Port: htons(k.Port), Proto: uint8(k.Proto), Family: fam}
}

// vipEntry is what the balancer remembers of a VIP it installed.
type vipEntry struct {
	num      uint32
	flags    lb.VIPFlags
	ringSize uint32
	buf      uint32 // the live ring buffer, 0 or 1: rings[2*num+buf]
	gen      uint32
}

// AddVIP installs a VIP with no ring: until SetRing gives it one, its
// packets are dropped (counted as no-real). It fails with ErrExists, or
// with ErrLimit when all MaxVIPs numbers are taken.
func (b *Balancer) AddVIP(key lb.VIPKey, flags lb.VIPFlags) error {
	if err := key.Validate(); err != nil {
		return err
	}
	if flags&^lb.AllVIPFlags != 0 {
		return fmt.Errorf("VIP %s: unknown flags %#x", key, uint32(flags&^lb.AllVIPFlags))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.vips[key]; ok {
		return fmt.Errorf("VIP %s: %w", key, ErrExists)
	}
	num, ok := takeFree(b.vipNums, 0)
	if !ok {
		return fmt.Errorf("VIP %s: all %d VIP slots are in use (raise the max VIPs limit): %w", key, b.limits.MaxVIPs, ErrLimit)
	}
	// Counters of a reused number start from zero.
	if err := b.clearVIPStats(num); err != nil {
		b.vipNums[num] = false
		return err
	}
	// A new generation: connection table entries left by an earlier
	// VIP with this number do not match this one.
	b.lastGen++
	if b.lastGen == 0 {
		b.lastGen = 1
	}
	e := vipEntry{num: num, flags: flags, gen: b.lastGen}
	undo := func() {
		_ = b.objs.VipInfo.Update(num, freeMeta(e.gen), ebpf.UpdateAny)
		b.vipNums[num] = false
	}
	if err := b.writeMeta(key, e); err != nil {
		undo()
		return err
	}
	raw := rawVIPKey(key)
	if err := b.objs.Vips.Update(&raw, num, ebpf.UpdateNoExist); err != nil {
		undo()
		return fmt.Errorf("VIP %s: write vips map: %w", key, err)
	}
	b.vips[key] = e
	if err := b.syncAddr(key.Addr); err != nil {
		// Without its address entry the VIP would never match.
		_ = b.objs.Vips.Delete(&raw)
		delete(b.vips, key)
		undo()
		return err
	}
	return nil
}

// SetVIPFlags replaces a VIP's flags.
func (b *Balancer) SetVIPFlags(key lb.VIPKey, flags lb.VIPFlags) error {
	if flags&^lb.AllVIPFlags != 0 {
		return fmt.Errorf("VIP %s: unknown flags %#x", key, uint32(flags&^lb.AllVIPFlags))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.vips[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, ErrNotFound)
	}
	e.flags = flags
	if err := b.writeMeta(key, e); err != nil {
		return err
	}
	b.vips[key] = e
	return nil
}

// RemoveVIP removes a VIP, its ring and its address entry (when no other
// VIP uses the address). Its connection table entries stay until evicted:
// they no longer match once the VIP is gone (see DeleteFlows).
func (b *Balancer) RemoveVIP(key lb.VIPKey) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.vips[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, ErrNotFound)
	}
	raw := rawVIPKey(key)
	if err := b.objs.Vips.Delete(&raw); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("VIP %s: delete from vips map: %w", key, err)
	}
	delete(b.vips, key)
	// Generation 0: the VIP's connection table entries stop matching now.
	if err := b.objs.VipInfo.Update(e.num, freeMeta(e.gen), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("VIP %s: clear vip_info: %w", key, err)
	}
	if err := b.dropRings(e.num); err != nil {
		return fmt.Errorf("VIP %s: %w", key, err)
	}
	b.vipNums[e.num] = false
	return b.syncAddr(key.Addr)
}

// VIPs lists the installed VIPs.
func (b *Balancer) VIPs() []VIP {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]VIP, 0, len(b.vips))
	for k, e := range b.vips {
		out = append(out, VIP{Key: k, Num: e.num, Flags: e.flags, RingSize: e.ringSize, Buf: e.buf, Gen: e.gen})
	}
	return out
}

// LookupVIP returns one installed VIP.
func (b *Balancer) LookupVIP(key lb.VIPKey) (VIP, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.vips[key]
	if !ok {
		return VIP{}, fmt.Errorf("VIP %s: %w", key, ErrNotFound)
	}
	return VIP{Key: key, Num: e.num, Flags: e.flags, RingSize: e.ringSize, Buf: e.buf, Gen: e.gen}, nil
}

func (b *Balancer) writeMeta(key lb.VIPKey, e vipEntry) error {
	meta := balancerVipMeta{Flags: balancerLbdVipFlag(e.flags), RingSize: e.ringSize | e.buf<<ringBufShift, Gen: e.gen, LastGen: e.gen}
	if err := b.objs.VipInfo.Update(e.num, &meta, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("VIP %s: write vip_info map: %w", key, err)
	}
	return nil
}

// vip_meta.last_gen is not read by the datapath; user space keeps in it the
// last generation given to the number, also once the number is free
// (gen 0). Open recovers its generation counter from these, so that after
// a restart no VIP is given a (number, generation) pair that connection
// table entries of a removed VIP still carry.

// freeMeta is the vip_info entry of a free number last given generation gen.
func freeMeta(gen uint32) *balancerVipMeta {
	return &balancerVipMeta{LastGen: gen}
}

// syncAddr rewrites the vip_addrs entry of addr from the VIPs that use it.
func (b *Balancer) syncAddr(addr netip.Addr) error {
	var flags balancerLbdAddrFlag
	used := false
	for k := range b.vips {
		if k.Addr != addr {
			continue
		}
		used = true
		if k.Port == 0 {
			if k.Proto == lb.TCP {
				flags |= balancerLbdAddrFlagLBD_ADDR_F_PORTLESS_TCP
			} else {
				flags |= balancerLbdAddrFlagLBD_ADDR_F_PORTLESS_UDP
			}
		}
	}
	words, fam := addrWords(addr)
	ak := balancerAddrKey{Addr: words, Family: uint32(fam)}
	// vip_addrs is the truth, vip_filter a shortcut in front of it: set
	// the filter after adding the address and clear it after removing.
	if !used {
		if err := b.objs.VipAddrs.Delete(&ak); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("address %s: delete from vip_addrs: %w", addr, err)
		}
		return b.syncFilter(addr)
	}
	if err := b.objs.VipAddrs.Update(&ak, flags, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("address %s: write vip_addrs: %w", addr, err)
	}
	return b.syncFilter(addr)
}

// takeFree marks and returns the first free index at or after from.
func takeFree(used []bool, from int) (uint32, bool) {
	for i := from; i < len(used); i++ {
		if !used[i] {
			used[i] = true
			return uint32(i), true
		}
	}
	return 0, false
}
