/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Retransmissions (tracer.bpf.c): counted in the connection's conns
 * entry, from the tcp:tcp_retransmit_skb tracepoint in both modes (it
 * fires for successful retransmissions only, in any context; a kretprobe
 * pair keyed by task cannot tell apart retransmissions from timers on
 * several idle CPUs). No event of its own: CLOSE carries the count.
 */
#ifndef LBD_EVENT_RETRANSMIT_H
#define LBD_EVENT_RETRANSMIT_H

#include "tracer_maps.h"
#include "vmlinux_trim.h"

static __always_inline void retransmitted(struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_ref *ref = bpf_map_lookup_elem(&socks, &key);
	struct conn_stats *st;

	if (!ref)
		return;
	st = bpf_map_lookup_elem(&conns, &ref->key);
	if (st) {
		__sync_fetch_and_add(&st->retrans, 1);
		st->last_ns = bpf_ktime_get_ns();
	}
}

#endif /* LBD_EVENT_RETRANSMIT_H */
