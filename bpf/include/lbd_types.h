/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Structures and constants shared between the lbd BPF programs and Go.
 *
 * Every struct here is mirrored by bpf2go (-type) into Go, so the layout is
 * the contract: fields are ordered to need no implicit padding, and any
 * explicit padding is named so that Go zeroes it (BPF hash keys compare
 * every byte). Addresses are stored as four 32-bit words in network byte
 * order; an IPv4 address uses word 0 and leaves words 1..3 zero.
 */
#ifndef LBD_TYPES_H
#define LBD_TYPES_H

#include <linux/types.h>

/* Address families as stored in keys (not AF_*: 0 must mean "unset"). */
enum lbd_family {
	LBD_FAMILY_NONE = 0,
	LBD_FAMILY_IPV4 = 4,
	LBD_FAMILY_IPV6 = 6,
};

/* Per-VIP behaviour, in vip_meta.flags. */
enum lbd_vip_flag {
	/* Hash only the client address: all of a client's flows go to one real. */
	LBD_VIP_F_STICKY = 1 << 0,
	/* Neither consult nor fill the connection table: every packet follows the ring. */
	LBD_VIP_F_NO_LRU = 1 << 1,
	/* Encapsulate in GUE (UDP, variant 1 direct IP) instead of IP-in-IP. */
	LBD_VIP_F_GUE = 1 << 2,
	/*
	 * Was: on a miss in this CPU's connection table, do not search the
	 * other CPUs' tables. The table is shared by all CPUs now, there is
	 * no search, and the flag is accepted but changes nothing.
	 */
	LBD_VIP_F_NO_FLOW_SEARCH = 1 << 3,
};

/* Per-address summary in vip_addrs: which lookups a packet to it needs. */
enum lbd_addr_flag {
	LBD_ADDR_F_PORTLESS_TCP = 1 << 0, /* a TCP VIP with port 0 (any port) exists */
	LBD_ADDR_F_PORTLESS_UDP = 1 << 1, /* a UDP VIP with port 0 (any port) exists */
};

/* Global behaviour switches, in lbd_config.flags. */
enum lbd_config_flag {
	/* IPv4/IPv6 fragments to a VIP address: pass to the stack (else drop). */
	LBD_CFG_F_FRAG_PASS = 1 << 0,
	/* Other unbalanceable packets to a VIP address: pass (else drop). */
	LBD_CFG_F_UNBALANCEABLE_PASS = 1 << 1,
	/* gw_mac is set (else encapsulated frames go back to the frame's source MAC). */
	LBD_CFG_F_GW_MAC = 1 << 2,
	/*
	 * new_flow_rate is set: each CPU records at most that many new flows
	 * per second (else there is no cap; a config written by an older lbd,
	 * whose search_rate was in its place, has no cap).
	 */
	LBD_CFG_F_NEW_FLOW_RATE = 1 << 3,
};

/* A VIP: (address, port, protocol). Port 0 means "any port". */
struct vip_key {
	__u32 addr[4];
	__u16 port; /* network byte order */
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 family;
};

/*
 * What the datapath knows of a VIP, in vip_info[vip_num] (vip_num: the
 * value of vips, also the index of rings and vip_stats). gen changes each
 * time the number is given to a VIP, and is 0 while the number is free: a
 * connection table entry names its VIP by (vip_num, gen), so entries of a
 * removed VIP stop matching at once, without a table walk.
 */
struct vip_meta {
	enum lbd_vip_flag flags;
	/*
	 * Slots in this VIP's live ring (low 31 bits) and which of its two
	 * ring buffers is live (top bit): rings[2 * vip_num + buffer]. One
	 * 32-bit word, so a packet reads a consistent pair.
	 */
	__u32 ring_size;
	__u32 gen;
	__u32 last_gen; /* not read here: user space keeps the last gen given to the number, also once it is free */
};

#define LBD_RING_SIZE_MASK 0x7fffffffu
#define LBD_RING_BUF_SHIFT 31

/* Key of vip_addrs: an address that at least one VIP uses. */
struct addr_key {
	__u32 addr[4];
	__u32 family;
};

struct real_def {
	__u32 addr[4];
	__u32 family; /* LBD_FAMILY_NONE: slot unused */
};

/* Connection table key: the client's 5-tuple as it arrives. */
struct flow_key {
	__u32 src[4];
	__u32 dst[4];
	__u16 sport; /* network byte order */
	__u16 dport; /* network byte order */
	__u8 proto;
	__u8 family;
	__u16 pad;
};

