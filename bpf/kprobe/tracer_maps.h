/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The tracer's state (tracer.bpf.c): the constants the loader sets and
 * the maps.
 *
 * socks maps a socket to its connection (tuple + pid) so that events
 * taken in softirq context (state changes, retransmits) find the process
 * that owns the socket; conns holds the counters per connection. Both are
 * plain hashes (not LRU): nothing is evicted behind the user's back.
 * Closed TCP connections leave both maps with a CLOSE event carrying the
 * final numbers; idle entries (UDP, or TCP whose close was missed) are
 * expired by user space. Every event that cannot be output, and every
 * insert into a full map, is counted in trace_counters.
 */
#ifndef LBD_TRACER_MAPS_H
#define LBD_TRACER_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lbd_tracer.h"

/* Set by the loader (kprobe.New). */
volatile const __u8 use_offsets = 0; /* read sockets at off.* instead of CO-RE */
volatile const __u8 have_btf = 1;    /* CO-RE reads of non-socket types allowed */
volatile const __u8 use_perf = 0;    /* perf buffer instead of ring buffer */
/* Ring buffer: 0 wakes the reader for every event; else events are
 * written without a wakeup until this many bytes wait, and the reader
 * polls on a short timer (batching saves a wakeup per event). */
volatile const __u64 wakeup_bytes = 0;
volatile const struct lbd_offsets off = {};

enum sock_ref_flag {
	REF_PENDING_CONNECT = 1, /* SYN sent, tuple not complete yet */
	REF_PENDING_ACCEPT = 2,  /* established, no process has accepted it yet */
	REF_ANNOUNCED = 4,       /* CONNECT/ACCEPT emitted, conn_stats has the entry */
};

/* Value of socks: which connection a socket belongs to. */
struct sock_ref {
	struct conn_tuple key;
	__u8 comm[16];
	__u8 flags;
	__u8 pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64); /* struct sock * */
	__type(value, struct sock_ref);
	__uint(max_entries, 65536);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct conn_tuple);
	__type(value, struct conn_stats);
	__uint(max_entries, 65536);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events_rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} events_pb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LBD_TC_MAX);
} trace_counters SEC(".maps");

/* Processes whose fd_install calls are reported (kprobe mode). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u8);
	__uint(max_entries, 1024);
} fdinstall_pids SEC(".maps");

/* Arguments stashed by an entry probe for its return probe, per thread. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, __u64);
	__uint(max_entries, 16384);
} args_connect SEC(".maps");

/* sendmsg/recvmsg arguments: the socket and the message (whose msg_name
 * names the peer of an unconnected UDP socket). */
struct msg_args {
	__u64 sk;
	__u64 msg;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u64);
	__type(value, struct msg_args);
	__uint(max_entries, 16384);
} args_send SEC(".maps"), args_recv SEC(".maps");

#endif /* LBD_TRACER_MAPS_H */
