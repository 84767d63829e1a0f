//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lbd's real-side decapsulation, a TC ingress program for a real server
 * whose kernel has no ipip/fou module (or that should not need one). It
 * removes the outer header of what the XDP balancer sends: IPv4 or IPv6
 * outer header with IP-in-IP (protocol 4 / 41), or with UDP to the GUE port
 * (GUE variant 1: the inner IP header right after the UDP header), inner
 * IPv4 or IPv6 by the protocol or the version nibble. The stack then
 * delivers the inner packet to the VIP configured on the real's loopback.
 *
 * Only packets whose inner destination is one of this real's VIPs
 * (decap_vips) are decapsulated, so the program is never an open relay:
 * any other packet goes on untouched (TC_ACT_UNSPEC, so that the next TCX
 * program or cls_bpf filter still sees it, and the stack after them). The
 * outer destination is not checked: whatever the outer address, the inner
 * packet can only reach a VIP of this host, and a frame not addressed to
 * this host's MAC is dropped by the stack after decapsulation as before.
 *
 * A tunnel packet whose inner header cannot be read, or whose lengths do
 * not agree, is dropped and counted: no consumer could use it.
 *
 * At TC ingress the kernel has already taken an 802.1Q tag out of the frame
 * (into skb metadata), so the outer IP header follows a plain Ethernet
 * header; a frame that still carries a tag in band is not ours.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lbd_types.h"
#include "lbd_decap.h"

#define LBD_DEFAULT_DECAP_VIPS 1024
#define LBD_ETH_PROTO_OFF 12 /* h_proto in struct ethhdr */
#define LBD_IP_MF 0x2000
#define LBD_IP_OFFSET 0x1fff

/* VIPs this real serves: inner destinations that may be decapsulated. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct addr_key);
	__type(value, __u8);
	__uint(max_entries, LBD_DEFAULT_DECAP_VIPS);
} decap_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct decap_config);
	__uint(max_entries, 1);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct decap_counters);
	__uint(max_entries, 1);
} stats SEC(".maps");

/* What the outer headers say about a tunnel packet. */
struct tunnel {
	__u32 outer_len;   /* bytes after Ethernet to remove: outer IP header (+ UDP) */
	__u32 payload_len; /* bytes the outer header says it carries after outer_len */
	__u8 outer6;
	__u8 gue;
	__u8 inner_proto;  /* IPPROTO_IPIP / IPPROTO_IPV6 for IP-in-IP; 0 for GUE: the nibble says */
};

static __always_inline int count(struct decap_counters *c, __u32 stat, int action)
{
	if (stat < LBD_DECAP_STAT_MAX)
		c->counters[stat]++;
	return action;
}

/* A tunnel protocol (IP-in-IP or UDP) in an outer header. */
static __always_inline int tunnel_proto(__u8 proto)
{
	return proto == IPPROTO_IPIP || proto == IPPROTO_IPV6 || proto == IPPROTO_UDP;
}

/*
 * parse_outer reads the outer IP header (and UDP header) and fills t. It
 * returns -1 if the packet is not a tunnel packet for us, LBD_DECAP_STAT_MAX
 * if it is one, or the counter of the verdict it already knows.
 */
static __always_inline int parse_outer(struct __sk_buff *skb, const struct decap_config *cfg,
				       struct tunnel *t)
{
	__u32 len = skb->len;
	__u16 eth_proto;
	__u8 proto, first_frag = 0;

