/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types the tracer reads, trimmed by hand from
 * `bpftool btf dump file /sys/kernel/btf/vmlinux format c` (kernel 6.18).
 *
 * Only the members the tracer touches are declared, and every struct is
 * marked preserve_access_index: the compiler records each access as a
 * CO-RE relocation by member name, and the loader rewrites the offsets to
 * the running kernel's (from its BTF). The offsets written here are
 * therefore irrelevant, which is what makes a trimmed header safe, and it
 * keeps the generated object identical on every clone (no dependence on
 * the build machine's kernel). Anonymous unions and structs follow the
 * kernel's nesting so that the access paths match.
 */
#ifndef LBD_VMLINUX_TRIM_H
#define LBD_VMLINUX_TRIM_H

#include <linux/types.h>

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

struct sock_common {
	union {
		__u64 skc_addrpair;
		struct {
			__be32 skc_daddr;
			__be32 skc_rcv_saddr;
		};
	};
	union {
		__u32 skc_portpair;
		struct {
			__be16 skc_dport;
			__u16 skc_num;
		};
	};
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
};

struct tcp_sock {
	__u32 srtt_us;
};

struct socket {
	struct sock *sk;
};

struct file {
	void *private_data;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct task_struct {
	struct files_struct *files;
};

#pragma clang attribute pop

#endif
