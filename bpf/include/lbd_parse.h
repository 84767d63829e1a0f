/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Packet parsing for the balancer: Ethernet with at most one 802.1Q tag,
 * IPv4 (options allowed), IPv6 (extension headers skipped), TCP, UDP and
 * ICMP. Every length a header states is checked against the frame and
 * against the enclosing header, so a packet that lies about its lengths is
 * reported as malformed instead of being forwarded.
 */
#ifndef LBD_PARSE_H
#define LBD_PARSE_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lbd_types.h"

#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif

#define LBD_IPV6_MAX_EXT_HEADERS 6
#define LBD_IP_MF 0x2000
#define LBD_IP_OFFSET 0x1fff

/* What the parser learned about a packet. Offsets are from ctx->data. */
struct packet {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport; /* network byte order */
	__u16 dport; /* network byte order */
	__u16 l3_off; /* = length of the L2 header: 14 or 18 */
	__u16 l4_off;
	__u16 l3_len; /* IP total length the header states (header + payload) */
	__u8 family;
	__u8 proto;  /* L4 protocol, after IPv6 extension headers */
	__u8 tos;    /* IPv4 TOS / IPv6 traffic class */
	__u8 tcp_flags;
	__u8 fragment;
	__u8 pad;
};

enum parse_result {
	PARSE_OK = 0,
	PARSE_NON_IP,
	PARSE_BAD_L2,
	PARSE_BAD_L3,
	PARSE_BAD_L4,
};

/*
 * A 16-bit length field in host order, as a value the verifier knows is
 * below 65536. Verifiers up to at least 6.12 (seen on Debian 5.10, 6.1 and
 * 6.12) keep no bounds through the byte-swap instruction that bpf_ntohs
 * compiles to, and reject adding the result to a packet pointer ("math
 * between pkt pointer and register with unbounded min value is not
 * allowed"); 6.18 and 7.3 accept it. The mask gives them the bound; the
 * empty asm hides the value from clang, which would otherwise drop the
 * mask as redundant.
 */
static __always_inline __u32 lbd_ntohs_len(__be16 v)
{
	__u32 x = bpf_ntohs(v);

	asm volatile("" : "+r"(x));
	return x & 0xffff;
}

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

/* lbd_parse_l2_l3 parses Ethernet, an optional VLAN tag and the fixed IP header. */
static __always_inline int lbd_parse_l2_l3(void *data, void *data_end, struct packet *pkt)
{
	struct ethhdr *eth = data;
	__u16 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return PARSE_BAD_L2;
	proto = eth->h_proto;
	if (proto == bpf_htons(ETH_P_8021Q)) {
		struct vlan_hdr *vh = data + off;

		if ((void *)(vh + 1) > data_end)
			return PARSE_BAD_L2;
		proto = vh->encapsulated_proto;
		off += sizeof(*vh);
	}
	pkt->l3_off = off;

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = data + off;
		__u16 hlen, tot;

		if ((void *)(iph + 1) > data_end)
			return PARSE_BAD_L3;
		if (iph->version != 4 || iph->ihl < 5)
			return PARSE_BAD_L3;
		hlen = iph->ihl * 4;
		tot = lbd_ntohs_len(iph->tot_len);
		if (tot < hlen || data + off + tot > data_end)
			return PARSE_BAD_L3;
		pkt->family = LBD_FAMILY_IPV4;
		pkt->src[0] = iph->saddr;
		pkt->dst[0] = iph->daddr;
		pkt->proto = iph->protocol;
		pkt->tos = iph->tos;
		pkt->l3_len = tot;
		pkt->l4_off = off + hlen;
		pkt->fragment = (iph->frag_off & bpf_htons(LBD_IP_MF | LBD_IP_OFFSET)) != 0;
		return PARSE_OK;
	}
	if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6h = data + off;
		__u32 plen;

		if ((void *)(ip6h + 1) > data_end)
			return PARSE_BAD_L3;
		if (ip6h->version != 6)
			return PARSE_BAD_L3;
		plen = lbd_ntohs_len(ip6h->payload_len);
		/* payload_len 0 is a jumbogram (hop-by-hop option): not on Ethernet. */
		if (plen == 0 || data + off + sizeof(*ip6h) + plen > data_end)
			return PARSE_BAD_L3;
		pkt->family = LBD_FAMILY_IPV6;
		__builtin_memcpy(pkt->src, &ip6h->saddr, 16);
		__builtin_memcpy(pkt->dst, &ip6h->daddr, 16);
		pkt->proto = ip6h->nexthdr;
		pkt->tos = (ip6h->priority << 4) | (ip6h->flow_lbl[0] >> 4);
		pkt->l3_len = sizeof(*ip6h) + plen;
		pkt->l4_off = off + sizeof(*ip6h);
		return PARSE_OK;
	}
	return PARSE_NON_IP;
}

