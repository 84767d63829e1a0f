/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Encapsulation towards a real: IPv4 or IPv6 outer header (chosen by the
 * real's family, whatever the inner family), optionally followed by a UDP
 * header for GUE variant 1 (direct IP, no GUE header: the first nibble of
 * the inner packet says IPv4 or IPv6). The L2 header is kept (VLAN tag
 * included) with the destination MAC set to the gateway.
 *
 * The outer source of IP-in-IP is base | (flow hash & mask): every flow gets
 * a stable, different outer source, so ECMP and RSS on the path and on the
 * real keep spreading flows even though all of them go to one address.
 */
#ifndef LBD_ENCAP_H
#define LBD_ENCAP_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lbd_types.h"
#include "lbd_parse.h"
#include "lbd_csum.h"

#define LBD_OUTER_TTL 64
#define LBD_VLAN_HLEN 18

/*
 * The first and fifth 16-bit words of an IPv4 header as they sit in
 * memory (little-endian loads of network-order bytes): version/IHL with
 * TOS, and TTL with protocol. The outer header's checksum is summed from
 * these values as they are written, not read back from the packet.
 */
static __always_inline __u16 lbd_ip4_word0(__u8 tos)
{
	return 0x45 | ((__u16)tos << 8);
}

static __always_inline __u16 lbd_ip4_word4(__u8 ttl, __u8 proto)
{
	return ttl | ((__u16)proto << 8);
}

/*
 * lbd_encap grows the frame in front and writes L2 + outer headers. It
 * returns 0, or the lbd_stat drop reason. All packet pointers the caller
 * held are invalid afterwards.
 */
static __always_inline int lbd_encap(struct xdp_md *ctx, const struct packet *pkt,
				     const struct real_def *real, __u32 hash, int gue,
				     const struct lbd_config *cfg)
{
	int outer6 = real->family == LBD_FAMILY_IPV6;
	__u16 olen = (outer6 ? sizeof(struct ipv6hdr) : sizeof(struct iphdr)) +
		     (gue ? sizeof(struct udphdr) : 0);
	__u16 inner_len = pkt->l3_len;
	void *data, *data_end;
	int vlan = pkt->l3_off != sizeof(struct ethhdr);
	__u8 inner_proto;

	if (cfg->mtu && inner_len + olen > cfg->mtu)
		return LBD_STAT_DROP_TOO_BIG;
	if (bpf_xdp_adjust_head(ctx, 0 - (int)olen))
		return LBD_STAT_DROP_ENCAP_FAIL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	/*
	 * The client's L2 header is still where it was, olen bytes in (olen
	 * >= 20 > 18, so the new one does not overlap it; the parser saw an
	 * IP header after it, so its 18 bytes are there): its fields are
	 * copied from there, not saved on the stack first.
	 */
	struct ethhdr *eth = data;
	__u8 *old = data + olen;
	void *outer;

	if (data + LBD_VLAN_HLEN > data_end || (void *)(old + LBD_VLAN_HLEN) > data_end)
		return LBD_STAT_DROP_ENCAP_FAIL;
	if (cfg->flags & LBD_CFG_F_GW_MAC)
		__builtin_memcpy(eth->h_dest, cfg->gw_mac, ETH_ALEN);
	else
		__builtin_memcpy(eth->h_dest, old + ETH_ALEN, ETH_ALEN);
	__builtin_memcpy(eth->h_source, old, ETH_ALEN);
	if (vlan) {
		/* Keep the 802.1Q tag; the outer family goes in the encapsulated type. */
		__builtin_memcpy((__u8 *)data + 12, old + 12, 4);
		*(__be16 *)((__u8 *)data + 16) = bpf_htons(outer6 ? ETH_P_IPV6 : ETH_P_IP);
		outer = data + LBD_VLAN_HLEN;
	} else {
		eth->h_proto = bpf_htons(outer6 ? ETH_P_IPV6 : ETH_P_IP);
		outer = data + sizeof(struct ethhdr);
	}

	inner_proto = pkt->family == LBD_FAMILY_IPV4 ? IPPROTO_IPIP : IPPROTO_IPV6;
	if (outer6) {
		struct ipv6hdr *o6 = outer;

		if ((void *)(o6 + 1) > data_end)
			return LBD_STAT_DROP_ENCAP_FAIL;
		*(__be32 *)o6 = bpf_htonl((6u << 28) | ((__u32)pkt->tos << 20) | (hash & 0xfffff));
		o6->payload_len = bpf_htons(inner_len + (gue ? sizeof(struct udphdr) : 0));
		o6->nexthdr = gue ? IPPROTO_UDP : inner_proto;
		o6->hop_limit = LBD_OUTER_TTL;
		if (gue) {
			__builtin_memcpy(&o6->saddr, cfg->gue_src6, 16);
		} else {
			__u32 *s = (__u32 *)&o6->saddr;

			s[0] = cfg->encap_src6[0] | (hash & cfg->encap_src6_mask[0]);
			s[1] = cfg->encap_src6[1] | (hash & cfg->encap_src6_mask[1]);
			s[2] = cfg->encap_src6[2] | (hash & cfg->encap_src6_mask[2]);
			s[3] = cfg->encap_src6[3] | (hash & cfg->encap_src6_mask[3]);
		}
		__builtin_memcpy(&o6->daddr, real->addr, 16);
		outer = o6 + 1;
	} else {
		struct iphdr *o4 = outer;

		if ((void *)(o4 + 1) > data_end)
			return LBD_STAT_DROP_ENCAP_FAIL;
		__u16 w0 = lbd_ip4_word0(pkt->tos);
		__u16 tot = bpf_htons(inner_len + olen);
		__u16 w4 = lbd_ip4_word4(LBD_OUTER_TTL, gue ? IPPROTO_UDP : inner_proto);
		__u32 saddr = gue ? cfg->gue_src4 : cfg->encap_src4 | (hash & cfg->encap_src4_mask);
		__u32 daddr = real->addr[0];

		*(__u16 *)o4 = w0;
		o4->tot_len = tot;
		o4->id = 0;
		o4->frag_off = 0;
		*(__u16 *)&o4->ttl = w4;
		o4->check = lbd_csum_fold((__u32)w0 + tot + w4 + (saddr & 0xffff) + (saddr >> 16) +
					  (daddr & 0xffff) + (daddr >> 16));
		o4->saddr = saddr;
		o4->daddr = daddr;
		outer = o4 + 1;
	}
	if (gue) {
		struct udphdr *uh = outer;

		if ((void *)(uh + 1) > data_end)
			return LBD_STAT_DROP_ENCAP_FAIL;
		/* Source port from the flow: the real's RSS and the path's ECMP spread GUE too. */
		uh->source = bpf_htons(0xc000 | (hash & 0x3fff));
		uh->dest = cfg->gue_port;
		uh->len = bpf_htons(inner_len + sizeof(struct udphdr));
		/* Zero checksum: allowed for IPv4, and for IPv6 tunnels (RFC 6935). */
		uh->check = 0;
	}
	return 0;
}

#endif /* LBD_ENCAP_H */
