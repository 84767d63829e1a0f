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
#include <linux/errno.h>
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
	int stale;  /* the table has an entry for the flow that may not be used */
};

/*
 * lbd_table_lookup returns the connection table entry of fk if it can
 * still be used: its VIP is the one that made it (same generation) and
 * still uses the table, its real is still defined, and (UDP) it is not
 * idle past the timeout. This is the whole lookup of an established flow:
 * one hash lookup, then array lookups. The table is shared by all CPUs:
 * whichever CPU a packet comes in on, it finds the flow's one entry. An
 * entry that exists but may not be used sets c->stale (a new one is to
 * replace it).
 */
static __always_inline struct flow_state *lbd_table_lookup(const struct flow_key *fk,
							   const struct lbd_config *cfg,
							   struct choice *c)
{
	struct flow_state *st;

	st = bpf_map_lookup_elem(&conns, fk);
	if (!st)
		return NULL;
	c->stale = 1; /* until it proves usable */
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
	c->stale = 0;
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
 * lbd_adopt makes a flow whose entry another CPU created a moment ago (its
 * first packets came in on two CPUs at once) go to that entry's real, as
 * that CPU's packets do: the ring may have changed in between.
 */
static __always_inline void lbd_adopt(struct packet *pkt, const struct flow_key *fk,
				      struct choice *c)
{
	struct flow_state *st = bpf_map_lookup_elem(&conns, fk);
	struct real_def *real;

	if (!st || st->vip_num != c->vip_num || st->vip_gen != c->vm->gen)
		return;
	real = lbd_real(st->real);
	if (!real)
		return;
	c->real_idx = st->real;
	c->real = real;
	c->hash = st->hash;
	st->packets++;
	st->bytes += pkt->l3_len;
}

/*
 * lbd_choose_new picks a real from the ring for a flow the table does not
 * (or may not) answer for, and records it in the table unless told not to.
 *
 * record is one of:
 * - LBD_RECORD_NO: never (an ICMP error quoting a flow);
 * - LBD_RECORD_CREATE: create the entry if there is none (a TCP packet
 *   that is not a SYN, a UDP datagram), so that two CPUs that miss the
 *   same new flow at once agree on the real: the first entry wins and the
 *   other adopts it (lbd_adopt);
 * - LBD_RECORD_REPLACE: replace the entry (a flow whose entry may not be
 *   used; a SYN on a 5-tuple that still has an entry: a new connection on
 *   a reused 5-tuple follows the current ring, as in Katran);
 * - LBD_RECORD_SYN: a SYN: create nothing, but if its 5-tuple has an
 *   entry, replace it (as LBD_RECORD_REPLACE).
 */
enum lbd_record {
	LBD_RECORD_NO = 0,
	LBD_RECORD_CREATE,
	LBD_RECORD_REPLACE,
	LBD_RECORD_SYN,
};

/*
 * lbd_new_flow_allowed says whether this CPU may record one more new flow
 * under the rate cap (the caller checked LBD_CFG_F_NEW_FLOW_RATE), and
 * counts it if so. The window is one second of jiffies; the count is per
 * CPU, so no lock (a packet runs on one CPU). Not inlined: the code of
 * the paths that never get here (SYN, established) stays as it was.
 */
static __noinline int lbd_new_flow_allowed(const struct lbd_config *cfg, struct choice *c)
{
	__u32 zero = 0;
	struct new_flow_window *w;

	w = bpf_map_lookup_elem(&new_flows, &zero);
	if (!w)
		return 1;
	if (!c->now)
		c->now = lbd_now();
	if ((__u32)(c->now - w->start) >= cfg->hz) {
		w->start = c->now;
		w->count = 0;
	}
	if (w->count >= cfg->new_flow_rate)
		return 0;
	w->count++;
	return 1;
}

static __always_inline int lbd_choose_new(struct packet *pkt, const struct flow_key *fk,
					  struct choice *c, struct vip_counters *vs,
					  const struct lbd_config *cfg, struct global_counters *gs,
					  enum lbd_record record)
{
	__u32 vflags = c->vm->flags;
	int tcp = fk->proto == IPPROTO_TCP;
	long err;

