package xdp

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// FilterOf is what vip_filter must hold for VIPs at these addresses.
func (b *Balancer) FilterOf(addrs []netip.Addr) []uint64 {
	words := make([]uint64, len(b.filter))
	for _, a := range addrs {
		bit := filterBit(a)
		if int(bit/64) < len(words) {
			words[bit/64] |= 1 << (bit % 64)
		}
	}
	return words
}

// ReadMaps reads vips, vip_info, vip_addrs, vip_filter, reals and config
// from the kernel. Rings are read per VIP with Ring.
func (b *Balancer) ReadMaps() (*MapState, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := &MapState{
		VIPs: map[lb.VIPKey]uint32{}, VIPInfo: map[uint32]VIPInfo{},
		VIPAddrs: map[netip.Addr]AddrFlags{}, Reals: map[RealID]netip.Addr{},
	}
	var rk balancerVipKey
	var num uint32
	it := b.objs.Vips.Iterate()
	for it.Next(&rk, &num) {
		addr, err := wordsAddr(rk.Addr, uint32(rk.Family))
		key := lb.VIPKey{Addr: addr, Port: ntohs(rk.Port), Proto: lb.Proto(rk.Proto)}
		if err != nil {
			key = lb.VIPKey{Port: ntohs(rk.Port), Proto: lb.Proto(rk.Proto)}
			s.BadVIPs = append(s.BadVIPs, key)
			continue
		}
		s.VIPs[key] = num
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("read vips map: %w", err)
	}

	metas := make([]balancerVipMeta, b.limits.MaxVIPs)
	if err := readArrayMap(b.objs.VipInfo, metas); err != nil {
		return nil, fmt.Errorf("read vip_info map: %w", err)
	}
	for n, m := range metas {
		if m.Gen == 0 && m.Flags == 0 && m.RingSize == 0 {
			continue
		}
		s.VIPInfo[uint32(n)] = VIPInfo{Flags: lb.VIPFlags(m.Flags), RingSize: m.RingSize & ringSizeMask, Buf: m.RingSize >> ringBufShift, Gen: m.Gen}
	}

	var ak balancerAddrKey
	var af balancerLbdAddrFlag
	ait := b.objs.VipAddrs.Iterate()
	for ait.Next(&ak, &af) {
		a, err := wordsAddr(ak.Addr, ak.Family)
		if err != nil {
			continue // cannot be named; SyncAddrs clears it
		}
		s.VIPAddrs[a] = AddrFlags(af)
	}
	if err := ait.Err(); err != nil {
		return nil, fmt.Errorf("read vip_addrs map: %w", err)
	}

	s.Filter = make([]uint64, len(b.filter))
	if err := readArrayMap(b.objs.VipFilter, s.Filter); err != nil {
		return nil, fmt.Errorf("read vip_filter map: %w", err)
	}

	defs := make([]balancerRealDef, b.limits.MaxReals)
	if err := readArrayMap(b.objs.Reals, defs); err != nil {
		return nil, fmt.Errorf("read reals map: %w", err)
	}
	for i, d := range defs {
		if d == (balancerRealDef{}) {
			continue
		}
		a, err := wordsAddr(d.Addr, d.Family)
		if err != nil || i == 0 {
			s.BadReals = append(s.BadReals, RealID(i))
			continue
		}
		s.Reals[RealID(i)] = a
	}

	var rc balancerLbdConfig
	if err := b.objs.Config.Lookup(uint32(0), &rc); err != nil {
		return nil, fmt.Errorf("read config map: %w", err)
	}
	s.Config, s.ConfigErr = configFromRaw(rc)
	return s, nil
}

// readArrayMap reads a whole array map into vals (len(vals) == max
// entries), in batches where the kernel can.
func readArrayMap[V any](m *ebpf.Map, vals []V) error {
	keys := make([]uint32, len(vals))
	var cursor ebpf.MapBatchCursor
	n, err := m.BatchLookup(&cursor, keys, vals, nil)
	if err == nil || errors.Is(err, ebpf.ErrKeyNotExist) {
		if n == len(vals) {
			return nil
		}
	} else if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range vals {
		if err := m.Lookup(uint32(i), &vals[i]); err != nil {
			return err
		}
	}
	return nil
}

// The repairs below rewrite kernel entries from the balancer's
// bookkeeping (the numbers, generations and indices it gave out), so that
// a repaired VIP keeps its number and generation and its connection table
// entries still match.

// RepairVIP rewrites a VIP's vips and vip_info entries, its vip_addrs
// entry and its vip_filter bit.
func (b *Balancer) RepairVIP(key lb.VIPKey) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.vips[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, ErrNotFound)
	}
	if err := b.writeMeta(key, e); err != nil {
		return err
	}
	raw := rawVIPKey(key)
	if err := b.objs.Vips.Update(&raw, e.num, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("VIP %s: write vips map: %w", key, err)
	}
	return b.syncAddr(key.Addr)
}

// ClearVIPEntry deletes a vips entry the balancer did not make (a VIP it
// has installed is removed with RemoveVIP).
func (b *Balancer) ClearVIPEntry(key lb.VIPKey) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.vips[key]; ok {
		return fmt.Errorf("VIP %s is installed: remove it with RemoveVIP", key)
	}
	raw := rawVIPKey(key)
	if !key.Addr.IsValid() {
		return b.clearBadVIPEntries()
	}
	if err := b.objs.Vips.Delete(&raw); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("VIP %s: delete from vips map: %w", key, err)
	}
	return b.syncAddr(key.Addr)
}

