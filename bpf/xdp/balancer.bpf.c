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

/*
 * lbd_now is the datapath's clock: jiffies. Flows only need first/last
 * seen and idle timeouts, for which a tick (1-10 ms) is plenty, and
 * reading jiffies costs next to nothing, where even the coarse ktime
 * helper cost ~10 ns a packet (a tenth of an established flow's budget).
 * User space converts ticks to time (bpf/xdp/clock.go).
 */
static __always_inline __u32 lbd_now(void)
{
	return (__u32)bpf_jiffies64();
}

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

/*
 * lbd_maybe_vip reads the destination's bit in vip_filter: 0 means no VIP
 * has the address, 1 that one may have it.
 */
static __always_inline int lbd_maybe_vip(const struct packet *pkt)
{
	__u32 bit = lbd_filter_bit(pkt->dst, pkt->family);
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&vip_filter, &word);

	return w && ((*w >> (bit & 63)) & 1);
}

/* lbd_vip_addr returns the flags of a VIP address, or NULL if no VIP has it. */
static __always_inline __u32 *lbd_vip_addr(const struct packet *pkt)
{
	struct addr_key ak = {};

	__builtin_memcpy(ak.addr, pkt->dst, 16);
	ak.family = pkt->family;
	return bpf_map_lookup_elem(&vip_addrs, &ak);
}

/*
 * lbd_vip_or answers for a packet the filter let through that turned out
 * bad: passed untouched if its address is no VIP's (a filter false
 * positive), else counted as stat with action.
 */
static __always_inline int lbd_vip_or(struct global_counters *gs, const struct packet *pkt,
				      __u32 stat, int action)
{
	if (!lbd_vip_addr(pkt))
		return lbd_count(gs, LBD_STAT_PASS_NON_VIP, XDP_PASS);
	return lbd_count(gs, stat, action);
}

/*
 * lbd_lookup_vip finds the VIP for (addr, port, proto): exact port first,
 * then any-port. It returns the VIP's meta and sets *num. The address's
 * vip_addrs flags are only needed when the exact lookup misses: pass them
 * if known, else NULL and they are looked up then; *not_vip is set when
 * the address turns out to be no VIP's.
 */
static __always_inline struct vip_meta *lbd_lookup_vip(const __u32 addr[4], __u8 family, __u16 port,
						       __u8 proto, const __u32 *addr_flags, __u32 *num,
						       int *not_vip)
{
	struct vip_key key = {};
	struct vip_meta *vm;
	__u32 portless, *n;

	__builtin_memcpy(key.addr, addr, 16);
	key.family = family;
	key.port = port;
	key.proto = proto;
	n = bpf_map_lookup_elem(&vips, &key);
	if (!n) {
		if (!addr_flags) {
			struct addr_key ak = {};

			__builtin_memcpy(ak.addr, addr, 16);
			ak.family = family;
			addr_flags = bpf_map_lookup_elem(&vip_addrs, &ak);
			if (!addr_flags) {
				*not_vip = 1;
				return NULL;
			}
		}
		portless = proto == IPPROTO_TCP ? LBD_ADDR_F_PORTLESS_TCP : LBD_ADDR_F_PORTLESS_UDP;
		if (!(*addr_flags & portless))
			return NULL;
		key.port = 0;
		n = bpf_map_lookup_elem(&vips, &key);
		if (!n)
			return NULL;
	}
	*num = *n;
	vm = bpf_map_lookup_elem(&vip_info, num);
	if (!vm || !vm->gen)
		return NULL;
	return vm;
}

/*
 * lbd_ring_pick returns the real in the VIP's live ring slot for hash, or
 * 0. ring_size is vip_meta.ring_size: size and live buffer in one word.
 */
