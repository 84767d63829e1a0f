/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The balancer's maps. max_entries here are defaults: the Go loader sets
 * the real sizes (max VIPs, max reals, connection table entries) before
 * loading, so these numbers only matter to a loader that does not.
 */
#ifndef LBD_MAPS_H
#define LBD_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lbd_types.h"

#define LBD_DEFAULT_MAX_VIPS 512
#define LBD_DEFAULT_MAX_REALS 4096
#define LBD_DEFAULT_FLOWS (1 << 20)
#define LBD_DEFAULT_RING_SIZE 65537

/* VIP -> its number. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct vip_key);
	__type(value, __u32);
	__uint(max_entries, LBD_DEFAULT_MAX_VIPS);
} vips SEC(".maps");

/* VIP number -> flags, ring size, generation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct vip_meta);
	__uint(max_entries, LBD_DEFAULT_MAX_VIPS);
} vip_info SEC(".maps");

/* Addresses used by any VIP: one lookup sends all other traffic to the stack. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct addr_key);
	__type(value, enum lbd_addr_flag);
	__uint(max_entries, LBD_DEFAULT_MAX_VIPS);
} vip_addrs SEC(".maps");

/*
 * A Bloom-like bitmap of VIP addresses (one hash function): a clear bit
 * means "no VIP has this address", which sends most non-VIP traffic to the
 * stack with one inlined array read, and lets an established flow skip the
 * vip_addrs lookup altogether (its connection table entry is proof
 * enough). A set bit may be a false positive; vip_addrs decides then.
 * User space derives it from the VIPs; it is not pinned, a new program
 * gets it filled before it is attached.
 */
#define LBD_FILTER_BITS_LOG2 16
#define LBD_FILTER_WORDS ((1 << LBD_FILTER_BITS_LOG2) / 64)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LBD_FILTER_WORDS);
} vip_filter SEC(".maps");

/* Real index -> address. Index 0 is never used, so a zeroed ring slot means "no real". */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct real_def);
	__uint(max_entries, LBD_DEFAULT_MAX_REALS);
} reals SEC(".maps");

/*
 * Two Maglev ring buffers per VIP, inner maps at rings[2 * vip_num] and
 * rings[2 * vip_num + 1]; vip_info says which one is live. User space
 * writes a whole new ring into the idle buffer (through its memory
 * mapping: BPF_F_MMAPABLE), then flips vip_info with one store: a packet
 * finds the live ring complete, never half written. (A packet that read
 * vip_info just before a flip may read the buffer that went idle while it
 * is rewritten for the next change: it reads one slot and gets it from
 * the old ring or the new one.) BPF_F_INNER_MAP lets rings of different
 * sizes share the outer map. Swapping inner maps in the outer map instead
 * would make every change wait for an RCU grace period (4-15 ms).
 */
struct ring {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32); /* real index */
	__uint(max_entries, LBD_DEFAULT_RING_SIZE);
	__uint(map_flags, BPF_F_INNER_MAP | BPF_F_MMAPABLE);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__type(key, __u32);
	__uint(max_entries, 2 * LBD_DEFAULT_MAX_VIPS);
	__array(values, struct ring);
} rings SEC(".maps");

/*
 * The connection table: one LRU hash shared by all CPUs, so a flow has at
 * most one entry whichever CPUs its packets come in on (a TCP connection
 * or UDP flow goes to one real: a SYN's entry replaces the 5-tuple's old
 * one for every CPU at once). BPF_F_NO_COMMON_LRU gives each CPU its own
 * LRU lists and share of the entries, as per-CPU tables did: a CPU
 * inserts and evicts under its own list lock, never a global one, and a
 * lookup takes no lock at all. Writers to one key contend on its hash
 * bucket's lock only. The kernel rounds max_entries up to a multiple of
 * the possible CPUs; the loader does that itself so pins compare equal.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct flow_key);
	__type(value, struct flow_state);
	__uint(max_entries, LBD_DEFAULT_FLOWS);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
} conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lbd_config);
	__uint(max_entries, 1);
} config SEC(".maps");

/*
 * Per CPU: the flows recorded in the current one-second window, for the
 * new-flow rate cap (lbd_config.new_flow_rate). Not pinned: a restart
 * starts a new window.
 */
struct new_flow_window {
	__u32 start; /* jiffies at the window's start */
	__u32 count; /* flows recorded since */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct new_flow_window);
	__uint(max_entries, 1);
} new_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct vip_counters);
	__uint(max_entries, LBD_DEFAULT_MAX_VIPS);
} vip_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct real_counters);
	__uint(max_entries, LBD_DEFAULT_MAX_REALS);
} real_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct global_counters);
	__uint(max_entries, 1);
} stats SEC(".maps");

#endif /* LBD_MAPS_H */
