/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * ICMP to a VIP address: echo requests are answered here (a VIP has no
 * host behind it on this node to answer them), and "fragmentation needed" /
 * "packet too big" errors that quote a VIP flow are sent to the real that
 * serves the flow, so path MTU discovery works for DSR connections.
 */
#ifndef LBD_ICMP_H
#define LBD_ICMP_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

#include "lbd_types.h"
#include "lbd_parse.h"
#include "lbd_csum.h"

enum icmp_kind {
	ICMP_KIND_ECHO = 0, /* echo request: answer it */
	ICMP_KIND_TOO_BIG,  /* quotes a flow: forward it, flow key filled in */
	ICMP_KIND_OTHER,    /* nothing we balance */
	ICMP_KIND_BAD,      /* truncated ICMP header */
};

#define LBD_ICMP_REPLY_TTL 64

/* From linux/icmp.h and linux/icmpv6.h, which pull in libc headers. */
#define ICMP_ECHOREPLY 0
#define ICMP_DEST_UNREACH 3
#define ICMP_FRAG_NEEDED 4
#define ICMP_ECHO 8
#define ICMPV6_PKT_TOOBIG 2
#define ICMPV6_ECHO_REQUEST 128
#define ICMPV6_ECHO_REPLY 129

/*
 * lbd_icmp_classify looks at an ICMP/ICMPv6 packet to a VIP address. For
 * too-big errors it fills fk with the flow the quoted packet belongs to, as
 * the client sent it: the quote is the VIP's reply, so addresses and ports
 * are swapped back.
 */
static __always_inline int lbd_icmp_classify(void *data, void *data_end, const struct packet *pkt,
					     struct flow_key *fk)
{
	__u16 l3_end = pkt->l3_off + pkt->l3_len;
	__u8 *ic = data + pkt->l4_off;
	__u16 q_off = pkt->l4_off + 8; /* the quoted packet follows the 8-byte ICMP header */
	__u16 *ports;

	if ((void *)(ic + 8) > data_end || pkt->l4_off + 8 > l3_end)
		return ICMP_KIND_BAD;

	if (pkt->family == LBD_FAMILY_IPV4) {
		if (pkt->proto != IPPROTO_ICMP)
			return ICMP_KIND_OTHER;
		if (ic[0] == ICMP_ECHO && ic[1] == 0)
			return ICMP_KIND_ECHO;
		if (ic[0] != ICMP_DEST_UNREACH || ic[1] != ICMP_FRAG_NEEDED)
			return ICMP_KIND_OTHER;

		struct iphdr *q = data + q_off;
		__u16 qhlen;

		if ((void *)(q + 1) > data_end || q_off + sizeof(*q) > l3_end)
			return ICMP_KIND_OTHER;
		if (q->version != 4 || q->ihl < 5)
			return ICMP_KIND_OTHER;
		if (q->protocol != IPPROTO_TCP && q->protocol != IPPROTO_UDP)
			return ICMP_KIND_OTHER;
		if (q->saddr != pkt->dst[0])
			return ICMP_KIND_OTHER;
		qhlen = q->ihl * 4;
		ports = data + q_off + qhlen;
		if ((void *)(ports + 2) > data_end || q_off + qhlen + 4 > l3_end)
			return ICMP_KIND_OTHER;
		fk->src[0] = q->daddr;
		fk->dst[0] = q->saddr;
		fk->proto = q->protocol;
	} else {
		if (pkt->proto != IPPROTO_ICMPV6)
			return ICMP_KIND_OTHER;
		if (ic[0] == ICMPV6_ECHO_REQUEST && ic[1] == 0)
			return ICMP_KIND_ECHO;
		if (ic[0] != ICMPV6_PKT_TOOBIG || ic[1] != 0)
			return ICMP_KIND_OTHER;

		struct ipv6hdr *q6 = data + q_off;

		if ((void *)(q6 + 1) > data_end || q_off + sizeof(*q6) > l3_end)
			return ICMP_KIND_OTHER;
		if (q6->nexthdr != IPPROTO_TCP && q6->nexthdr != IPPROTO_UDP)
			return ICMP_KIND_OTHER;
		__builtin_memcpy(fk->src, &q6->daddr, 16);
		__builtin_memcpy(fk->dst, &q6->saddr, 16);
		if (fk->dst[0] != pkt->dst[0] || fk->dst[1] != pkt->dst[1] ||
		    fk->dst[2] != pkt->dst[2] || fk->dst[3] != pkt->dst[3])
			return ICMP_KIND_OTHER;
		ports = (void *)(q6 + 1);
		if ((void *)(ports + 2) > data_end || q_off + sizeof(*q6) + 4 > l3_end)
			return ICMP_KIND_OTHER;
		fk->proto = q6->nexthdr;
	}
	fk->family = pkt->family;
	fk->sport = ports[1];
	fk->dport = ports[0];
	return ICMP_KIND_TOO_BIG;
}

/* lbd_icmp_echo_reply turns an echo request into its reply in place, for XDP_TX. */
static __always_inline int lbd_icmp_echo_reply(void *data, void *data_end, const struct packet *pkt)
{
	struct ethhdr *eth = data;
	__u8 mac[ETH_ALEN];
	__u16 *ic = data + pkt->l4_off;
	__u16 old;

	if ((void *)(eth + 1) > data_end || (void *)(ic + 2) > data_end)
		return -1;
	__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);

	if (pkt->family == LBD_FAMILY_IPV4) {
		struct iphdr *iph = data + pkt->l3_off;

		if ((void *)(iph + 1) > data_end)
			return -1;
		iph->saddr = pkt->dst[0];
		iph->daddr = pkt->src[0];
		old = *(__u16 *)&iph->ttl;
		iph->ttl = LBD_ICMP_REPLY_TTL;
		lbd_csum_replace2(&iph->check, old, *(__u16 *)&iph->ttl);
		old = ic[0];
		((__u8 *)ic)[0] = ICMP_ECHOREPLY;
	} else {
		struct ipv6hdr *ip6h = data + pkt->l3_off;

		if ((void *)(ip6h + 1) > data_end)
			return -1;
		/* Swapping source and destination leaves the pseudo-header sum as it was. */
		__builtin_memcpy(&ip6h->saddr, pkt->dst, 16);
		__builtin_memcpy(&ip6h->daddr, pkt->src, 16);
		ip6h->hop_limit = LBD_ICMP_REPLY_TTL;
		old = ic[0];
		((__u8 *)ic)[0] = ICMPV6_ECHO_REPLY;
	}
	lbd_csum_replace2(&ic[1], old, ic[0]);
	return 0;
}

#endif /* LBD_ICMP_H */
