package xdp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Address families as the datapath stores them (lbd_family in lbd_types.h).
const (
	familyNone = 0
	familyIPv4 = 4
	familyIPv6 = 6
)

// addrWords returns an address as the datapath stores it: four words whose
// memory bytes are the address in network order; IPv4 uses word 0 only.
func addrWords(a netip.Addr) (words [4]uint32, family uint8) {
	if a.Is4() {
		b := a.As4()
		words[0] = binary.NativeEndian.Uint32(b[:])
		return words, familyIPv4
	}
	b := a.As16()
	for i := range words {
		words[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return words, familyIPv6
}

// wordsAddr is the inverse of addrWords.
func wordsAddr(words [4]uint32, family uint32) (netip.Addr, error) {
	switch family {
	case familyIPv4:
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], words[0])
		return netip.AddrFrom4(b), nil
	case familyIPv6:
		var b [16]byte
		for i, w := range words {
			binary.NativeEndian.PutUint32(b[4*i:], w)
		}
		return netip.AddrFrom16(b), nil
	}
	return netip.Addr{}, fmt.Errorf("unknown address family %d in map", family)
}

// htons converts a port to the value whose memory bytes are in network order.
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// ntohs is the inverse of htons.
func ntohs(p uint16) uint16 { return htons(p) }

// checkAddr rejects what cannot be a VIP or real address.
func checkAddr(what string, a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("%s address is missing", what)
	case a.Zone() != "":
		return fmt.Errorf("%s address %s: zoned addresses are not supported", what, a)
	case a.Is4In6():
		return fmt.Errorf("%s address %s: write IPv4-mapped addresses as plain IPv4 (%s)", what, a, a.Unmap())
	case a.IsUnspecified() || a.IsMulticast():
		return fmt.Errorf("%s address %s: must be a unicast address", what, a)
	}
	return nil
}
