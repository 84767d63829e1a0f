//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The offset guesser's hook (see guess.go for the protocol).
 *
 * It needs no kprobe: sock:inet_sock_set_state hands over the socket
 * pointer on every kernel lbd supports. When user space has armed the
 * status map, the next connect() of the armed thread (CLOSE -> SYN_SENT,
 * in that thread's context) is captured: either the first bytes of the
 * socket, or the struct net behind the pointer at a candidate offset. The
 * comparisons are done in Go, which knows the expected values.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lbd_tracer.h"
#include "tracepoints.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const enum lbd_guess_what *unused_guess_what __attribute__((unused));
const enum lbd_guess_state *unused_guess_state __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct guess_status);
	__uint(max_entries, 1);
} guess_map SEC(".maps");

SEC("tracepoint/sock/inet_sock_set_state")
int guess_set_state(struct tp_inet_sock_set_state *ctx)
{
	__u32 zero = 0;
	struct guess_status *s = bpf_map_lookup_elem(&guess_map, &zero);

	if (!s || s->state != LBD_GUESS_ARMED)
		return 0;
	if (ctx->protocol != 6 || ctx->oldstate != TCP_CLOSE || ctx->newstate != TCP_SYN_SENT)
		return 0;
	if (bpf_get_current_pid_tgid() != s->pid_tgid)
		return 0;

	s->sk = (__u64)ctx->skaddr;
	if (s->what == LBD_GUESS_NETNS) {
		void *net = 0;
		__u32 o = s->offset_netns;

		if (o > LBD_GUESS_SNAP - 8) {
			s->err = -22;
		} else {
			s->err = bpf_probe_read_kernel(&net, sizeof(net), (void *)ctx->skaddr + o);
			if (!s->err)
				s->err = bpf_probe_read_kernel(s->data, sizeof(s->data), net);
		}
	} else {
		s->err = bpf_probe_read_kernel(s->data, sizeof(s->data), ctx->skaddr);
	}
	s->state = LBD_GUESS_CAPTURED;
	return 0;
}
