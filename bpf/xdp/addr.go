package xdp

import (
	"github.com/lbd-dev/lbd/internal/mapaddr"

	"encoding/binary"
	"fmt"
	"net/netip"
)

// Address families as the datapath stores them (lbd_family in lbd_types.h).
const (
	familyNone = mapaddr.FamilyNone
	familyIPv4 = mapaddr.FamilyIPv4
	familyIPv6 = mapaddr.FamilyIPv6
)

// addrWords returns an address as the datapath stores it (see mapaddr).
func addrWords(a netip.Addr) (words [4]uint32, family uint8) {
	w, f := mapaddr.Words(a)
	return w, uint8(f)
}

// wordsAddr is the inverse of addrWords.
func wordsAddr(words [4]uint32, family uint32) (netip.Addr, error) {
	return mapaddr.Addr(words, family)
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
