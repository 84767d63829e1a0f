/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures shared between the connection tracer (bpf/kprobe) and Go.
 *
 * bpf2go mirrors each struct into Go (-type), so the layout is the
 * contract: no implicit padding, explicit padding named. Addresses are four
 * 32-bit words in network byte order (IPv4 in word 0); ports are in host
 * byte order.
 */
#ifndef LBD_TRACER_H
#define LBD_TRACER_H

#include <linux/types.h>

/* What an event reports (trace_event.type, and the index of lost counts). */
enum lbd_trace_event_type {
	LBD_EV_NONE = 0,
	LBD_EV_CONNECT = 1,    /* TCP active open established */
	LBD_EV_ACCEPT = 2,     /* TCP passive open handed to a process */
	LBD_EV_CLOSE = 3,      /* TCP connection closed, with its final numbers */
	LBD_EV_UDP_SEND = 4,   /* first datagram of a new UDP flow, sent */
	LBD_EV_UDP_RECV = 5,   /* first datagram of a new UDP flow, received */
	LBD_EV_FD_INSTALL = 6, /* a watched process installed a file descriptor */
	LBD_EV_MAX = 7,
};

/* Slots of the per-CPU trace_counters array. */
enum lbd_trace_counter {
	/* 0 .. LBD_EV_MAX-1: events that could not be output (buffer full), by type */
	LBD_TC_EMITTED = 8,     /* 8 .. 8+LBD_EV_MAX-1: events output, by type */
	LBD_TC_STATS_FULL = 16, /* a connection found conn_stats full */
	LBD_TC_SOCKS_FULL = 17, /* a socket found the socks map full */
	/* a connection closed when its socket's address came back as a new
	 * socket (the close itself never reached the tracer) */
	LBD_TC_CLOSE_INFERRED = 18,
	LBD_TC_MAX = 24,
};

enum lbd_trace_proto {
	LBD_PROTO_TCP = 6,
	LBD_PROTO_UDP = 17,
};

/* A connection as user space names it: tuple + owning process. The key of
 * conn_stats. family is 4 or 6 (0 never appears in a key). */
struct conn_tuple {
	__u32 saddr[4];
	__u32 daddr[4];
	__u16 sport;
	__u16 dport;
	__u32 netns; /* network namespace inode */
	__u32 pid;   /* process (thread group) id */
	__u8 family;
	__u8 proto;
	__u16 pad;
};

/* Counters of one connection (value of conn_stats). */
struct conn_stats {
	__u64 bytes_sent;
	__u64 bytes_recv;
	__u64 first_ns; /* bpf_ktime_get_ns() when first seen */
	__u64 last_ns;  /* ... and when last active: for idle expiry */
	__u32 retrans;
	__u32 srtt_us; /* smoothed RTT, 0 when unknown (guessed offsets) */
	__u8 comm[16];
	__u8 direction; /* 1 outgoing (connect), 2 incoming (accept), 0 unknown */
	__u8 pad[7];
};

/* One event, as read from the ring or perf buffer. For CLOSE the counters
 * are the connection's final numbers; for UDP events the first datagram's. */
struct trace_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() */
	struct conn_tuple tuple;
	__u64 bytes_sent;
	__u64 bytes_recv;
	__u32 retrans;
	__u32 srtt_us;
	__u32 type; /* enum lbd_trace_event_type */
	__u32 cpu;
	__u32 fd;  /* FD_INSTALL only */
	__u32 tid; /* thread that was running when the event was taken */
	__u8 comm[16];
};

/* Field offsets used when the tracer runs on guessed offsets instead of
 * CO-RE. All offsets are from the start of struct sock except ino, which
 * is from the start of struct net. */
struct lbd_offsets {
	__u16 saddr;      /* sock_common.skc_rcv_saddr */
	__u16 daddr;      /* sock_common.skc_daddr */
	__u16 sport;      /* sock_common.skc_num (host order) */
	__u16 dport;      /* sock_common.skc_dport (network order) */
	__u16 family;     /* sock_common.skc_family */
	__u16 netns;      /* sock_common.skc_net (pointer to struct net) */
	__u16 ino;        /* net.ns.inum */
	__u16 daddr_ipv6; /* sock_common.skc_v6_daddr */
	__u16 saddr_ipv6; /* sock_common.skc_v6_rcv_saddr */
	__u16 pad[3];
};

/* What the guessing hook copies for user space. */
enum lbd_guess_what {
	LBD_GUESS_SOCK = 1,  /* copy the first LBD_GUESS_SNAP bytes of the socket */
	LBD_GUESS_NETNS = 2, /* follow the pointer at offset netns, copy the struct net */
};

enum lbd_guess_state {
	LBD_GUESS_IDLE = 0,
	LBD_GUESS_ARMED = 1,   /* user space waits for the next connect of pid_tgid */
	LBD_GUESS_CAPTURED = 2 /* data holds the snapshot */
};

#define LBD_GUESS_SNAP 1024

/* The guess status map's only value: user space arms it, the hook fills it. */
struct guess_status {
	__u64 pid_tgid; /* only this thread's connects are captured */
	__u32 state;    /* enum lbd_guess_state */
	__u32 what;     /* enum lbd_guess_what */
	__u32 offset_netns;
	__s32 err; /* bpf_probe_read_kernel's result */
	__u64 sk;  /* the socket captured (for user-space sanity checks) */
	__u8 data[LBD_GUESS_SNAP];
};

#endif