	c->real_idx = lbd_ring_pick(c->vip_num, c->vm->ring_size, c->hash);
	/*
	 * A SYN looks for its 5-tuple's entry here, between reading the ring
	 * slot and using it: both are reads of memory no earlier packet of
	 * the flow warmed (a random slot, a random hash bucket), and this
	 * order lets the CPU wait for the two at once.
	 */
	if (record == LBD_RECORD_SYN && !(vflags & LBD_VIP_F_NO_LRU) && bpf_map_lookup_elem(&conns, fk))
		record = LBD_RECORD_REPLACE;
	c->real = lbd_real(c->real_idx);
	if (!c->real)
		return LBD_STAT_DROP_NO_REAL;
	if (record == LBD_RECORD_NO || (vflags & LBD_VIP_F_NO_LRU))
		return 0;
	gs->counters[LBD_STAT_LRU_MISS]++;
	vs->lru_misses++;
	if (tcp && !(pkt->tcp_flags & LBD_TCP_SYN))
		gs->counters[LBD_STAT_LRU_MISS_NON_SYN]++;
	/*
	 * A SYN that found no entry creates none (see lbd_balance: the
	 * connection is recorded by its first packet after the SYN). A RST
	 * ends the flow: do not create an entry for it either.
	 */
	if (record == LBD_RECORD_SYN || (tcp && (pkt->tcp_flags & LBD_TCP_RST)))
		return 0;
	/*
	 * The rate cap applies to new entries only: replacing a 5-tuple's
	 * entry evicts nothing another flow needs.
	 */
	if (record == LBD_RECORD_CREATE && !c->stale && (cfg->flags & LBD_CFG_F_NEW_FLOW_RATE) &&
	    !lbd_new_flow_allowed(cfg, c)) {
		gs->counters[LBD_STAT_LRU_INSERT_CAPPED]++;
		return 0;
	}

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
	err = bpf_map_update_elem(&conns, fk, &ns,
				  c->stale || record == LBD_RECORD_REPLACE ? BPF_ANY : BPF_NOEXIST);
	if (err == -EEXIST)
		lbd_adopt(pkt, fk, c);
	else if (err)
		gs->counters[LBD_STAT_LRU_INSERT_FAIL]++;
	return 0;
}

/*
 * lbd_balance forwards a TCP/UDP packet to a VIP address. A TCP SYN always
 * takes the ring's choice (a new connection follows the current ring, as
 * in Katran); other packets stay with the connection table's real while
 * the entry exists and is valid.
 *
 * Insert on the second packet: a SYN whose 5-tuple has no entry is sent by
 * the ring and NOT recorded; the connection's first packet after it (the
 * handshake's ACK, or data) misses the table and creates the entry, with
 * the ring's choice again: the same real, unless the ring changed within
 * the handshake (then the ACK goes to the new ring's real, which answers
 * with a RST: the handshake is lost, as one whose SYN came a moment later
 * would have been placed by the new ring; docs/benchmarks.md counts it).
 * What it buys:
 * - a SYN costs a table lookup, not an LRU insert (about 500 ns of a
 *   new flow's 900 ns was the kernel's insert);
 * - a flood of spoofed SYNs (no handshake ever completes) never touches
 *   the table: it cannot evict the entries of live connections, which
 *   then keep their real across ring changes.
 * A SYN whose 5-tuple still has an entry (a new connection on a reused
 * 5-tuple) replaces it with the ring's choice, as before. Packets after
 * the SYN that race on two CPUs keep the old rule: the first entry wins
 * (BPF_NOEXIST), the other CPU adopts it (lbd_adopt).
 */
static __always_inline int lbd_balance(struct xdp_md *ctx, struct packet *pkt,
				       const struct lbd_config *cfg, struct global_counters *gs)
{
	int not_vip = 0;
	struct flow_key fk = {};
	struct choice c = {};
	struct flow_state *st;
	struct vip_counters *vs;
	enum lbd_record record = LBD_RECORD_CREATE;
	int syn, err;

	__builtin_memcpy(fk.src, pkt->src, 16);
	__builtin_memcpy(fk.dst, pkt->dst, 16);
	fk.sport = pkt->sport;
	fk.dport = pkt->dport;
	fk.proto = pkt->proto;
	fk.family = pkt->family;
	syn = pkt->proto == IPPROTO_TCP &&
	      (pkt->tcp_flags & (LBD_TCP_SYN | LBD_TCP_ACK)) == LBD_TCP_SYN;

	if (syn) {
		record = LBD_RECORD_SYN; /* lbd_choose_new looks for a reused 5-tuple's entry */
	} else {
		st = lbd_table_lookup(&fk, cfg, &c);
		if (st) {
			vs = bpf_map_lookup_elem(&vip_stats, &c.vip_num);
			if (!vs)
				return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
			gs->counters[LBD_STAT_LRU_HIT]++;
			vs->lru_hits++;
			if (!c.now)
				c.now = lbd_now();
			/*
			 * Plain adds: a flow is handled by one CPU at a time
			 * (RSS); one whose packets come in on two CPUs at the
			 * same moment may lose a count, never its real.
			 */
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
	vs = bpf_map_lookup_elem(&vip_stats, &c.vip_num);
	if (!vs)
		return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
	c.hash = lbd_hash(&fk, c.vm->flags);
	err = lbd_choose_new(pkt, &fk, &c, vs, cfg, gs, record);
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

	if (!lbd_table_lookup(fk, cfg, &c)) {
		int not_vip = 0;

		c.vm = lbd_lookup_vip(fk->dst, fk->family, fk->dport, fk->proto, &addr_flags, &c.vip_num,
				      &not_vip);
		if (!c.vm)
			return lbd_policy(gs, cfg, LBD_CFG_F_UNBALANCEABLE_PASS,
					  LBD_STAT_PASS_UNBALANCEABLE, LBD_STAT_DROP_UNBALANCEABLE);
	}
	vs = bpf_map_lookup_elem(&vip_stats, &c.vip_num);
	if (!vs)
		return lbd_count(gs, LBD_STAT_DROP_NO_REAL, XDP_DROP);
	c.hash = lbd_hash(fk, c.vm->flags);
	if (!c.real) {
		err = lbd_choose_new(pkt, fk, &c, vs, cfg, gs, LBD_RECORD_NO);
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
	return lbd_balance(ctx, &pkt, cfg, gs);
}

SEC("xdp")
int lbd_balancer(struct xdp_md *ctx)
{
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
