//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lbd's health-check encapsulation, a TC egress program for the LB node
 * (Katran's healthchecking_ipip). The prober sends its probe to the VIP
 * with SO_MARK set to a number that stands for one real; this program
 * wraps such a packet in IPv4-in-IPv4 or IPv6-in-IPv6 towards that real,
 * exactly as the balancer wraps a client's packet, so a probe tests the
 * whole path a client flow takes: the tunnel, the real's decapsulation,
 * the VIP on the real's loopback and the service behind it. The real
 * answers the prober directly.
 *
 * The map is keyed by the mark (not by the VIP) so that every real of a
 * VIP can be probed at the same time: one mark per real. Mark 0 is never
 * a probe. Packets with a mark no real has go on untouched (TC_ACT_UNSPEC).
 * A probe whose family differs from its real's is dropped, not sent to
 * the VIP unencapsulated: a probe must not succeed by another path.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lbd_types.h"
#include "lbd_csum.h"
#include "lbd_hcencap.h"

#define LBD_DEFAULT_HC_REALS 4096
#define LBD_OUTER_TTL 64
#define LBD_ETH_PROTO_OFF 12 /* h_proto in struct ethhdr */

/* Probe mark -> the real it probes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct real_def);
	__uint(max_entries, LBD_DEFAULT_HC_REALS);
} hc_reals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct hc_config);
	__uint(max_entries, 1);
} hc_settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct hc_counters);
	__uint(max_entries, 1);
} hc_stats SEC(".maps");

static __always_inline int count(struct hc_counters *c, __u32 stat, int action)
{
	if (stat < LBD_HC_STAT_MAX)
		c->counters[stat]++;
	return action;
}

static __always_inline int mac_is_zero(const __u8 *mac)
{
	return (mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]) == 0;
}

/*
 * encap4 puts an IPv4 header (protocol 4) in front of the IPv4 probe, as
 * the balancer does: TOS copied, no DF, TTL 64. Lengths follow the inner
 * header (not skb->len), so trailing bytes never make the outer lie.
 */
static __always_inline int encap4(struct __sk_buff *skb, const struct real_def *real,
				  const struct hc_config *cfg)
{
	struct iphdr o4 = {}, i4;
	__u32 inner_len;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &i4, sizeof(i4)))
		return -1;
	inner_len = bpf_ntohs(i4.tot_len);
	if (bpf_skb_adjust_room(skb, sizeof(o4), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4))
		return -1;
	o4.version = 4;
	o4.ihl = 5;
	o4.tos = i4.tos;
	o4.tot_len = bpf_htons(inner_len + sizeof(o4));
	o4.ttl = LBD_OUTER_TTL;
	o4.protocol = IPPROTO_IPIP;
	o4.saddr = cfg->src4;
	o4.daddr = real->addr[0];
	o4.check = lbd_ipv4_csum(&o4);
	return bpf_skb_store_bytes(skb, ETH_HLEN, &o4, sizeof(o4), 0) ? -1 : 0;
}

/* encap6 puts an IPv6 header (next header 41) in front of the IPv6 probe. */
static __always_inline int encap6(struct __sk_buff *skb, const struct real_def *real,
				  const struct hc_config *cfg)
{
	struct ipv6hdr o6 = {}, i6;
	__u32 inner_len;

	if (bpf_skb_load_bytes(skb, ETH_HLEN, &i6, sizeof(i6)))
		return -1;
	inner_len = sizeof(i6) + bpf_ntohs(i6.payload_len);
	if (bpf_skb_adjust_room(skb, sizeof(o6), BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6))
		return -1;
	/* Version 6 and the probe's traffic class; flow label 0. */
	((__u8 *)&o6)[0] = 0x60 | (((__u8 *)&i6)[0] & 0x0f);
	((__u8 *)&o6)[1] = ((__u8 *)&i6)[1] & 0xf0;
	o6.payload_len = bpf_htons(inner_len);
	o6.nexthdr = IPPROTO_IPV6;
	o6.hop_limit = LBD_OUTER_TTL;
	__builtin_memcpy(&o6.saddr, cfg->src6, 16);
	__builtin_memcpy(&o6.daddr, real->addr, 16);
	return bpf_skb_store_bytes(skb, ETH_HLEN, &o6, sizeof(o6), 0) ? -1 : 0;
}

SEC("tc")
int lbd_hc_encap(struct __sk_buff *skb)
{
	struct hc_counters *cs;
	struct hc_config *cfg;
	struct real_def *real;
	__u32 zero = 0, mark = skb->mark;
	__u16 eth_proto;
	int err;

	cs = bpf_map_lookup_elem(&hc_stats, &zero);
	cfg = bpf_map_lookup_elem(&hc_settings, &zero);
	if (!cs || !cfg)
		return TC_ACT_UNSPEC;
	real = mark ? bpf_map_lookup_elem(&hc_reals, &mark) : NULL;
	if (!real)
		return count(cs, LBD_HC_PASS_UNMARKED, TC_ACT_UNSPEC);

	if (bpf_skb_load_bytes(skb, LBD_ETH_PROTO_OFF, &eth_proto, 2))
		return count(cs, LBD_HC_DROP_FAMILY, TC_ACT_SHOT);
	if (eth_proto == bpf_htons(ETH_P_IP) && real->family == LBD_FAMILY_IPV4)
		err = encap4(skb, real, cfg);
	else if (eth_proto == bpf_htons(ETH_P_IPV6) && real->family == LBD_FAMILY_IPV6)
		err = encap6(skb, real, cfg);
	else
		return count(cs, LBD_HC_DROP_FAMILY, TC_ACT_SHOT);
	if (err)
		return count(cs, LBD_HC_DROP_FAILED, TC_ACT_SHOT);
	if (!mac_is_zero(cfg->gw_mac) && bpf_skb_store_bytes(skb, 0, cfg->gw_mac, ETH_ALEN, 0))
		return count(cs, LBD_HC_DROP_FAILED, TC_ACT_SHOT);
	return count(cs, real->family == LBD_FAMILY_IPV4 ? LBD_HC_ENCAP_4IN4 : LBD_HC_ENCAP_6IN6, TC_ACT_OK);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