// clearBadVIPEntries deletes vips entries whose address cannot be read.
func (b *Balancer) clearBadVIPEntries() error {
	var rk balancerVipKey
	var num uint32
	var bad []balancerVipKey
	it := b.objs.Vips.Iterate()
	for it.Next(&rk, &num) {
		if _, err := wordsAddr(rk.Addr, uint32(rk.Family)); err != nil {
			bad = append(bad, rk)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vips map: %w", err)
	}
	for _, k := range bad {
		if err := b.objs.Vips.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete bad vips entry: %w", err)
		}
	}
	return nil
}

// ClearVIPInfo frees a vip_info entry no installed VIP has (keeping the
// last generation given to the number).
func (b *Balancer) ClearVIPInfo(num uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for k, e := range b.vips {
		if e.num == num {
			return fmt.Errorf("vip_info[%d] belongs to VIP %s: repair it with RepairVIP", num, k)
		}
	}
	var m balancerVipMeta
	if err := b.objs.VipInfo.Lookup(num, &m); err != nil {
		return fmt.Errorf("read vip_info[%d]: %w", num, err)
	}
	b.lastGen = max(b.lastGen, m.Gen)
	if err := b.objs.VipInfo.Update(num, freeMeta(max(m.Gen, m.LastGen)), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("free vip_info[%d]: %w", num, err)
	}
	return nil
}

// SyncAddrs rewrites vip_addrs from the installed VIPs: it adds and
// corrects their addresses' entries and deletes every other one. It
// then rewrites vip_filter whole.
func (b *Balancer) SyncAddrs() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var ak balancerAddrKey
	var af balancerLbdAddrFlag
	var all []balancerAddrKey
	it := b.objs.VipAddrs.Iterate()
	for it.Next(&ak, &af) {
		all = append(all, ak)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("read vip_addrs map: %w", err)
	}
	used := map[netip.Addr]bool{}
	for k := range b.vips {
		used[k.Addr] = true
	}
	for _, k := range all {
		if a, err := wordsAddr(k.Addr, k.Family); err == nil && used[a] {
			continue
		}
		if err := b.objs.VipAddrs.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete stray vip_addrs entry: %w", err)
		}
	}
	for a := range used {
		if err := b.syncAddr(a); err != nil {
			return err
		}
	}
	return b.writeFilter()
}

// writeFilter rewrites every vip_filter word from the installed VIPs.
func (b *Balancer) writeFilter() error {
	addrs := make([]netip.Addr, 0, len(b.vips))
	for k := range b.vips {
		addrs = append(addrs, k.Addr)
	}
	words := b.FilterOf(addrs)
	keys := make([]uint32, len(words))
	for i := range keys {
		keys[i] = uint32(i)
	}
	if _, err := b.objs.VipFilter.BatchUpdate(keys, words, nil); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fmt.Errorf("write vip_filter: %w", err)
		}
		for i, w := range words {
			if err := b.objs.VipFilter.Update(uint32(i), w, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("write vip_filter: %w", err)
			}
		}
	}
	copy(b.filter, words)
	return nil
}

// RepairRealSlot rewrites the reals entry of a defined real index with
// the address it was defined with (an address may have several indices:
// one per VIP that has it, see AddRealSlot).
func (b *Balancer) RepairRealSlot(id RealID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	addr, ok := b.slots[id]
	if !ok {
		return fmt.Errorf("real index %d: %w", id, ErrNotFound)
	}
	words, fam := addrWords(addr)
	def := balancerRealDef{Addr: words, Family: uint32(fam)}
	if err := b.objs.Reals.Update(uint32(id), &def, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("real %s (index %d): write reals map: %w", addr, id, err)
	}
	return nil
}

// ClearReal clears a reals entry the balancer did not define.
func (b *Balancer) ClearReal(id RealID) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a, ok := b.slots[id]; ok {
		return fmt.Errorf("real index %d belongs to %s: repair it with RepairRealSlot", id, a)
	}
	if uint32(id) >= b.limits.MaxReals {
		return fmt.Errorf("real index %d is out of range", id)
	}
	var def balancerRealDef
	if err := b.objs.Reals.Update(uint32(id), &def, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("clear reals[%d]: %w", id, err)
	}
	return nil
}

// RestoreVIP installs a VIP again under the number and generation it had
// (v as LookupVIP returned it before it was removed), with its counters
// as they are, so that its connection table entries match it again: the
// undo of a RemoveVIP. Its ring is empty until SetRing. It fails if the
// number has been given to another VIP.
func (b *Balancer) RestoreVIP(v VIP) error {
	if err := v.Key.Validate(); err != nil {
		return err
	}
	if v.Gen == 0 || v.Num >= b.limits.MaxVIPs {
		return fmt.Errorf("VIP %s: number %d generation %d cannot be restored", v.Key, v.Num, v.Gen)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.vips[v.Key]; ok {
		return fmt.Errorf("VIP %s: %w", v.Key, ErrExists)
	}
	for k, e := range b.vips {
		if e.num == v.Num {
			return fmt.Errorf("VIP %s: its number %d was given to VIP %s", v.Key, v.Num, k)
		}
	}
	e := vipEntry{num: v.Num, flags: v.Flags, gen: v.Gen}
	b.vipNums[v.Num] = true
	if err := b.writeMeta(v.Key, e); err != nil {
		return err
	}
	raw := rawVIPKey(v.Key)
	if err := b.objs.Vips.Update(&raw, v.Num, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("VIP %s: write vips map: %w", v.Key, err)
	}
	b.vips[v.Key] = e
	return b.syncAddr(v.Key.Addr)
}