	if (bpf_skb_load_bytes(skb, LBD_ETH_PROTO_OFF, &eth_proto, 2))
		return -1;
	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr o4;
		__u32 tot;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &o4, sizeof(o4)))
			return -1;
		if (o4.version != 4 || o4.ihl < 5 || !tunnel_proto(o4.protocol))
			return -1;
		proto = o4.protocol;
		t->outer_len = o4.ihl * 4;
		tot = bpf_ntohs(o4.tot_len);
		if (o4.frag_off & bpf_htons(LBD_IP_MF | LBD_IP_OFFSET)) {
			/* A later fragment has no UDP header to tell GUE from other UDP. */
			if (proto != IPPROTO_UDP)
				return LBD_DECAP_PASS_FRAGMENT;
			if (o4.frag_off & bpf_htons(LBD_IP_OFFSET))
				return -1;
			first_frag = 1;
		}
		/* Outer lengths that lie: the stack would drop it too; say malformed below. */
		if (tot < t->outer_len || ETH_HLEN + tot > len)
			tot = 0;
		t->payload_len = tot ? tot - t->outer_len : 0;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr o6;
		__u32 plen;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &o6, sizeof(o6)))
			return -1;
		/* The balancer sends no extension headers; behind one is not ours. */
		if (o6.version != 6 || !tunnel_proto(o6.nexthdr))
			return -1;
		proto = o6.nexthdr;
		t->outer6 = 1;
		t->outer_len = sizeof(o6);
		plen = bpf_ntohs(o6.payload_len);
		if (ETH_HLEN + sizeof(o6) + plen > len)
			plen = 0;
		t->payload_len = plen;
	} else {
		return -1;
	}

	if (proto != IPPROTO_UDP) {
		t->inner_proto = proto;
		return LBD_DECAP_STAT_MAX;
	}
	struct udphdr uh;

	if (!cfg->gue_port || bpf_skb_load_bytes(skb, ETH_HLEN + t->outer_len, &uh, sizeof(uh)))
		return -1;
	if (uh.dest != cfg->gue_port)
		return -1;
	if (first_frag)
		return LBD_DECAP_PASS_FRAGMENT;
	t->gue = 1;
	t->outer_len += sizeof(uh);
	if (bpf_ntohs(uh.len) != t->payload_len || t->payload_len < sizeof(uh))
		t->payload_len = 0; /* inconsistent: malformed if the inner packet is for a VIP */
	else
		t->payload_len -= sizeof(uh);
	return LBD_DECAP_STAT_MAX;
}

/*
 * parse_inner reads the inner IP header. It returns -1 if the packet is not
 * a tunnel packet after all (GUE whose first nibble is no IP version),
 * LBD_DECAP_PASS_NOT_VIP, LBD_DECAP_DROP_MALFORMED, or LBD_DECAP_STAT_MAX
 * when the packet is to be decapsulated; *inner6 says the inner family.
 */
static __always_inline int parse_inner(struct __sk_buff *skb, const struct tunnel *t, int *inner6)
{
	__u32 off = ETH_HLEN + t->outer_len;
	struct addr_key key = {};
	__u32 ilen;
	__u8 first;

	if (bpf_skb_load_bytes(skb, off, &first, 1))
		return LBD_DECAP_DROP_MALFORMED;
	switch (t->inner_proto) {
	case IPPROTO_IPIP:
		*inner6 = 0;
		break;
	case IPPROTO_IPV6:
		*inner6 = 1;
		break;
	default: /* GUE variant 1: the version nibble */
		if ((first >> 4) == 4)
			*inner6 = 0;
		else if ((first >> 4) == 6)
			*inner6 = 1;
		else
			return -1; /* GUE variant 0 or other UDP on our port: not ours */
	}

	if (!*inner6) {
		struct iphdr i4;

		if (bpf_skb_load_bytes(skb, off, &i4, sizeof(i4)))
			return LBD_DECAP_DROP_MALFORMED;
		key.addr[0] = i4.daddr;
		key.family = LBD_FAMILY_IPV4;
		if (!bpf_map_lookup_elem(&decap_vips, &key))
			return LBD_DECAP_PASS_NOT_VIP;
		ilen = bpf_ntohs(i4.tot_len);
		if (i4.version != 4 || i4.ihl < 5 || ilen < i4.ihl * 4)
			return LBD_DECAP_DROP_MALFORMED;
	} else {
		struct ipv6hdr i6;

		if (bpf_skb_load_bytes(skb, off, &i6, sizeof(i6)))
			return LBD_DECAP_DROP_MALFORMED;
		__builtin_memcpy(key.addr, &i6.daddr, 16);
		key.family = LBD_FAMILY_IPV6;
		if (!bpf_map_lookup_elem(&decap_vips, &key))
			return LBD_DECAP_PASS_NOT_VIP;
		if (i6.version != 6)
			return LBD_DECAP_DROP_MALFORMED;
		ilen = sizeof(i6) + bpf_ntohs(i6.payload_len);
	}
	/* The inner packet fills exactly what the outer header says it carries. */
	if (ilen != t->payload_len)
		return LBD_DECAP_DROP_MALFORMED;
	return LBD_DECAP_STAT_MAX;
}