static __always_inline __u32 lbd_ring_pick(__u32 vip_num, __u32 ring_size, __u32 hash)
{
	__u32 size = ring_size & LBD_RING_SIZE_MASK;
	__u32 key = (vip_num << 1) | (ring_size >> LBD_RING_BUF_SHIFT);
	__u32 slot, *real;
	void *ring;

	if (!size)
		return 0;
	ring = bpf_map_lookup_elem(&rings, &key);
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

static __always_inline __u32 lbd_hash(const struct flow_key *fk, __u32 vflags)
{
	__u32 ports = vflags & LBD_VIP_F_STICKY ? 0 : ((__u32)fk->sport << 16) | fk->dport;

	return lbd_flow_hash(fk->src, ports);
}

/* What a flow is forwarded with. */
struct choice {
	struct vip_meta *vm;
	struct real_def *real;
	__u32 vip_num;
	__u32 real_idx;
	__u32 hash; /* lbd_hash of the flow: ring slot and outer source */
	__u32 now;  /* jiffies (32 bits); 0 until read */
	void *tbl;  /* this CPU's connection table (NULL: none, flows go unrecorded) */
	int missed; /* tbl has no entry for the flow: the other CPUs' tables may */
};

/* lbd_flow_table returns this CPU's connection table. */
static __always_inline void *lbd_flow_table(void)
{
	__u32 cpu = bpf_get_smp_processor_id();

	return bpf_map_lookup_elem(&flows, &cpu);
}

/* lbd_may_search spends one of this second's searches, if any are left. */
static __always_inline int lbd_may_search(const struct lbd_config *cfg, struct global_counters *gs,
					  struct choice *c)
{
	__u32 zero = 0;
	struct search_budget *b = bpf_map_lookup_elem(&search_budget, &zero);

	if (!b || !cfg->search_rate)
		return 0;
	if (!c->now)
		c->now = lbd_now();
	if ((__u32)(c->now - b->start) >= cfg->hz) {
		b->start = c->now;
		b->used = 0;
	}
	if (b->used >= cfg->search_rate) {
		gs->counters[LBD_STAT_LRU_SEARCH_SKIPPED]++;
		return 0;
	}
	b->used++;
	return 1;
}

/*
 * lbd_search_other_cpus hands a packet whose flow this CPU's table does
 * not have to lbd_flow_search (a tail call), which looks in the other
 * CPUs' tables, moves the entry here if it finds it, and balances the
 * packet again. The search is a program of its own so that the verifier
 * walks its loop over the CPUs once, not once per path that can reach it.
 * search_scratch tells that second balancing that the search found nothing
 * (if it found the flow, the second lookup does). It returns if the tail
 * call does not happen (no allowance left, no lbd running, or this is the
 * second balancing): the caller goes on without an entry.
 */
static __always_inline void lbd_search_other_cpus(struct xdp_md *ctx, const struct flow_key *fk,
						  const struct lbd_config *cfg,
						  struct global_counters *gs, struct choice *c)
{
	__u32 zero = 0;
	struct search_scratch *s = bpf_map_lookup_elem(&search_scratch, &zero);

	if (!s)
		return;
	if (s->searched && !__builtin_memcmp(&s->key, fk, sizeof(*fk))) {
		s->searched = 0; /* the second balancing of this packet */
		return;
	}
	if (!lbd_may_search(cfg, gs, c))
		return;
	s->key = *fk;
	s->searched = 0;
	bpf_tail_call(ctx, &progs, LBD_PROG_FLOW_SEARCH);
}

/*
 * lbd_maybe_search searches the other CPUs' tables (see
 * lbd_search_other_cpus) for a flow this CPU's table missed, once its VIP
 * (c->vm) is known: only for a VIP that uses the table and allows the
 * search. Packets to no VIP, or to a no-LRU VIP (every one of whose
 * packets misses), never spend the allowance.
 */
static __always_inline void lbd_maybe_search(struct xdp_md *ctx, const struct flow_key *fk,
					     const struct lbd_config *cfg,
					     struct global_counters *gs, struct choice *c)
{
	if (c->missed && !(c->vm->flags & (LBD_VIP_F_NO_LRU | LBD_VIP_F_NO_SEARCH)))
		lbd_search_other_cpus(ctx, fk, cfg, gs, c);
}

/*
 * lbd_table_lookup returns the connection table entry of fk if it can
 * still be used: its VIP is the one that made it (same generation) and
 * still uses the table, its real is still defined, and (UDP) it is not
 * idle past the timeout. This is the whole lookup of an established flow:
 * one hash lookup, then array lookups. A miss sets c->missed: the caller
 * looks up the VIP, then lbd_maybe_search.
 */
static __always_inline struct flow_state *lbd_table_lookup(const struct flow_key *fk,
							   const struct lbd_config *cfg,
							   struct choice *c)
{
	struct flow_state *st;

	if (!c->tbl)
		return NULL;
	st = bpf_map_lookup_elem(c->tbl, fk);
	if (!st) {
		c->missed = 1;
		return NULL;
	}
	c->vip_num = st->vip_num;
	c->vm = bpf_map_lookup_elem(&vip_info, &c->vip_num);
	if (!c->vm || c->vm->gen != st->vip_gen || (c->vm->flags & LBD_VIP_F_NO_LRU))
		return NULL;
	c->real_idx = st->real;
	c->real = lbd_real(c->real_idx);
	if (!c->real)
		return NULL; /* its real was removed: choose again */
	if (fk->proto == IPPROTO_UDP && cfg->udp_timeout_s) {
		c->now = lbd_now();
		if ((__u32)(c->now - st->last_tick) > cfg->udp_timeout_s * cfg->hz)
			return NULL; /* idle UDP flow: follow the ring again */
	}
	return st;
}

/* lbd_send encapsulates to the chosen real and counts the packet for the VIP and real. */
static __always_inline int lbd_send(struct xdp_md *ctx, struct packet *pkt, const struct flow_key *fk,
				    struct choice *c, struct vip_counters *vs,
				    const struct lbd_config *cfg, struct global_counters *gs)
{
	__u32 vflags = c->vm->flags;
	struct real_counters *rs;
	int err;

	err = lbd_encap(ctx, pkt, c->real, c->hash, vflags & LBD_VIP_F_GUE, cfg);
	if (err)
		return lbd_count(gs, err, XDP_DROP);
	vs->packets++;
	vs->bytes += pkt->l3_len;
	rs = bpf_map_lookup_elem(&real_stats, &c->real_idx);
	if (rs) {
		rs->packets++;
		rs->bytes += pkt->l3_len;
	}
	return lbd_count(gs, LBD_STAT_TX, XDP_TX);
}

/*
 * lbd_choose_new picks a real from the ring for a flow the table does not
 * (or may not) answer for, and records it in the table unless told not to.
 */
static __always_inline int lbd_choose_new(struct packet *pkt, const struct flow_key *fk,
					  struct choice *c, struct vip_counters *vs,
					  struct global_counters *gs, int record)
{
	__u32 vflags = c->vm->flags;
	int tcp = fk->proto == IPPROTO_TCP;

	c->real_idx = lbd_ring_pick(c->vip_num, c->vm->ring_size, c->hash);
	c->real = lbd_real(c->real_idx);
	if (!c->real)
		return LBD_STAT_DROP_NO_REAL;
	if (!record || (vflags & LBD_VIP_F_NO_LRU))
		return 0;
	gs->counters[LBD_STAT_LRU_MISS]++;
	vs->lru_misses++;
	if (tcp && !(pkt->tcp_flags & LBD_TCP_SYN))
		gs->counters[LBD_STAT_LRU_MISS_NON_SYN]++;
	/* A RST ends the flow: do not create an entry for it. */
	if (tcp && (pkt->tcp_flags & LBD_TCP_RST))
		return 0;

	struct flow_state ns = {};

	if (!c->now)
		c->now = lbd_now();
	ns.real = c->real_idx;
	ns.vip_num = c->vip_num;
	ns.vip_gen = c->vm->gen;
	ns.hash = c->hash;
	ns.packets = 1;
	ns.bytes = pkt->l3_len;
	ns.first_tick = c->now;
	ns.last_tick = c->now;
	if (!c->tbl || bpf_map_update_elem(c->tbl, fk, &ns, BPF_ANY))
		gs->counters[LBD_STAT_LRU_INSERT_FAIL]++;
	return 0;
}

/*
 * lbd_balance forwards a TCP/UDP packet to a VIP address. A TCP SYN always
 * takes the ring's choice (a new connection follows the current ring, as
 * in Katran); other packets stay with the connection table's real while
 * the entry exists and is valid.
 */
static __always_inline int lbd_balance(struct xdp_md *ctx, struct packet *pkt,
				       const struct lbd_config *cfg, struct global_counters *gs,
				       void *tbl)
{
	int not_vip = 0;
	struct flow_key fk = {};
	struct choice c = {};
	struct flow_state *st;
	struct vip_counters *vs;
	int syn, err;

	__builtin_memcpy(fk.src, pkt->src, 16);
	__builtin_memcpy(fk.dst, pkt->dst, 16);
	fk.sport = pkt->sport;
	fk.dport = pkt->dport;
	fk.proto = pkt->proto;
	fk.family = pkt->family;
	c.tbl = tbl;
	syn = pkt->proto == IPPROTO_TCP &&
	      (pkt->tcp_flags & (LBD_TCP_SYN | LBD_TCP_ACK)) == LBD_TCP_SYN;

	if (!syn) {
		st = lbd_table_lookup(&fk, cfg, &c);
		if (st) {
			vs = bpf_map_lookup_elem(&vip_stats, &c.vip_num);
			if (!vs)
				return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
			gs->counters[LBD_STAT_LRU_HIT]++;
			vs->lru_hits++;
			if (!c.now)
				c.now = lbd_now();
			/* Plain adds: a flow is handled by one CPU at a time (RSS). */
			st->packets++;
			st->bytes += pkt->l3_len;
			st->last_tick = c.now;
			c.hash = st->hash;
			return lbd_send(ctx, pkt, &fk, &c, vs, cfg, gs);
		}
	}

	/* Not in the table: only now does the VIP itself matter. */
	c.vm = lbd_lookup_vip(pkt->dst, pkt->family, pkt->dport, pkt->proto, NULL, &c.vip_num, &not_vip);
	if (!c.vm)
		return lbd_count(gs, not_vip ? LBD_STAT_PASS_NON_VIP : LBD_STAT_PASS_NO_VIP_PORT, XDP_PASS);
	lbd_maybe_search(ctx, &fk, cfg, gs, &c);
	vs = bpf_map_lookup_elem(&vip_stats, &c.vip_num);
	if (!vs)
		return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
	c.hash = lbd_hash(&fk, c.vm->flags);
	err = lbd_choose_new(pkt, &fk, &c, vs, gs, 1);
	if (err)
		return lbd_count(gs, err, XDP_DROP);
	return lbd_send(ctx, pkt, &fk, &c, vs, cfg, gs);
}

/*
 * lbd_too_big forwards an ICMP too-big error to the real of the flow it
 * quotes: the table's real if the flow has a valid entry, else the ring's.
 * It neither creates nor refreshes the flow's entry.
 */
static __always_inline int lbd_too_big(struct xdp_md *ctx, struct packet *pkt,
				       const struct flow_key *fk, __u32 addr_flags,
				       const struct lbd_config *cfg, struct global_counters *gs)
{
	struct choice c = {};
	struct vip_counters *vs;
	int err, act;

	c.tbl = lbd_flow_table();
	if (!lbd_table_lookup(fk, cfg, &c)) {
		int not_vip = 0;

		c.vm = lbd_lookup_vip(fk->dst, fk->family, fk->dport, fk->proto, &addr_flags, &c.vip_num,
				      &not_vip);
		if (!c.vm)
			return lbd_policy(gs, cfg, LBD_CFG_F_UNBALANCEABLE_PASS,
					  LBD_STAT_PASS_UNBALANCEABLE, LBD_STAT_DROP_UNBALANCEABLE);
		lbd_maybe_search(ctx, fk, cfg, gs, &c);
	}
	vs = bpf_map_lookup_elem(&vip_stats, &c.vip_num);
	if (!vs)
		return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
	c.hash = lbd_hash(fk, c.vm->flags);
	if (!c.real) {
		err = lbd_choose_new(pkt, fk, &c, vs, gs, 0);
		if (err)
			return lbd_count(gs, err, XDP_DROP);
	}
	act = lbd_send(ctx, pkt, fk, &c, vs, cfg, gs);
	if (act == XDP_TX)
		gs->counters[LBD_STAT_ICMP_TOO_BIG]++;
	return act;
}

/* lbd_icmp handles ICMP and ICMPv6 to a VIP address. */
static __always_inline int lbd_icmp(struct xdp_md *ctx, struct packet *pkt, __u32 addr_flags,
				    const struct lbd_config *cfg, struct global_counters *gs)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct flow_key fk = {};

	switch (lbd_icmp_classify(data, data_end, pkt, &fk)) {
	case ICMP_KIND_ECHO:
		if (lbd_icmp_echo_reply(data, data_end, pkt))
			return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L4, XDP_DROP);
		return lbd_count(gs, LBD_STAT_ICMP_ECHO_REPLY, XDP_TX);
	case ICMP_KIND_TOO_BIG:
		return lbd_too_big(ctx, pkt, &fk, addr_flags, cfg, gs);
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
	struct global_counters *gs;
	struct lbd_config *cfg;
	__u32 zero = 0, *addr_flags;
	void *tbl;
	int r;

	gs = bpf_map_lookup_elem(&stats, &zero);
	if (!gs)
		return XDP_ABORTED;

	r = lbd_parse_l2_l3(data, data_end, &pkt);
	if (r == PARSE_NON_IP)
		return lbd_count(gs, LBD_STAT_PASS_NON_IP, XDP_PASS);
	if (r == PARSE_BAD_L2)
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L2, XDP_DROP);
	if (r != PARSE_OK)
		return lbd_count(gs, LBD_STAT_DROP_MALFORMED_L3, XDP_DROP);

	if (!lbd_maybe_vip(&pkt))
		return lbd_count(gs, LBD_STAT_PASS_NON_VIP, XDP_PASS);
	/* Looked up early: its loads are done by the time the table is read. */
	tbl = lbd_flow_table();

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_ABORTED;
	if (pkt.family == LBD_FAMILY_IPV6 && lbd_skip_ipv6_ext(data, data_end, &pkt) != PARSE_OK)
		return lbd_vip_or(gs, &pkt, LBD_STAT_DROP_MALFORMED_L3, XDP_DROP);
	if (pkt.fragment || (pkt.proto != IPPROTO_TCP && pkt.proto != IPPROTO_UDP)) {
		addr_flags = lbd_vip_addr(&pkt);
		if (!addr_flags)
			return lbd_count(gs, LBD_STAT_PASS_NON_VIP, XDP_PASS);
		if (pkt.fragment)
			return lbd_policy(gs, cfg, LBD_CFG_F_FRAG_PASS, LBD_STAT_PASS_FRAGMENT,
					  LBD_STAT_DROP_FRAGMENT);
		if (pkt.proto == IPPROTO_ICMP || pkt.proto == IPPROTO_ICMPV6)
			return lbd_icmp(ctx, &pkt, *addr_flags, cfg, gs);
		return lbd_policy(gs, cfg, LBD_CFG_F_UNBALANCEABLE_PASS,
				  LBD_STAT_PASS_UNBALANCEABLE, LBD_STAT_DROP_UNBALANCEABLE);
	}
	if (lbd_parse_ports(data, data_end, &pkt) != PARSE_OK)
		return lbd_vip_or(gs, &pkt, LBD_STAT_DROP_MALFORMED_L4, XDP_DROP);
	return lbd_balance(ctx, &pkt, cfg, gs, tbl);
}

