//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lbd's TCP/UDP connection tracer: the entry points. What they do is in
 * the headers beside this file, one job each:
 *
 *   tracepoints.h        the tracepoints' context layouts (shared with
 *                        guess.bpf.c) and the TCP states
 *   tracer_maps.h        the constants the loader sets, and the maps
 *   sock_read.h          reading a socket: CO-RE or guessed offsets
 *   event.h              filling, writing and counting an event
 *   event_established.h  CONNECT and ACCEPT
 *   event_close.h        CLOSE (and a close inferred from a reused socket)
 *   event_transfer.h     bytes sent and received; UDP_SEND and UDP_RECV
 *   event_retransmit.h   retransmissions
 *   event_fd_install.h   FD_INSTALL
 *
 * Two sets of entry points share those handlers; user space attaches one
 * set (see kprobe.Mode):
 *
 *   kprobe mode      tcp_v4/v6_connect (+ret), inet_csk_accept (ret),
 *                    tcp_close, tcp_sendmsg/tcp_recvmsg (ret),
 *                    udp(v6)_sendmsg/udp(v6)_recvmsg (ret), fd_install,
 *                    and the tcp:tcp_retransmit_skb tracepoint (see
 *                    event_retransmit.h)
 *   tracepoint mode  sock:inet_sock_set_state (connect, accept, close from
 *                    the state machine), sock:sock_send_length /
 *                    sock_recv_length (bytes), tcp:tcp_retransmit_skb, and
 *                    optionally syscalls:sys_exit_accept(4) (who accepted,
 *                    at accept time: see event_established.h)
 */
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "lbd_tracer.h"
#include "vmlinux_trim.h"
#include "tracepoints.h"
#include "tracer_maps.h"
#include "sock_read.h"
#include "event.h"
#include "event_established.h"
#include "event_close.h"
#include "event_transfer.h"
#include "event_retransmit.h"
#include "event_fd_install.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keep the enums in BTF so that bpf2go mirrors them into Go. */
const enum lbd_trace_event_type *unused_event_type __attribute__((unused));
const enum lbd_trace_counter *unused_trace_counter __attribute__((unused));
const struct trace_event *unused_trace_event __attribute__((unused));

#define MSG_PEEK 2

/* ---- tracepoint mode ---- */