/* Connection table value: the chosen real and what the flow carried. */
struct flow_state {
	__u32 real;     /* index into reals */
	__u32 vip_num;
	__u32 vip_gen;  /* vip_info[vip_num].gen when the entry was made */
	__u32 hash;     /* the flow hash when the entry was made: outer source without rehashing */
	__u64 packets;
	__u64 bytes;    /* IP bytes (header + payload) of the client's packets */
	/*
	 * jiffies, truncated to 32 bits: a 40-byte value makes a table
	 * element exactly two cache lines (48-byte header + 40-byte key +
	 * value), and ticks wrap only after 2^32 (49 days at HZ=1000).
	 */
	__u32 first_tick; /* at the first packet */
	__u32 last_tick;  /* at the latest packet */
};

/* Run-time configuration, one element; user space may change it at any time. */
struct lbd_config {
	__u8 gw_mac[6];   /* all zero: send back to the frame's source MAC */
	__u16 mtu;        /* largest outer IP packet to send; 0: no check */
	enum lbd_config_flag flags;
	/* IP-in-IP outer source = base | (flow hash & mask), per word. */
	__u32 encap_src4;
	__u32 encap_src4_mask;
	__u32 encap_src6[4];
	__u32 encap_src6_mask[4];
	/* GUE outer source: a fixed address of this node. */
	__u32 gue_src4;
	__u32 gue_src6[4];
	__u16 gue_port;   /* network byte order */
	__u16 pad;
	__u32 udp_timeout_s; /* UDP table entries idle longer re-follow the ring; 0: never */
	__u32 hz;            /* clock ticks (jiffies) per second: the loader reads the kernel's tick */
	/*
	 * With LBD_CFG_F_NEW_FLOW_RATE: the most new flows a CPU records in
	 * the connection table per second (as Katran's max_conn_rate). Above
	 * it a new flow is forwarded by the ring and not recorded; its next
	 * packet tries again. A flood of spoofed packets then cannot churn the
	 * table faster than this. (Was search_rate, unused since the table is
	 * shared: without the flag the field is ignored.)
	 */
	__u32 new_flow_rate;
};

struct vip_counters {
	__u64 packets;
	__u64 bytes;
	__u64 lru_hits;
	__u64 lru_misses;
};

struct real_counters {
	__u64 packets;
	__u64 bytes;
};

/*
 * Global counters, one per CPU, summed in Go. Every packet the balancer
 * sees ends in exactly one of the action counters (tx, pass, drop reasons);
 * the lru_* and icmp_* counters are extra detail.
 */
enum lbd_stat {
	LBD_STAT_TX = 0,             /* encapsulated to a real */
	LBD_STAT_ICMP_ECHO_REPLY,    /* echo request to a VIP address answered */
	LBD_STAT_PASS_NON_IP,        /* not IPv4/IPv6 */
	LBD_STAT_PASS_NON_VIP,       /* destination is not a VIP address */
	LBD_STAT_PASS_NO_VIP_PORT,   /* VIP address, but no VIP for this port/protocol */
	LBD_STAT_PASS_FRAGMENT,      /* fragment to a VIP address, policy pass */
	LBD_STAT_DROP_FRAGMENT,      /* fragment to a VIP address, policy drop */
	LBD_STAT_PASS_UNBALANCEABLE, /* other protocol/ICMP to a VIP address, policy pass */
	LBD_STAT_DROP_UNBALANCEABLE, /* other protocol/ICMP to a VIP address, policy drop */
	LBD_STAT_DROP_MALFORMED_L2,  /* truncated Ethernet/VLAN header */
	LBD_STAT_DROP_MALFORMED_L3,  /* bad IP header: short, bad IHL/version, lengths that lie */
	LBD_STAT_DROP_MALFORMED_L4,  /* VIP traffic with a short or bad TCP/UDP/ICMP header */
	LBD_STAT_DROP_NO_REAL,       /* VIP has no usable real (empty ring) */
	LBD_STAT_DROP_TOO_BIG,       /* encapsulated packet would exceed the MTU */
	LBD_STAT_DROP_ENCAP_FAIL,    /* could not grow the frame */
	LBD_STAT_LRU_HIT,            /* connection table hit */
	LBD_STAT_LRU_MISS,           /* connection table miss: a SYN (never recorded), a new flow */
	LBD_STAT_LRU_MISS_NON_SYN,   /* TCP miss, not a SYN: a handshake's first ACK (it records the flow), or a moved flow */
	LBD_STAT_LRU_INSERT_FAIL,    /* connection table update failed */
	LBD_STAT_ICMP_TOO_BIG,       /* frag-needed / packet-too-big forwarded to a flow's real */
	LBD_STAT_LRU_REMOTE_HIT,     /* unused (0): was a flow found in another CPU's table */
	LBD_STAT_LRU_INSERT_CAPPED,  /* new flow not recorded: its CPU recorded new_flow_rate flows this second */
	LBD_STAT_MAX,
};

struct global_counters {
	__u64 counters[LBD_STAT_MAX];
};

#define LBD_GUE_DEFAULT_PORT 6080

#endif /* LBD_TYPES_H */
