/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flow hash that picks a ring slot. It is Bob Jenkins' lookup3 mix and
 * final (the same mixing as the kernel's jhash) over five 32-bit words: the
 * client address and the port pair. bpf/xdp/flowhash.go computes the same
 * function in Go, so that user space can tell which real a flow maps to;
 * a test keeps the two in agreement. Changing it moves flows between reals
 * across a fleet that mixes versions: treat it as a wire format.
 */
#ifndef LBD_HASH_H
#define LBD_HASH_H

#include <linux/types.h>

#define LBD_HASH_INITVAL 0xdeadbeef
#define LBD_HASH_SEED 0x6c62642d /* "lbd-" */

static __always_inline __u32 lbd_rol32(__u32 w, unsigned int s)
{
	return (w << s) | (w >> (32 - s));
}

#define lbd_jhash_mix(a, b, c)                \
	do {                                  \
		a -= c; a ^= lbd_rol32(c, 4);  c += b; \
		b -= a; b ^= lbd_rol32(a, 6);  a += c; \
		c -= b; c ^= lbd_rol32(b, 8);  b += a; \
		a -= c; a ^= lbd_rol32(c, 16); c += b; \
		b -= a; b ^= lbd_rol32(a, 19); a += c; \
		c -= b; c ^= lbd_rol32(b, 4);  b += a; \
	} while (0)

#define lbd_jhash_final(a, b, c)               \
	do {                                   \
		c ^= b; c -= lbd_rol32(b, 14); \
		a ^= c; a -= lbd_rol32(c, 11); \
		b ^= a; b -= lbd_rol32(a, 25); \
		c ^= b; c -= lbd_rol32(b, 16); \
		a ^= c; a -= lbd_rol32(c, 4);  \
		b ^= a; b -= lbd_rol32(a, 14); \
		c ^= b; c -= lbd_rol32(b, 24); \
	} while (0)

/*
 * lbd_flow_hash hashes src[0..3] and the port word. Sticky VIPs pass
 * ports = 0 so that only the client address counts.
 */
static __always_inline __u32 lbd_flow_hash(const __u32 src[4], __u32 ports)
{
	__u32 a, b, c;

	a = b = c = LBD_HASH_INITVAL + (5 << 2) + LBD_HASH_SEED;
	a += src[0];
	b += src[1];
	c += src[2];
	lbd_jhash_mix(a, b, c);
	a += src[3];
	b += ports;
	lbd_jhash_final(a, b, c);
	return c;
}

/*
 * lbd_filter_bit is an address's bit in vip_filter (bpf/xdp/filter.go
 * computes the same): the address words folded with rotations, then a
 * multiplicative hash whose top bits are the bit number.
 */
static __always_inline __u32 lbd_filter_bit(const __u32 addr[4], __u32 family)
{
	__u32 h = addr[0] ^ lbd_rol32(addr[1], 8) ^ lbd_rol32(addr[2], 16) ^ lbd_rol32(addr[3], 24) ^ family;

	return (h * 0x9e3779b1u) >> (32 - 16);
}

#endif /* LBD_HASH_H */
