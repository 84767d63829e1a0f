/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reading the kernel's socket structures (tracer.bpf.c).
 *
 * Socket fields are read either through CO-RE relocations (the loader
 * fixes the offsets from the kernel's BTF) or, when use_offsets is set,
 * at offsets user space guessed at start-up (guess.bpf.c). use_offsets
 * and have_btf are set at load time, so the verifier drops the unused
 * path.
 */
#ifndef LBD_SOCK_READ_H
#define LBD_SOCK_READ_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "lbd_tracer.h"
#include "vmlinux_trim.h"
#include "tracer_maps.h"

#define AF_INET 2
#define AF_INET6 10

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

#endif /* LBD_SOCK_READ_H */
