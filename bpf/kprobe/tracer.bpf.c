//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * lbd's TCP/UDP connection tracer.
 *
 * Two sets of entry points share one body of handlers; user space attaches
 * one set (see kprobe.Mode):
 *
 *   kprobe mode      tcp_v4/v6_connect (+ret), inet_csk_accept (ret),
 *                    tcp_close, tcp_sendmsg/tcp_recvmsg (ret),
 *                    udp(v6)_sendmsg/udp(v6)_recvmsg (ret), fd_install,
 *                    and the tcp:tcp_retransmit_skb tracepoint (it fires
 *                    for successful retransmissions only, in any context;
 *                    a kretprobe pair keyed by task cannot tell apart
 *                    retransmissions from timers on several idle CPUs)
 *   tracepoint mode  sock:inet_sock_set_state (connect, accept, close from
 *                    the state machine), sock:sock_send_length /
 *                    sock_recv_length (bytes), tcp:tcp_retransmit_skb, and
 *                    optionally syscalls:sys_exit_accept(4) (who accepted,
 *                    at accept time)
 *
 * Who accepted a connection, in tracepoint mode: the passive open
 * completes in softirq context, where the current task is anyone. The
 * socket is only reachable through the accept queue until a process
 * accepts it, so the first process-context touch names the owner: its
 * first read or write (sock_*_length), or its close (ESTABLISHED ->
 * FIN_WAIT1, CLOSE_WAIT -> LAST_ACK happen in close()/shutdown()). With
 * the accept syscall tracepoints attached the owner is known at accept()
 * itself, but every syscall on the machine then takes the kernel's slow
 * path (kprobe.Options.AcceptSyscalls).
 *
 * Socket fields are read either through CO-RE relocations (the loader
 * fixes the offsets from the kernel's BTF) or, when use_offsets is set,
 * at offsets user space guessed at start-up (guess.bpf.c). The constants
 * below are set at load time, so the verifier drops the unused path.
 *
 * State: socks maps a socket to its connection (tuple + pid) so that
 * events taken in softirq context (state changes, retransmits) find the
 * process that owns the socket; conn_stats holds the counters per
 * connection. Both are plain hashes (not LRU): nothing is evicted behind
 * the user's back. Closed TCP connections leave both maps with a CLOSE
 * event carrying the final numbers; idle entries (UDP, or TCP whose close
 * was missed) are expired by user space. Every event that cannot be
 * output, and every insert into a full map, is counted in trace_counters.
 */
#include <linux/bpf.h>
#include <asm/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "lbd_tracer.h"
#include "vmlinux_trim.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Keep the enums in BTF so that bpf2go mirrors them into Go. */
const enum lbd_trace_event_type *unused_event_type __attribute__((unused));
const enum lbd_trace_counter *unused_trace_counter __attribute__((unused));
const struct trace_event *unused_trace_event __attribute__((unused));

#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9

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

static __always_inline void count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&trace_counters, &slot);
	if (v)
		*v += 1;
}

