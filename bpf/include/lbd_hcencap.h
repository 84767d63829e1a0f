/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures and constants of the health-check encapsulation program
 * (bpf/tc/hcencap.bpf.c), mirrored into Go by bpf2go. The real a mark
 * stands for is a struct real_def of lbd_types.h.
 */
#ifndef LBD_HCENCAP_H
#define LBD_HCENCAP_H

#include <linux/types.h>

/* Run-time configuration, one element; user space may change it at any time. */
struct hc_config {
	__u32 src4;    /* outer source of IPv4-in-IPv4 probes (this node) */
	__u32 src6[4]; /* outer source of IPv6-in-IPv6 probes (this node) */
	__u8 gw_mac[6]; /* all zero: keep the destination MAC the stack chose */
	__u16 pad;
};

/*
 * Counters, one set per CPU, summed in Go. Every packet the program sees
 * ends in exactly one of them.
 */
enum lbd_hc_stat {
	LBD_HC_ENCAP_4IN4 = 0,   /* IPv4 probe encapsulated towards an IPv4 real */
	LBD_HC_ENCAP_6IN6,       /* IPv6 probe encapsulated towards an IPv6 real */
	LBD_HC_PASS_UNMARKED,    /* mark 0 or a mark no real has: not a probe */
	LBD_HC_DROP_FAMILY,      /* probe whose family is not its real's (or not IP) */
	LBD_HC_DROP_FAILED,      /* the kernel refused to grow the packet */
	LBD_HC_STAT_MAX,
};

struct hc_counters {
	__u64 counters[LBD_HC_STAT_MAX];
};

#endif /* LBD_HCENCAP_H */
