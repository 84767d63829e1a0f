package xdp

import (
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/cilium/ebpf"
)

// filterBit is an address's bit in the vip_filter map: the same function
// as lbd_filter_bit in lbd_hash.h (a test keeps them in step).
func filterBit(a netip.Addr) uint32 {
	w, fam := addrWords(a)
	h := w[0] ^ bits.RotateLeft32(w[1], 8) ^ bits.RotateLeft32(w[2], 16) ^ bits.RotateLeft32(w[3], 24) ^ uint32(fam)
	return (h * 0x9e3779b1) >> 16
}

// syncFilter sets or clears addr's bit in vip_filter: set while any VIP
// address hashes to it. The caller holds b.mu and has updated b.vips.
func (b *Balancer) syncFilter(addr netip.Addr) error {
	bit := filterBit(addr)
	set := false
	for k := range b.vips {
		if filterBit(k.Addr) == bit {
			set = true
			break
		}
	}
	word := bit / 64
	if int(word) >= len(b.filter) {
		return fmt.Errorf("vip_filter has %d words, bit %d is out of range", len(b.filter), bit)
	}
	w := b.filter[word]
	if set {
		w |= 1 << (bit % 64)
	} else {
		w &^= 1 << (bit % 64)
	}
	if err := b.objs.VipFilter.Update(word, w, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("address %s: write vip_filter: %w", addr, err)
	}
	b.filter[word] = w
	return nil
}
