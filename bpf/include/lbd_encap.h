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

static __always_inline int lbd_mac_is_zero(const __u8 *mac)
{
	return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
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
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[LBD_VLAN_HLEN];
	int vlan = pkt->l3_off != sizeof(struct ethhdr);
	__u8 inner_proto;

	if (cfg->mtu && inner_len + olen > cfg->mtu)
		return LBD_STAT_DROP_TOO_BIG;
	/* The parser saw at least an IP header after L2, so 18 bytes are there. */
	if (data + LBD_VLAN_HLEN > data_end)
		return LBD_STAT_DROP_ENCAP_FAIL;
	__builtin_memcpy(l2, data, LBD_VLAN_HLEN);

	if (bpf_xdp_adjust_head(ctx, 0 - (int)olen))
		return LBD_STAT_DROP_ENCAP_FAIL;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	void *outer;

	if (data + LBD_VLAN_HLEN > data_end)
		return LBD_STAT_DROP_ENCAP_FAIL;
	if (lbd_mac_is_zero(cfg->gw_mac))
		__builtin_memcpy(eth->h_dest, l2 + ETH_ALEN, ETH_ALEN);
	else
		__builtin_memcpy(eth->h_dest, cfg->gw_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, l2, ETH_ALEN);
	if (vlan) {
		/* Keep the 802.1Q tag; the outer family goes in the encapsulated type. */
		__builtin_memcpy((__u8 *)data + 12, l2 + 12, 4);
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
		o4->version = 4;
		o4->ihl = 5;
		o4->tos = pkt->tos;
		o4->tot_len = bpf_htons(inner_len + olen);
		o4->id = 0;
		o4->frag_off = 0;
		o4->ttl = LBD_OUTER_TTL;
		o4->protocol = gue ? IPPROTO_UDP : inner_proto;
		o4->saddr = gue ? cfg->gue_src4 : cfg->encap_src4 | (hash & cfg->encap_src4_mask);
		o4->daddr = real->addr[0];
		o4->check = 0;
		o4->check = lbd_ipv4_csum(o4);
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