static __always_inline void emit(void *ctx, struct trace_event *ev)
{
	long err;

	if (use_perf)
		err = bpf_perf_event_output(ctx, &events_pb, BPF_F_CURRENT_CPU, ev, sizeof(*ev));
	else {
		__u64 flags = 0;

		if (wakeup_bytes)
			flags = bpf_ringbuf_query(&events_rb, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP
												: BPF_RB_NO_WAKEUP;
		err = bpf_ringbuf_output(&events_rb, ev, sizeof(*ev), flags);
	}
	count(err ? ev->type : LBD_TC_EMITTED + ev->type);
}

/* ---- reading a socket: CO-RE or guessed offsets ---- */

static __always_inline __u16 sk_family(struct sock *sk)
{
	__u16 v = 0;

	if (use_offsets)
		bpf_probe_read_kernel(&v, sizeof(v), (void *)sk + off.family);
	else
		v = BPF_CORE_READ(sk, __sk_common.skc_family);
	return v;
}

static __always_inline __u32 sk_netns(struct sock *sk)
{
	__u32 ino = 0;

	if (use_offsets) {
		void *net = 0;

		bpf_probe_read_kernel(&net, sizeof(net), (void *)sk + off.netns);
		if (net)
			bpf_probe_read_kernel(&ino, sizeof(ino), net + off.ino);
	} else {
		ino = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	return ino;
}

/* read_tuple fills t from the socket (pid and proto are the caller's).
 * It returns 0 for a socket that is neither IPv4 nor IPv6. */
static __always_inline int read_tuple(struct sock *sk, struct conn_tuple *t)
{
	__u16 family = sk_family(sk);
	__u16 sport = 0, dport = 0;

	if (family == AF_INET) {
		t->family = 4;
		if (use_offsets) {
			bpf_probe_read_kernel(&t->saddr[0], 4, (void *)sk + off.saddr);
			bpf_probe_read_kernel(&t->daddr[0], 4, (void *)sk + off.daddr);
		} else {
			t->saddr[0] = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
			t->daddr[0] = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		}
	} else if (family == AF_INET6) {
		t->family = 6;
		if (use_offsets) {
			bpf_probe_read_kernel(t->saddr, 16, (void *)sk + off.saddr_ipv6);
			bpf_probe_read_kernel(t->daddr, 16, (void *)sk + off.daddr_ipv6);
		} else {
			BPF_CORE_READ_INTO(&t->saddr, sk, __sk_common.skc_v6_rcv_saddr);
			BPF_CORE_READ_INTO(&t->daddr, sk, __sk_common.skc_v6_daddr);
		}
	} else {
		return 0;
	}
	if (use_offsets) {
		bpf_probe_read_kernel(&sport, 2, (void *)sk + off.sport);
		bpf_probe_read_kernel(&dport, 2, (void *)sk + off.dport);
	} else {
		sport = BPF_CORE_READ(sk, __sk_common.skc_num);
		dport = BPF_CORE_READ(sk, __sk_common.skc_dport);
	}
	t->sport = sport;
	t->dport = __builtin_bswap16(dport);
	t->netns = sk_netns(sk);
	return 1;
}

static __always_inline __u32 sk_srtt_us(struct sock *sk)
{
	if (!have_btf)
		return 0;
	return BPF_CORE_READ((struct tcp_sock *)sk, srtt_us) >> 3;
}

/* sock_from_fd finds the socket behind one of the current task's file
 * descriptors (needs BTF: task_struct is not guessed). */
static __always_inline struct sock *sock_from_fd(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	struct file *f = 0;

	if (fd < 0 || fd >= max)
		return 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	if (!f)
		return 0;
	struct socket *so = (struct socket *)BPF_CORE_READ(f, private_data);
	return BPF_CORE_READ(so, sk);
}

/* ---- handlers shared by both modes ---- */

static __always_inline void fill_event(struct trace_event *ev, __u32 type, struct conn_tuple *t,
				       struct conn_stats *st)
{
	ev->ts_ns = bpf_ktime_get_ns();
	ev->tuple = *t;
	ev->type = type;
	ev->cpu = bpf_get_smp_processor_id();
	ev->tid = (__u32)bpf_get_current_pid_tgid();
	if (st) {
		ev->bytes_sent = st->bytes_sent;
		ev->bytes_recv = st->bytes_recv;
		ev->retrans = st->retrans;
		ev->srtt_us = st->srtt_us;
	}
}

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

static __always_inline void established_current(void *ctx, struct sock *sk, __u32 type)
{
	__u8 comm[16] = {};

	bpf_get_current_comm(comm, sizeof(comm));
	established(ctx, sk, type, bpf_get_current_pid_tgid() >> 32, comm);
}

/* closed flushes a TCP connection: CLOSE with the final numbers, then the
 * socket leaves both maps. stale: the socket is gone already (its address
 * came back as a new socket), do not read it. */
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

/* transferred adds bytes sent or received by the current process. */
/* peer_from_msg fills the remote end of an unconnected UDP socket's
 * tuple from the message's address (struct msghdr starts with msg_name,
 * a kernel copy of the sockaddr, in every kernel). */
static __always_inline void peer_from_msg(struct conn_tuple *t, void *msg)
{
	void *name = 0;
	__u16 family = 0;
	__be16 port = 0;

	if (!msg || t->daddr[0] || t->daddr[1] || t->daddr[2] || t->daddr[3])
		return;
	bpf_probe_read_kernel(&name, sizeof(name), msg);
	if (!name)
		return;
	bpf_probe_read_kernel(&family, sizeof(family), name);
	bpf_probe_read_kernel(&port, sizeof(port), name + 2);
	if (family == AF_INET && t->family == 4) {
		bpf_probe_read_kernel(&t->daddr[0], 4, name + 4);
	} else if (family == AF_INET6 && t->family == 6) {
		bpf_probe_read_kernel(t->daddr, 16, name + 8);
	} else {
		return;
	}
	t->dport = __builtin_bswap16(port);
}

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

/* ---- tracepoint mode ---- */

/* Layouts from /sys/kernel/tracing/events/<group>/<name>/format (stable). */
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

struct tp_sock_length {
	__u64 common;
	void *sk;
	__u16 family;
	__u16 protocol;
	int ret;
	int flags;
};

struct tp_tcp_retransmit_skb {
	__u64 common;
	const void *skbaddr;
	const void *skaddr;
};

struct tp_sys_exit {
	__u64 common;
	int nr;
	int pad;
	long ret;
};

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
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct trace_event ev = {};

	if (!bpf_map_lookup_elem(&fdinstall_pids, &pid))
		return 0;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.type = LBD_EV_FD_INSTALL;
	ev.cpu = bpf_get_smp_processor_id();
	ev.tuple.pid = pid;
	ev.tid = (__u32)id;
	ev.fd = fd;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	emit(ctx, &ev);
	return 0;
}