/*
 * decap removes the outer header. Same family: one shrink right after the
 * MAC header. Cross family: bpf_skb_change_proto first (it sets
 * skb->protocol and grows or shrinks the room after the MAC header by the
 * difference of the IP header sizes, 20 bytes), then the shrink removes
 * what is left of the outer header, then the Ethernet type is rewritten.
 * The order matters: the shrink checks the remaining length against the
 * header size of skb->protocol. Both helpers exist since 4.x kernels, so
 * one sequence serves every supported kernel (the 6.3+ DECAP_L3 flags
 * would save one call).
 *
 * BPF_F_ADJ_ROOM_FIXED_GSO keeps a GRO packet's segment size: the inner
 * segments keep the size they had.
 */
static __always_inline int decap(struct __sk_buff *skb, const struct tunnel *t, int inner6)
{
	__s32 remove = t->outer_len;

	if (t->outer6 != inner6) {
		__be16 proto = bpf_htons(inner6 ? ETH_P_IPV6 : ETH_P_IP);

		if (bpf_skb_change_proto(skb, proto, 0))
			return -1;
		remove += inner6 ? (int)(sizeof(struct ipv6hdr) - sizeof(struct iphdr))
				 : -(int)(sizeof(struct ipv6hdr) - sizeof(struct iphdr));
		if (bpf_skb_adjust_room(skb, -remove, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
			return -1;
		if (bpf_skb_store_bytes(skb, LBD_ETH_PROTO_OFF, &proto, 2, 0))
			return -1;
		return 0;
	}
	if (bpf_skb_adjust_room(skb, -remove, BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_FIXED_GSO))
		return -1;
	return 0;
}

SEC("tc")
int lbd_decap(struct __sk_buff *skb)
{
	struct decap_counters *cs;
	struct decap_config *cfg;
	struct tunnel t = {};
	__u32 zero = 0;
	int r, inner6 = 0;

	cs = bpf_map_lookup_elem(&stats, &zero);
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cs || !cfg)
		return TC_ACT_UNSPEC;

	r = parse_outer(skb, cfg, &t);
	if (r < 0)
		return count(cs, LBD_DECAP_PASS_NOT_TUNNEL, TC_ACT_UNSPEC);
	if (r != LBD_DECAP_STAT_MAX)
		return count(cs, r, TC_ACT_UNSPEC);

	r = parse_inner(skb, &t, &inner6);
	if (r < 0)
		return count(cs, LBD_DECAP_PASS_NOT_TUNNEL, TC_ACT_UNSPEC);
	if (r == LBD_DECAP_PASS_NOT_VIP)
		return count(cs, r, TC_ACT_UNSPEC);
	if (r != LBD_DECAP_STAT_MAX)
		return count(cs, r, TC_ACT_SHOT);

	if (decap(skb, &t, inner6))
		return count(cs, LBD_DECAP_DROP_FAILED, TC_ACT_SHOT);
	return count(cs, (t.gue ? LBD_DECAP_GUE_4IN4 : LBD_DECAP_IPIP_4IN4) + t.outer6 * 2 + inner6,
		     TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
