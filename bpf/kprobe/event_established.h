/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * CONNECT and ACCEPT events (tracer.bpf.c): a TCP connection is
 * established and has its owner. The connection enters socks and conns.
 *
 * Who accepted a connection, in tracepoint mode: the passive open
 * completes in softirq context, where the current task is anyone. The
 * socket is only reachable through the accept queue until a process
 * accepts it, so the first process-context touch names the owner: its
 * first read or write (sock_*_length, event_transfer.h), or its close
 * (ESTABLISHED -> FIN_WAIT1, CLOSE_WAIT -> LAST_ACK happen in
 * close()/shutdown()). With the accept syscall tracepoints attached the
 * owner is known at accept() itself (accepted_fd), but every syscall on
 * the machine then takes the kernel's slow path
 * (kprobe.Options.AcceptSyscalls).
 */
#ifndef LBD_EVENT_ESTABLISHED_H
#define LBD_EVENT_ESTABLISHED_H

#include "event.h"
#include "sock_read.h"

/* established announces a connection owned by pid/comm: it enters socks
 * and conn_stats, and a CONNECT or ACCEPT event goes out. */
static __always_inline void established(void *ctx, struct sock *sk, __u32 type, __u32 pid, __u8 *comm)
{
	__u64 key = (__u64)sk;
	struct sock_ref ref = {};
	struct conn_stats st = {};
	struct trace_event ev = {};

	if (!read_tuple(sk, &ref.key))
		return;
	ref.key.pid = pid;
	ref.key.proto = LBD_PROTO_TCP;
	ref.flags = REF_ANNOUNCED;
	__builtin_memcpy(ref.comm, comm, sizeof(ref.comm));
	if (bpf_map_update_elem(&socks, &key, &ref, BPF_ANY))
		count(LBD_TC_SOCKS_FULL);

	st.first_ns = st.last_ns = bpf_ktime_get_ns();
	st.direction = type == LBD_EV_CONNECT ? 1 : 2;
	st.srtt_us = sk_srtt_us(sk);
	__builtin_memcpy(st.comm, comm, sizeof(st.comm));
	if (bpf_map_update_elem(&conns, &ref.key, &st, BPF_ANY))
		count(LBD_TC_STATS_FULL);

	fill_event(&ev, type, &ref.key, &st);
	__builtin_memcpy(ev.comm, comm, sizeof(ev.comm));
	emit(ctx, &ev);
}

/* established_current: the owner is the current process. */
static __always_inline void established_current(void *ctx, struct sock *sk, __u32 type)
{
	__u8 comm[16] = {};

	bpf_get_current_comm(comm, sizeof(comm));
	established(ctx, sk, type, bpf_get_current_pid_tgid() >> 32, comm);
}

/* accepted_fd: accept() returned fd; if its socket waits for an owner,
 * the current process is it (the syscalls:sys_exit_accept* tracepoints). */
static __always_inline int accepted_fd(void *ctx, long fd)
{
	struct sock *sk;
	struct sock_ref *ref;
	__u64 key;

	if (!have_btf || fd < 0)
		return 0;
	sk = sock_from_fd(fd);
	if (!sk)
		return 0;
	key = (__u64)sk;
	ref = bpf_map_lookup_elem(&socks, &key);
	if (!ref || !(ref->flags & REF_PENDING_ACCEPT))
		return 0;
	established_current(ctx, sk, LBD_EV_ACCEPT);
	return 0;
}

#endif /* LBD_EVENT_ESTABLISHED_H */
