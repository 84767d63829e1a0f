/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * FD_INSTALL events (tracer.bpf.c, kprobe mode): a watched process
 * (fdinstall_pids) installed a file descriptor.
 */
#ifndef LBD_EVENT_FD_INSTALL_H
#define LBD_EVENT_FD_INSTALL_H

#include "event.h"

static __always_inline void fd_installed(void *ctx, unsigned int fd)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	struct trace_event ev = {};

	if (!bpf_map_lookup_elem(&fdinstall_pids, &pid))
		return;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.type = LBD_EV_FD_INSTALL;
	ev.cpu = bpf_get_smp_processor_id();
	ev.tuple.pid = pid;
	ev.tid = (__u32)id;
	ev.fd = fd;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	emit(ctx, &ev);
}

#endif /* LBD_EVENT_FD_INSTALL_H */