SEC("xdp")
int lbd_balancer(struct xdp_md *ctx)
{
	return lbd_process(ctx);
}

/*
 * lbd_flow_search is tail-called by the balancer for a packet whose flow
 * is not in this CPU's table (see lbd_search_other_cpus): it looks for the
 * flow in the other CPUs' tables, moves it into this CPU's if it is there
 * (the flow's packets come in here now), and then balances the packet
 * itself (it has the balancer's code too, rather than tail-calling back:
 * when the tail-call table is emptied, while no lbd runs, a packet already
 * in here must not be dropped).
 */
SEC("xdp")
int lbd_flow_search(struct xdp_md *ctx)
{
	__u32 zero = 0, cpu = bpf_get_smp_processor_id();
	struct search_scratch *s = bpf_map_lookup_elem(&search_scratch, &zero);
	struct global_counters *gs = bpf_map_lookup_elem(&stats, &zero);
	void *tbl = bpf_map_lookup_elem(&flows, &cpu);
	void *other = NULL;
	__u32 searched = 1;

	if (!s || !gs || !tbl)
		goto again;
	/*
	 * The counter stays in a register: the verifier tracks a 64-bit
	 * scalar exactly, not a 32-bit one spilled to the stack (where the
	 * map key has to be).
	 */
	for (__u64 i = 0; i < LBD_MAX_CPUS; i++) {
		__u32 key = i;
		void *t;

		if (key == cpu)
			continue;
		t = bpf_map_lookup_elem(&flows, &key);
		if (!t)
			break; /* past the last CPU */
		if (bpf_map_lookup_elem(t, &s->key)) {
			other = t;
			break;
		}
	}
	if (other) {
		struct flow_state *st = bpf_map_lookup_elem(other, &s->key);
		struct flow_state moved;

		if (st) {
			moved = *st;
			if (bpf_map_update_elem(tbl, &s->key, &moved, BPF_ANY)) {
				gs->counters[LBD_STAT_LRU_INSERT_FAIL]++;
			} else {
				bpf_map_delete_elem(other, &s->key);
				gs->counters[LBD_STAT_LRU_REMOTE_HIT]++;
				searched = 0; /* the balancer finds it here now */
			}
		}
	}
again:
	/*
	 * Only a search that found nothing leaves a mark: the balancing
	 * below then misses and takes the mark away. One that moved the
	 * flow leaves none, as the balancing finds the flow and never looks
	 * at the mark: a mark left behind would stop the next search for
	 * this flow on this CPU.
	 */
	if (s)
		s->searched = searched;
	return lbd_process(ctx);
}

/*
 * lbd_clock is run by user space (BPF_PROG_TEST_RUN) to read the
 * datapath's clock: it writes jiffies and CLOCK_MONOTONIC, both u64, at
 * the start of the frame. It is never attached.
 */
SEC("xdp")
int lbd_clock(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 *out = data;

	if ((void *)(out + 2) > data_end)
		return XDP_ABORTED;
	out[0] = bpf_jiffies64();
	out[1] = bpf_ktime_get_ns();
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
