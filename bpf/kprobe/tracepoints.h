/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The tracepoints the tracer (tracer.bpf.c) and the offset guesser
 * (guess.bpf.c) attach to: their context layouts, as
 * /sys/kernel/tracing/events/<group>/<name>/format gives them (a stable
 * ABI), and the TCP states sock:inet_sock_set_state reports.
 */
#ifndef LBD_TRACEPOINTS_H
#define LBD_TRACEPOINTS_H

#include <linux/types.h>

/* TCP states (include/net/tcp_states.h), as oldstate/newstate carry them. */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9

/* sock:inet_sock_set_state */
struct tp_inet_sock_set_state {
	__u64 common;
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 sport;
	__u16 dport;
	__u16 family;
	__u16 protocol;
};

/* sock:sock_send_length and sock:sock_recv_length */
struct tp_sock_length {
	__u64 common;
	void *sk;
	__u16 family;
	__u16 protocol;
	int ret;
	int flags;
};

/* tcp:tcp_retransmit_skb */
struct tp_tcp_retransmit_skb {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
};

/* syscalls:sys_exit_* */
struct tp_sys_exit {
	__u64 common;
	int nr;
	int pad;
	long ret;
};

#endif /* LBD_TRACEPOINTS_H */
