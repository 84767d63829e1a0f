/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures and constants of the real-side decapsulation program
 * (bpf/tc/decap.bpf.c), mirrored into Go by bpf2go. The VIP set reuses
 * struct addr_key of lbd_types.h.
 */
#ifndef LBD_DECAP_H
#define LBD_DECAP_H

#include <linux/types.h>

/* Run-time configuration, one element; user space may change it at any time. */
struct decap_config {
	__u16 gue_port; /* network byte order; 0: GUE off */
	__u16 pad;
};

/*
 * Counters, one set per CPU, summed in Go. Every packet the program sees
 * ends in exactly one of them. The eight decapsulation counters are
 * indexed: base + (outer IPv6 ? 2 : 0) + (inner IPv6 ? 1 : 0), so
 * "6in4" reads "inner IPv6 in outer IPv4".
 */
enum lbd_decap_stat {
	LBD_DECAP_IPIP_4IN4 = 0,
	LBD_DECAP_IPIP_6IN4,
	LBD_DECAP_IPIP_4IN6,
	LBD_DECAP_IPIP_6IN6,
	LBD_DECAP_GUE_4IN4,
	LBD_DECAP_GUE_6IN4,
	LBD_DECAP_GUE_4IN6,
	LBD_DECAP_GUE_6IN6,
	LBD_DECAP_PASS_NOT_TUNNEL, /* not IP-in-IP nor GUE to our port: not ours to judge */
	LBD_DECAP_PASS_NOT_VIP,    /* a tunnel packet whose inner destination is not a VIP of this real */
	LBD_DECAP_PASS_FRAGMENT,   /* an outer fragment: left to the stack's reassembly */
	LBD_DECAP_DROP_MALFORMED,  /* tunnel packet with a truncated or inconsistent inner header */
	LBD_DECAP_DROP_FAILED,     /* the kernel refused to remove the outer header */
	LBD_DECAP_STAT_MAX,
};

struct decap_counters {
	__u64 counters[LBD_DECAP_STAT_MAX];
};

#endif /* LBD_DECAP_H */
