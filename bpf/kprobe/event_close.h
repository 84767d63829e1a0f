/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * CLOSE events (tracer.bpf.c): a TCP connection ends, with its final
 * numbers, and leaves socks and conns. Also a close the tracer never saw,
 * inferred when the socket's address comes back as a new socket.
 */
#ifndef LBD_EVENT_CLOSE_H
#define LBD_EVENT_CLOSE_H

#include "event.h"
#include "sock_read.h"

/* closed_sk flushes a TCP connection: CLOSE with the final numbers, then
 * the socket leaves both maps. stale: the socket is gone already (its
 * address came back as a new socket), do not read it. */
static __always_inline void closed_sk(void *ctx, struct sock *sk, int stale)
{
	__u64 key = (__u64)sk;
	struct sock_ref *ref = bpf_map_lookup_elem(&socks, &key);
	struct trace_event ev = {};

	if (!ref)
		return;
	if (ref->flags & REF_ANNOUNCED) {
		struct conn_stats *st = bpf_map_lookup_elem(&conns, &ref->key);

		if (st && !stale) {
			__u32 srtt = sk_srtt_us(sk);

			if (srtt)
				st->srtt_us = srtt;
		}
		fill_event(&ev, LBD_EV_CLOSE, &ref->key, st);
		__builtin_memcpy(ev.comm, ref->comm, sizeof(ev.comm));
		emit(ctx, &ev);
		bpf_map_delete_elem(&conns, &ref->key);
	}
	bpf_map_delete_elem(&socks, &key);
}

static __always_inline void closed(void *ctx, struct sock *sk)
{
	closed_sk(ctx, sk, 0);
}

/* new_socket: sk starts a new life (connect, passive open). If socks
 * still holds an announced connection for this address, the socket that
 * had it was freed without its close reaching the tracer (the kernel
 * skipped the program for that state change, and did not always count
 * it: seen on 6.18 in tracepoint mode, a FIN_WAIT2 -> CLOSE in softirq
 * on top of an unrelated task): its memory is a new socket now, so the
 * old connection is closed here, with the numbers it had. */
static __always_inline void new_socket(void *ctx, struct sock *sk)
{
	__u64 key = (__u64)sk;
	struct sock_ref *ref = bpf_map_lookup_elem(&socks, &key);

	if (ref && (ref->flags & REF_ANNOUNCED)) {
		count(LBD_TC_CLOSE_INFERRED);
		closed_sk(ctx, sk, 1);
	}
}

#endif /* LBD_EVENT_CLOSE_H */
