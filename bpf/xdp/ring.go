package xdp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"

	"github.com/lbd-dev/lbd/lb"
)

// Each VIP has two ring buffers, rings[2*num] and rings[2*num+1]; the top
// bit of vip_meta.ring_size says which is live (see lbd_maps.h). A new
// ring is written into the idle buffer and made live by one store to
// vip_info, so the live ring is never written: a packet that reads
// vip_info finds a complete ring. The idle buffer is rewritten at once,
// without waiting for the packets that read vip_info before the last flip
// to finish (an RCU grace period, 4-15 ms here): such a packet reads one
// slot, and gets that slot of the old ring or of the new one, as if it had
// come a moment earlier or later. Buffers are reused in place only at the
// same size, so its slot index is always in range; a new size takes a new
// map, put in the outer map (which itself waits for a grace period).

const (
	ringSizeMask = 0x7fffffff // LBD_RING_SIZE_MASK in lbd_types.h
	ringBufShift = 31         // LBD_RING_BUF_SHIFT
	maxRingSize  = 1 << 24
)

// ringSlot is the outer map index of a VIP's ring buffer.
func ringSlot(num, buf uint32) uint32 { return 2*num + buf }

// SetRing gives a VIP a new ring, the Maglev table as it is built:
// ring[slot] is the RealID (as a uint32) that takes the
// flows hashing to slot (0: none, such packets are dropped). Every
// non-zero entry must be a real added with AddReal.
func (b *Balancer) SetRing(key lb.VIPKey, ring []uint32) error {
	if len(ring) == 0 || len(ring) > maxRingSize {
		return fmt.Errorf("VIP %s: ring size %d: must be between 1 and %d", key, len(ring), maxRingSize)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.vips[key]
	if !ok {
		return fmt.Errorf("VIP %s: %w", key, ErrNotFound)
	}
	for slot, id := range ring {
		if id != 0 && (uint64(id) >= uint64(len(b.realIDs)) || !b.realIDs[id]) {
			return fmt.Errorf("VIP %s: ring slot %d holds real %d, which is not defined", key, slot, id)
		}
	}

	next := e
	next.buf = e.buf ^ 1
	next.ringSize = uint32(len(ring))
	idle := ringSlot(e.num, next.buf)
	if err := b.writeRing(idle, ring); err != nil {
		return fmt.Errorf("VIP %s: %w", key, err)
	}
	// The flip: size and live buffer change in one word.
	if err := b.writeMeta(key, next); err != nil {
		return err
	}
	b.vips[key] = next
	return nil
}

// writeRing fills an idle ring buffer: in place when its map has the
// ring's size, else in a new map put in its place in the outer map.
func (b *Balancer) writeRing(slot uint32, ring []uint32) error {
	if m, err := b.ringMap(slot); err == nil && m.MaxEntries() == uint32(len(ring)) {
		if err := fillArray(m, ring, &b.ringScratch); err != nil {
			return fmt.Errorf("fill ring buffer %d: %w", slot, err)
		}
		return nil
	}
	spec := b.ringSpec.Copy()
	spec.MaxEntries = uint32(len(ring))
	spec.Name = fmt.Sprintf("lbd_ring_%d", slot)
	inner, err := ebpf.NewMap(spec)
	if err != nil {
		return fmt.Errorf("create ring map of %d slots: %w", len(ring), err)
	}
	if err := fillArray(inner, ring, &b.ringScratch); err != nil {
		inner.Close()
		return fmt.Errorf("fill ring: %w", err)
	}
	if err := b.objs.Rings.Update(slot, inner, ebpf.UpdateAny); err != nil {
		inner.Close()
		return fmt.Errorf("install ring buffer %d: %w", slot, err)
	}
	if old := b.ringMaps[slot]; old != nil {
		old.Close()
	}
	b.ringMaps[slot] = inner
	return nil
}

// ringMap returns the inner map at an outer slot, opened once and kept
// (with its memory mapping) until the VIP goes. The outer slot is read
// each time: a map put there (or a slot emptied) by anyone else is what
// the datapath uses, so it is what is read and written.
func (b *Balancer) ringMap(slot uint32) (*ebpf.Map, error) {
	var id ebpf.MapID
	if err := b.objs.Rings.Lookup(slot, &id); err != nil {
		if m := b.ringMaps[slot]; m != nil {
			m.Close()
			delete(b.ringMaps, slot)
		}
		return nil, fmt.Errorf("look up ring buffer %d: %w", slot, err)
	}
	if m := b.ringMaps[slot]; m != nil {
		if info, err := m.Info(); err == nil {
			if have, ok := info.ID(); ok && have == id {
				return m, nil
			}
		}
		m.Close()
		delete(b.ringMaps, slot)
	}
	m, err := newMapFromID(id)
	if err != nil {
		if errors.Is(err, os.ErrPermission) { // EPERM, EACCES
			return nil, fmt.Errorf("open ring buffer %d: %w: %w", slot, ErrRingUnreadable, err)
		}
		return nil, fmt.Errorf("open ring buffer %d: %w", slot, err)
	}
	b.ringMaps[slot] = m
	return m, nil
}

// newMapFromID opens an inner map by its ID (a variable for tests).
var newMapFromID = ebpf.NewMapFromID

// Ring reads a VIP's live ring back from the kernel. A live buffer that
// cannot be opened for want of permission gives ErrRingUnreadable.
func (b *Balancer) Ring(key lb.VIPKey) ([]uint32, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.vips[key]
	if !ok {
		return nil, fmt.Errorf("VIP %s: %w", key, ErrNotFound)
	}
	if e.ringSize == 0 {
		return nil, nil
	}
	m, err := b.ringMap(ringSlot(e.num, e.buf))
	if err != nil {
		return nil, fmt.Errorf("VIP %s: %w", key, err)
	}
	ring, err := readArray(m)
	if err != nil {
		return nil, fmt.Errorf("VIP %s: read ring: %w", key, err)
	}
	if len(ring) != int(e.ringSize) {
		return nil, fmt.Errorf("VIP %s: live ring buffer has %d slots, vip_info says %d", key, len(ring), e.ringSize)
	}
	return ring, nil
}

// dropRings removes both ring buffers of a VIP number.
func (b *Balancer) dropRings(num uint32) error {
	for buf := uint32(0); buf < 2; buf++ {
		slot := ringSlot(num, buf)
		if err := b.objs.Rings.Delete(slot); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete ring buffer %d: %w", slot, err)
		}
		if m := b.ringMaps[slot]; m != nil {
			m.Close()
			delete(b.ringMaps, slot)
		}
	}
	return nil
}

