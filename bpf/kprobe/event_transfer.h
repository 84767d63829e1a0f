/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Bytes sent and received (tracer.bpf.c): a connection's counters in
 * conns grow; the first datagram of a new UDP flow is a UDP_SEND or
 * UDP_RECV event.
 */
#ifndef LBD_EVENT_TRANSFER_H
#define LBD_EVENT_TRANSFER_H

#include "event.h"
#include "event_established.h"
#include "sock_read.h"

/* transferred adds bytes sent or received by the current process. */
static __always_inline void transferred(void *ctx, struct sock *sk, void *msg, __u8 proto, int sent, __u64 bytes)
{
	__u64 now = bpf_ktime_get_ns();
	struct conn_tuple t = {};
	struct conn_stats *st;

	if (proto == LBD_PROTO_TCP) {
		__u64 key = (__u64)sk;
		struct sock_ref *ref = bpf_map_lookup_elem(&socks, &key);

		if (ref && (ref->flags & REF_PENDING_ACCEPT)) {
			/* tracepoint mode without BTF: the first process to
			 * read or write an accepted socket is its owner */
			established_current(ctx, sk, LBD_EV_ACCEPT);
			ref = bpf_map_lookup_elem(&socks, &key);
		}
		if (ref && (ref->flags & REF_ANNOUNCED)) {
			t = ref->key;
		} else {
			/* a connection older than the tracer: counted, not announced */
			struct sock_ref nref = {};

			if (!read_tuple(sk, &nref.key))
				return;
			nref.key.pid = bpf_get_current_pid_tgid() >> 32;
			nref.key.proto = LBD_PROTO_TCP;
			nref.flags = REF_ANNOUNCED;
			bpf_get_current_comm(nref.comm, sizeof(nref.comm));
			if (bpf_map_update_elem(&socks, &key, &nref, BPF_ANY))
				count(LBD_TC_SOCKS_FULL);
			t = nref.key;
		}
	} else {
		if (!read_tuple(sk, &t))
			return;
		peer_from_msg(&t, msg);
		t.pid = bpf_get_current_pid_tgid() >> 32;
		t.proto = LBD_PROTO_UDP;
	}

	st = bpf_map_lookup_elem(&conns, &t);
	if (!st) {
		struct conn_stats nst = {};

		nst.first_ns = now;
		bpf_get_current_comm(nst.comm, sizeof(nst.comm));
		if (bpf_map_update_elem(&conns, &t, &nst, BPF_NOEXIST) == 0 && proto == LBD_PROTO_UDP) {
			struct trace_event ev = {};

			fill_event(&ev, sent ? LBD_EV_UDP_SEND : LBD_EV_UDP_RECV, &t, 0);
			if (sent)
				ev.bytes_sent = bytes;
			else
				ev.bytes_recv = bytes;
			__builtin_memcpy(ev.comm, nst.comm, sizeof(ev.comm));
			emit(ctx, &ev);
		}
		st = bpf_map_lookup_elem(&conns, &t);
		if (!st) {
			count(LBD_TC_STATS_FULL);
			return;
		}
	}
	if (sent)
		__sync_fetch_and_add(&st->bytes_sent, bytes);
	else
		__sync_fetch_and_add(&st->bytes_recv, bytes);
	st->last_ns = now;
	if (proto == LBD_PROTO_TCP) {
		__u32 srtt = sk_srtt_us(sk);

		if (srtt)
			st->srtt_us = srtt;
	}
}

#endif /* LBD_EVENT_TRANSFER_H */
