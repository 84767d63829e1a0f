package lb

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// An address as lbd's BPF programs keep it (bpf/include/lbd_types.h): four
// 32-bit words whose memory bytes are the address in network order, IPv4
// in word 0 only, and a family number.

// The family numbers of the programs (enum lbd_family).
const (
	FamilyNone = 0
	FamilyIPv4 = 4
	FamilyIPv6 = 6
)

// AddrWords returns a's words and family. An IPv4-mapped IPv6 address
// counts as IPv4.
func AddrWords(a netip.Addr) (w [4]uint32, family uint32) {
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		w[0] = binary.NativeEndian.Uint32(b[:])
		return w, FamilyIPv4
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w, FamilyIPv6
}

// WordsAddr is the inverse of AddrWords.
func WordsAddr(w [4]uint32, family uint32) (netip.Addr, error) {
	switch family {
	case FamilyIPv4:
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], w[0])
		return netip.AddrFrom4(b), nil
	case FamilyIPv6:
		var b [16]byte
		for i, x := range w {
			binary.NativeEndian.PutUint32(b[4*i:], x)
		}
		return netip.AddrFrom16(b), nil
	}
	return netip.Addr{}, fmt.Errorf("unknown address family %d in map", family)
}
