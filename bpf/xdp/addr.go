package xdp

import (
	"encoding/binary"
	"net/netip"

	"github.com/lbd-dev/lbd/lb"
)

// Address families as the datapath stores them (lbd_family in lbd_types.h).
const (
	familyNone = lb.FamilyNone
	familyIPv4 = lb.FamilyIPv4
	familyIPv6 = lb.FamilyIPv6
)

// addrWords returns an address as the datapath stores it (see lb.AddrWords).
func addrWords(a netip.Addr) (words [4]uint32, family uint8) {
	w, f := lb.AddrWords(a)
	return w, uint8(f)
}

// wordsAddr is the inverse of addrWords.
func wordsAddr(words [4]uint32, family uint32) (netip.Addr, error) {
	return lb.WordsAddr(words, family)
}

// htons converts a port to the value whose memory bytes are in network order.
func htons(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// ntohs is the inverse of htons.
func ntohs(p uint16) uint16 { return htons(p) }
