//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lbd's XDP L4 balancer. For a packet to a VIP it picks a real (the
 * connection table first, else the VIP's Maglev ring), encapsulates the
 * packet to it and transmits it back out (XDP_TX); the real answers the
 * client directly. Everything else goes to the kernel stack untouched,
 * except malformed packets (dropped) and unbalanceable packets to a VIP
 * address (passed or dropped by policy), each with its own counter.
 *
 * The entry point reads as the steps it takes; the steps live in
 * bpf/include/lbd_*.h.
 */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "lbd_types.h"
#include "lbd_maps.h"
#include "lbd_parse.h"
#include "lbd_hash.h"
#include "lbd_encap.h"
#include "lbd_icmp.h"

#define NSEC_PER_SEC 1000000000ULL

static __always_inline int lbd_count(struct global_counters *gs, __u32 stat, int action)
{
	if (stat < LBD_STAT_MAX)
		gs->counters[stat]++;
	return action;
}

/* lbd_policy applies a pass-or-drop policy switch of the configuration. */
static __always_inline int lbd_policy(struct global_counters *gs, const struct lbd_config *cfg,
				      __u32 pass_flag, __u32 pass_stat, __u32 drop_stat)
{
	if (cfg->flags & pass_flag)
		return lbd_count(gs, pass_stat, XDP_PASS);
	return lbd_count(gs, drop_stat, XDP_DROP);
}

/* lbd_lookup_vip finds the VIP for (addr, port, proto): exact port first, then any-port. */
static __always_inline struct vip_meta *lbd_lookup_vip(const __u32 addr[4], __u8 family,
						       __u16 port, __u8 proto, __u32 addr_flags)
{
	struct vip_key key = {};
	struct vip_meta *vm;
	__u32 portless;

	__builtin_memcpy(key.addr, addr, 16);
	key.family = family;
	key.port = port;
	key.proto = proto;
	vm = bpf_map_lookup_elem(&vips, &key);
	if (vm)
		return vm;
	portless = proto == IPPROTO_TCP ? LBD_ADDR_F_PORTLESS_TCP : LBD_ADDR_F_PORTLESS_UDP;
	if (!(addr_flags & portless))
		return NULL;
	key.port = 0;
	return bpf_map_lookup_elem(&vips, &key);
}

/* lbd_ring_pick returns the real in the VIP's ring slot for hash, or 0. */
static __always_inline __u32 lbd_ring_pick(const struct vip_meta *vm, __u32 hash)
{
	__u32 vip_num = vm->vip_num;
	__u32 size = vm->ring_size;
	__u32 slot, *real;
	void *ring;

	if (!size)
		return 0;
	ring = bpf_map_lookup_elem(&rings, &vip_num);
	if (!ring)
		return 0;
	slot = hash % size;
	real = bpf_map_lookup_elem(ring, &slot);
	return real ? *real : 0;
}

static __always_inline struct real_def *lbd_real(__u32 idx)
{
	struct real_def *real;

	if (!idx)
		return NULL;
	real = bpf_map_lookup_elem(&reals, &idx);
	if (!real || real->family == LBD_FAMILY_NONE)
		return NULL;
	return real;
}

/*
 * lbd_forward chooses the real for a VIP flow and encapsulates the packet
 * to it. A TCP SYN always takes the ring's choice (a new connection follows
 * the current ring, as in Katran); other packets stay with the connection
 * table's real while the entry exists and its real is still defined.
 * too_big marks an ICMP error that quotes the flow: it follows the flow but
 * neither creates nor refreshes the flow's entry.
 */
static __always_inline int lbd_forward(struct xdp_md *ctx, struct packet *pkt,
				       const struct flow_key *fk, const struct vip_meta *vm,
				       const struct lbd_config *cfg, struct global_counters *gs,
				       int too_big)
{
	__u32 vip_num = vm->vip_num;
	__u32 vflags = vm->flags;
	__u32 ports = vflags & LBD_VIP_F_STICKY ? 0 : ((__u32)fk->sport << 16) | fk->dport;
	__u32 hash = lbd_flow_hash(fk->src, ports);
	int use_lru = !(vflags & LBD_VIP_F_NO_LRU);
	int tcp = fk->proto == IPPROTO_TCP;
	int syn = tcp && (pkt->tcp_flags & (LBD_TCP_SYN | LBD_TCP_ACK)) == LBD_TCP_SYN;
	struct flow_state *st = NULL;
	struct real_def *real = NULL;
	struct vip_counters *vs;
	struct real_counters *rs;
	__u32 real_idx = 0;
	__u64 now = 0;
	int err;

	vs = bpf_map_lookup_elem(&vip_stats, &vip_num);
	if (!vs)
		return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);

	if (use_lru && !syn) {
		st = bpf_map_lookup_elem(&flows, fk);
		if (st) {
			real_idx = st->real;
			real = lbd_real(real_idx);
			if (!real) {
				st = NULL; /* its real was removed: choose again */
			} else if (!tcp && cfg->udp_timeout_s) {
				now = bpf_ktime_get_ns();
				if (now - st->last_ns > (__u64)cfg->udp_timeout_s * NSEC_PER_SEC)
					st = NULL; /* idle UDP flow: follow the ring again */
			}
		}
	}

	if (st) {
		if (!too_big) {
			gs->counters[LBD_STAT_LRU_HIT]++;
			vs->lru_hits++;
			if (!now)
				now = bpf_ktime_get_ns();
			__sync_fetch_and_add(&st->packets, 1);
			__sync_fetch_and_add(&st->bytes, pkt->l3_len);
			st->last_ns = now;
		}
	} else {
		real_idx = lbd_ring_pick(vm, hash);
		real = lbd_real(real_idx);
		if (!real)
			return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
		if (use_lru && !too_big) {
			gs->counters[LBD_STAT_LRU_MISS]++;
			vs->lru_misses++;
			if (tcp && !syn)
				gs->counters[LBD_STAT_LRU_MISS_NON_SYN]++;
			/* A RST ends the flow: do not create an entry for it. */
			if (!(tcp && (pkt->tcp_flags & LBD_TCP_RST))) {
				struct flow_state ns = {};

				if (!now)
					now = bpf_ktime_get_ns();
				ns.real = real_idx;
				ns.vip_num = vip_num;
				ns.packets = 1;
				ns.bytes = pkt->l3_len;
				ns.first_ns = now;
				ns.last_ns = now;
				if (bpf_map_update_elem(&flows, fk, &ns, BPF_ANY))
					gs->counters[LBD_STAT_LRU_INSERT_FAIL]++;
			}
		}
	}

	err = lbd_encap(ctx, pkt, real, hash, vflags & LBD_VIP_F_GUE, cfg);
	if (err)
		return lbd_count(gs, err, XDP_DROP);

	vs->packets++;
	vs->bytes += pkt->l3_len;
	rs = bpf_map_lookup_elem(&real_stats, &real_idx);
	if (rs) {
		rs->packets++;
		rs->bytes += pkt->l3_len;
	}
	if (too_big)
		gs->counters[LBD_STAT_ICMP_TOO_BIG]++;
	return lbd_count(gs, LBD_STAT_TX, XDP_TX);
}