struct ipv6_opt_hdr_min {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct ipv6_frag_hdr_min {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset << 3 | M */
	__be32 id;
};

/*
 * lbd_skip_ipv6_ext walks hop-by-hop, routing, destination-options, AH and
 * fragment headers. An atomic fragment (offset 0, no more fragments) is a
 * whole packet and parsing goes on; any other fragment sets pkt->fragment.
 */
static __always_inline int lbd_skip_ipv6_ext(void *data, void *data_end, struct packet *pkt)
{
	__u16 l3_end = pkt->l3_off + pkt->l3_len;

#pragma unroll
	for (int i = 0; i < LBD_IPV6_MAX_EXT_HEADERS; i++) {
		__u8 nh = pkt->proto;
		__u16 hlen;

		if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS &&
		    nh != IPPROTO_FRAGMENT && nh != IPPROTO_AH)
			return PARSE_OK;
		if (nh == IPPROTO_FRAGMENT) {
			struct ipv6_frag_hdr_min *fh = data + pkt->l4_off;

			if ((void *)(fh + 1) > data_end || pkt->l4_off + sizeof(*fh) > l3_end)
				return PARSE_BAD_L3;
			if (fh->frag_off & bpf_htons(0xfff9)) {
				pkt->fragment = 1;
				pkt->proto = fh->nexthdr;
				return PARSE_OK;
			}
			pkt->proto = fh->nexthdr;
			pkt->l4_off += sizeof(*fh);
			continue;
		}
		struct ipv6_opt_hdr_min *oh = data + pkt->l4_off;

		if ((void *)(oh + 1) > data_end)
			return PARSE_BAD_L3;
		if (nh == IPPROTO_AH)
			hlen = (oh->hdrlen + 2) * 4;
		else
			hlen = (oh->hdrlen + 1) * 8;
		if (pkt->l4_off + hlen > l3_end)
			return PARSE_BAD_L3;
		pkt->proto = oh->nexthdr;
		pkt->l4_off += hlen;
	}
	/* Still an extension header after the limit: give up on this packet. */
	return PARSE_BAD_L3;
}

/* lbd_parse_ports reads the TCP or UDP header of a packet for a VIP address. */
static __always_inline int lbd_parse_ports(void *data, void *data_end, struct packet *pkt)
{
	__u16 l3_end = pkt->l3_off + pkt->l3_len;

	if (pkt->proto == IPPROTO_TCP) {
		struct tcphdr *th = data + pkt->l4_off;

		if ((void *)(th + 1) > data_end || pkt->l4_off + sizeof(*th) > l3_end)
			return PARSE_BAD_L4;
		if (th->doff < 5 || pkt->l4_off + th->doff * 4 > l3_end)
			return PARSE_BAD_L4;
		pkt->sport = th->source;
		pkt->dport = th->dest;
		pkt->tcp_flags = ((__u8 *)th)[13];
		return PARSE_OK;
	}
	if (pkt->proto == IPPROTO_UDP) {
		struct udphdr *uh = data + pkt->l4_off;
		__u16 ulen;

		if ((void *)(uh + 1) > data_end || pkt->l4_off + sizeof(*uh) > l3_end)
			return PARSE_BAD_L4;
		ulen = bpf_ntohs(uh->len);
		if (ulen < sizeof(*uh) || pkt->l4_off + ulen > l3_end)
			return PARSE_BAD_L4;
		pkt->sport = uh->source;
		pkt->dport = uh->dest;
		return PARSE_OK;
	}
	return PARSE_BAD_L4;
}

#define LBD_TCP_FIN 0x01
#define LBD_TCP_SYN 0x02
#define LBD_TCP_RST 0x04
#define LBD_TCP_ACK 0x10

#endif /* LBD_PARSE_H */