SEC("tracepoint/sock/inet_sock_set_state")
int tp_inet_sock_set_state(struct tp_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	__u64 key = (__u64)sk;

	if (ctx->protocol != LBD_PROTO_TCP)
		return 0;
	if (ctx->oldstate == TCP_CLOSE && ctx->newstate == TCP_SYN_SENT) {
		/* connect(): the process is current, the source port not yet chosen */
		struct sock_ref ref = {};

		new_socket(ctx, sk);

		ref.key.pid = bpf_get_current_pid_tgid() >> 32;
		ref.flags = REF_PENDING_CONNECT;
		bpf_get_current_comm(ref.comm, sizeof(ref.comm));
		if (bpf_map_update_elem(&socks, &key, &ref, BPF_ANY))
			count(LBD_TC_SOCKS_FULL);
	} else if (ctx->oldstate == TCP_SYN_SENT && ctx->newstate == TCP_ESTABLISHED) {
		struct sock_ref *ref = bpf_map_lookup_elem(&socks, &key);
		__u8 comm[16];

		if (!ref || !(ref->flags & REF_PENDING_CONNECT))
			return 0;
		__builtin_memcpy(comm, ref->comm, sizeof(comm));
		established(ctx, sk, LBD_EV_CONNECT, ref->key.pid, comm);
	} else if (ctx->oldstate == TCP_SYN_RECV && ctx->newstate == TCP_ESTABLISHED) {
		/* passive open, in softirq: the owner is known at accept() */
		struct sock_ref ref = {};

		new_socket(ctx, sk);

		ref.flags = REF_PENDING_ACCEPT;
		if (bpf_map_update_elem(&socks, &key, &ref, BPF_ANY))
			count(LBD_TC_SOCKS_FULL);
	} else if (ctx->newstate == TCP_CLOSE) {
		closed(ctx, sk);
	} else if ((ctx->oldstate == TCP_ESTABLISHED && ctx->newstate == TCP_FIN_WAIT1) ||
		   (ctx->oldstate == TCP_CLOSE_WAIT && ctx->newstate == TCP_LAST_ACK)) {
		/* close() or shutdown() by the owner, in its context: an
		 * accepted socket nobody read or wrote is announced now */
		struct sock_ref *ref = bpf_map_lookup_elem(&socks, &key);

		if (ref && (ref->flags & REF_PENDING_ACCEPT))
			established_current(ctx, sk, LBD_EV_ACCEPT);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tp_sys_exit_accept4(struct tp_sys_exit *ctx)
{
	return accepted_fd(ctx, ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tp_sys_exit_accept(struct tp_sys_exit *ctx)
{
	return accepted_fd(ctx, ctx->ret);
}

static __always_inline int sock_length(void *ctx, struct tp_sock_length *tp, int sent)
{
	if (tp->ret <= 0 || (tp->family != AF_INET && tp->family != AF_INET6))
		return 0;
	if (tp->protocol != LBD_PROTO_TCP && tp->protocol != LBD_PROTO_UDP)
		return 0;
	if (!sent && (tp->flags & MSG_PEEK))
		return 0;
	transferred(ctx, (struct sock *)tp->sk, 0, tp->protocol, sent, tp->ret);
	return 0;
}

SEC("tracepoint/sock/sock_send_length")
int tp_sock_send_length(struct tp_sock_length *ctx)
{
	return sock_length(ctx, ctx, 1);
}

SEC("tracepoint/sock/sock_recv_length")
int tp_sock_recv_length(struct tp_sock_length *ctx)
{
	return sock_length(ctx, ctx, 0);
}

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tp_tcp_retransmit_skb(struct tp_tcp_retransmit_skb *ctx)
{
	retransmitted((struct sock *)ctx->skaddr);
	return 0;
}

/* ---- kprobe mode ---- */

static __always_inline void stash(void *map, struct sock *sk)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 v = (__u64)sk;

	/* NOEXIST: a nested call (udpv6_sendmsg -> udp_sendmsg) keeps the outer one */
	bpf_map_update_elem(map, &id, &v, BPF_NOEXIST);
}

static __always_inline struct sock *unstash(void *map)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *v = bpf_map_lookup_elem(map, &id);
	struct sock *sk;

	if (!v)
		return 0;
	sk = (struct sock *)*v;
	bpf_map_delete_elem(map, &id);
	return sk;
}

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(kp_tcp_v4_connect, struct sock *sk)
{
	stash(&args_connect, sk);
	return 0;
}

SEC("kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(krp_tcp_v4_connect, int ret)
{
	struct sock *sk = unstash(&args_connect);

	if (sk && ret == 0) {
		new_socket(ctx, sk);
		established_current(ctx, sk, LBD_EV_CONNECT);
	}
	return 0;
}

SEC("kprobe/tcp_v6_connect")
int BPF_KPROBE(kp_tcp_v6_connect, struct sock *sk)
{
	stash(&args_connect, sk);
	return 0;
}

SEC("kretprobe/tcp_v6_connect")
int BPF_KRETPROBE(krp_tcp_v6_connect, int ret)
{
	struct sock *sk = unstash(&args_connect);

	if (sk && ret == 0) {
		new_socket(ctx, sk);
		established_current(ctx, sk, LBD_EV_CONNECT);
	}
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(krp_inet_csk_accept, struct sock *sk)
{
	if (sk) {
		new_socket(ctx, sk);
		established_current(ctx, sk, LBD_EV_ACCEPT);
	}
	return 0;
}

SEC("kprobe/tcp_close")
int BPF_KPROBE(kp_tcp_close, struct sock *sk)
{
	closed(ctx, sk);
	return 0;
}

static __always_inline void stash_msg(void *map, struct sock *sk, void *msg)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct msg_args a = {.sk = (__u64)sk, .msg = (__u64)msg};

	bpf_map_update_elem(map, &id, &a, BPF_NOEXIST); /* nested: keep the outer call */
}

static __always_inline int unstash_msg(void *map, struct msg_args *out)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct msg_args *a = bpf_map_lookup_elem(map, &id);

	if (!a)
		return 0;
	*out = *a;
	bpf_map_delete_elem(map, &id);
	return out->sk != 0;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kp_sendmsg, struct sock *sk, void *msg)
{
	stash_msg(&args_send, sk, msg);
	return 0;
}

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(kp_recvmsg, struct sock *sk, void *msg)
{
	stash_msg(&args_recv, sk, msg);
	return 0;
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(krp_tcp_sendmsg, int ret)
{
	struct msg_args a = {};

	if (unstash_msg(&args_send, &a) && ret > 0)
		transferred(ctx, (struct sock *)a.sk, 0, LBD_PROTO_TCP, 1, ret);
	return 0;
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(krp_tcp_recvmsg, int ret)
{
	struct msg_args a = {};

	if (unstash_msg(&args_recv, &a) && ret > 0)
		transferred(ctx, (struct sock *)a.sk, 0, LBD_PROTO_TCP, 0, ret);
	return 0;
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(krp_udp_sendmsg, int ret)
{
	struct msg_args a = {};

	if (unstash_msg(&args_send, &a) && ret > 0)
		transferred(ctx, (struct sock *)a.sk, (void *)a.msg, LBD_PROTO_UDP, 1, ret);
	return 0;
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(krp_udp_recvmsg, int ret)
{
	struct msg_args a = {};

	if (unstash_msg(&args_recv, &a) && ret > 0)
		transferred(ctx, (struct sock *)a.sk, (void *)a.msg, LBD_PROTO_UDP, 0, ret);
	return 0;
}

SEC("kprobe/fd_install")
int BPF_KPROBE(kp_fd_install, unsigned int fd)
{
	fd_installed(ctx, fd);
	return 0;
}
