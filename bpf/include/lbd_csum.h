/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Internet checksum helpers (RFC 1071, incremental update per RFC 1624). */
#ifndef LBD_CSUM_H
#define LBD_CSUM_H

#include <linux/types.h>
#include <linux/ip.h>

static __always_inline __u16 lbd_csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* lbd_ipv4_csum computes the checksum of a 20-byte IPv4 header whose check is 0. */
static __always_inline __u16 lbd_ipv4_csum(const struct iphdr *iph)
{
	const __u16 *w = (const __u16 *)iph;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < (int)(sizeof(*iph) / 2); i++)
		sum += w[i];
	return lbd_csum_fold(sum);
}

/* lbd_csum_replace2 updates *sum for one 16-bit word changing from old to new. */
static __always_inline void lbd_csum_replace2(__u16 *sum, __u16 old, __u16 new)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~old;
	s += new;
	*sum = lbd_csum_fold(s);
}

#endif /* LBD_CSUM_H */
