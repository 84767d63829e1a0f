package xdp

import "math/bits"

// The flow hash of bpf/include/lbd_hash.h, computed in Go: lookup3's mix
// and final over the client address words and the port word. Keep the two
// identical: TestFlowHashMatchesDatapath checks it against the program.
const (
	hashInitval uint32 = 0xdeadbeef
	hashSeed    uint32 = 0x6c62642d
)

func flowHash(src [4]uint32, ports uint32) uint32 {
	init, seed := hashInitval, hashSeed // variables: the sum wraps as in C
	a := init + 5<<2 + seed
	b, c := a, a
	a += src[0]
	b += src[1]
	c += src[2]
	// mix
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a

	a += src[3]
	b += ports
	// final
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return c
}

// FlowHash is the hash the datapath computes for a flow of a VIP: it picks
// the ring slot (hash % ring size) and the outer source of IP-in-IP. A
// sticky VIP hashes the client address alone.
func FlowHash(f FlowKey, sticky bool) uint32 {
	src, _ := addrWords(f.Client.Addr())
	var ports uint32
	if !sticky {
		ports = uint32(htons(f.Client.Port()))<<16 | uint32(htons(f.Dest.Port()))
	}
	return flowHash(src, ports)
}

// RingSlot returns the ring slot the datapath picks for a new flow of a
// VIP with ringSize slots: what lbd uses to say which real a client lands
// on without sending a packet.
func RingSlot(f FlowKey, sticky bool, ringSize uint32) uint32 {
	return FlowHash(f, sticky) % ringSize
}
