/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Output of the tracer's events (tracer.bpf.c), shared by the event_*.h
 * headers, one a kind of event: an event is filled from a connection's
 * tuple and counters, written to the ring buffer (or the perf buffer),
 * and counted in trace_counters as output or lost.
 */
#ifndef LBD_EVENT_H
#define LBD_EVENT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lbd_tracer.h"
#include "tracer_maps.h"

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

#endif /* LBD_EVENT_H */