// arrayStride is the distance between elements of a ring in its memory
// mapping: the kernel rounds array elements up to 8 bytes.
const arrayStride = 8

// ringChunk is how many slots fillArray copies at a time through its
// scratch buffer.
const ringChunk = 8192

// fillArray writes ring[i] at key i of a ring map. Rings are
// BPF_F_MMAPABLE so that this is a copy into shared memory (tens of
// microseconds for 65537 slots) rather than a batch update through the
// syscall (about 10 ms); maps without the flag take the slow path. The
// copy goes through scratch (grown to ringChunk slots and kept by the
// caller), so that a change allocates nothing here.
func fillArray(m *ebpf.Map, ring []uint32, scratch *[]byte) error {
	if mem, err := m.Memory(); err == nil {
		if len(*scratch) < arrayStride*ringChunk {
			*scratch = make([]byte, arrayStride*ringChunk)
		}
		for off := 0; off < len(ring); off += ringChunk {
			part := ring[off:min(off+ringChunk, len(ring))]
			buf := (*scratch)[:arrayStride*len(part)]
			for i, id := range part {
				binary.NativeEndian.PutUint32(buf[arrayStride*i:], id)
			}
			if _, err := mem.WriteAt(buf, int64(arrayStride*off)); err != nil {
				return err
			}
		}
		return nil
	}
	keys := make([]uint32, len(ring))
	for i := range keys {
		keys[i] = uint32(i)
	}
	vals := ring
	_, err := m.BatchUpdate(keys, vals, nil)
	if err == nil {
		return nil
	}
	if !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Update(keys[i], vals[i], ebpf.UpdateAny); err != nil {
			return err
		}
	}
	return nil
}

// readArray reads a whole ring map back, through its memory mapping when
// it has one.
func readArray(m *ebpf.Map) ([]uint32, error) {
	ring := make([]uint32, m.MaxEntries())
	if mem, err := m.Memory(); err == nil {
		buf := make([]byte, arrayStride*len(ring))
		if _, err := mem.ReadAt(buf, 0); err != nil {
			return nil, err
		}
		for i := range ring {
			ring[i] = binary.NativeEndian.Uint32(buf[arrayStride*i:])
		}
		return ring, nil
	}
	keys := make([]uint32, len(ring))
	vals := make([]uint32, len(ring))
	var cursor ebpf.MapBatchCursor
	n, err := m.BatchLookup(&cursor, keys, vals, nil)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return nil, err
	}
	for i := 0; i < n; i++ {
		ring[keys[i]] = vals[i]
	}
	return ring, nil
}