/* lbd_icmp handles ICMP and ICMPv6 to a VIP address. */
static __always_inline int lbd_icmp(struct xdp_md *ctx, struct packet *pkt, __u32 addr_flags,
				    const struct lbd_config *cfg, struct global_counters *gs)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_key fk = {};
	struct vip_meta *vm;

	switch (lbd_icmp_classify(data, data_end, pkt, &fk)) {
	case ICMP_KIND_ECHO:
		if (lbd_icmp_echo_reply(data, data_end, pkt))
			return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L4, XDP_DROP);
		return lbd_count(gs, LBD_STAT_ICMP_ECHO_REPLY, XDP_TX);
	case ICMP_KIND_TOO_BIG:
		vm = lbd_lookup_vip(fk.dst, fk.family, fk.dport, fk.proto, addr_flags);
		if (!vm)
			break;
		return lbd_forward(ctx, pkt, &fk, vm, cfg, gs, 1);
	case ICMP_KIND_BAD:
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L4, XDP_DROP);
	}
	return lbd_policy(gs, cfg, LBD_CFG_F_UNBALANCEABLE_PASS, LBD_STAT_PASS_UNBALANCEABLE,
			  LBD_STAT_DROP_UNBALANCEABLE);
}

static __always_inline int lbd_process(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	struct addr_key ak = {};
	struct flow_key fk = {};
	struct global_counters *gs;
	struct lbd_config *cfg;
	struct vip_meta *vm;
	__u32 zero = 0;
	enum lbd_addr_flag *addr_flags;
	int r;

	gs = bpf_map_lookup_elem(&stats, &zero);
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!gs || !cfg)
		return XDP_ABORTED;

	r = lbd_parse_l2_l3(data, data_end, &pkt);
	if (r == PARSE_NON_IP)
		return lbd_count(gs, LBD_STAT_PASS_NON_IP, XDP_PASS);
	if (r == PARSE_BAD_L2)
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L2, XDP_DROP);
	if (r != PARSE_OK)
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L3, XDP_DROP);

	__builtin_memcpy(ak.addr, pkt.dst, 16);
	ak.family = pkt.family;
	addr_flags = bpf_map_lookup_elem(&vip_addrs, &ak);
	if (!addr_flags)
		return lbd_count(gs, LBD_STAT_PASS_NON_VIP, XDP_PASS);

	if (pkt.family == LBD_FAMILY_IPV6 && lbd_skip_ipv6_ext(data, data_end, &pkt) != PARSE_OK)
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L3, XDP_DROP);
	if (pkt.fragment)
		return lbd_policy(gs, cfg, LBD_CFG_F_FRAG_PASS, LBD_STAT_PASS_FRAGMENT,
				  LBD_STAT_DROP_FRAGMENT);
	if (pkt.proto == IPPROTO_ICMP || pkt.proto == IPPROTO_ICMPV6)
		return lbd_icmp(ctx, &pkt, *addr_flags, cfg, gs);
	if (pkt.proto != IPPROTO_TCP && pkt.proto != IPPROTO_UDP)
		return lbd_policy(gs, cfg, LBD_CFG_F_UNBALANCEABLE_PASS,
				  LBD_STAT_PASS_UNBALANCEABLE, LBD_STAT_DROP_UNBALANCEABLE);
	if (lbd_parse_ports(data, data_end, &pkt) != PARSE_OK)
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L4, XDP_DROP);

	vm = lbd_lookup_vip(pkt.dst, pkt.family, pkt.dport, pkt.proto, *addr_flags);
	if (!vm)
		return lbd_count(gs, LBD_STAT_PASS_NO_VIP_PORT, XDP_PASS);

	__builtin_memcpy(fk.src, pkt.src, 16);
	__builtin_memcpy(fk.dst, pkt.dst, 16);
	fk.sport = pkt.sport;
	fk.dport = pkt.dport;
	fk.proto = pkt.proto;
	fk.family = pkt.family;
	return lbd_forward(ctx, &pkt, &fk, vm, cfg, gs, 0);
}

SEC("xdp")
int lbd_balancer(struct xdp_md *ctx)
{
	return lbd_process(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
