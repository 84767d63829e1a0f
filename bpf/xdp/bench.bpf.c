//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Benchmark wrappers around the balancer, built only for `make bench`
 * (Go build tag lbdbench). They share the balancer's maps (the loader
 * passes them as replacements).
 *
 * BPF_PROG_TEST_RUN with repeat=N runs the program N times on one buffer
 * without restoring it, so after the first run a TX path would see its own
 * encapsulated output. The *_undo programs therefore strip the outer
 * header and put back the original L2 header after each run: every
 * repetition sees the same input, and the output can be checked to equal
 * the input byte for byte.
 */
#include "balancer.bpf.c"

/* The floor: the cheapest possible XDP program. */
SEC("xdp")
int bench_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

/* lbd_undo_encap strips what lbd_encap added and restores the saved L2 header. */
static __always_inline int lbd_undo_encap(struct xdp_md *ctx, const __u8 *l2, int vlan)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u16 l2len = vlan ? LBD_VLAN_HLEN : sizeof(struct ethhdr);
	__u8 *outer = data + l2len;
	__u16 olen;

	if ((void *)(outer + 40) > data_end)
		return XDP_ABORTED;
	if ((outer[0] >> 4) == 4)
		olen = sizeof(struct iphdr) + (outer[9] == IPPROTO_UDP ? sizeof(struct udphdr) : 0);
	else
		olen = sizeof(struct ipv6hdr) + (outer[6] == IPPROTO_UDP ? sizeof(struct udphdr) : 0);
	if (bpf_xdp_adjust_head(ctx, olen))
		return XDP_ABORTED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + LBD_VLAN_HLEN > data_end)
		return XDP_ABORTED;
	if (vlan)
		__builtin_memcpy(data, l2, LBD_VLAN_HLEN);
	else
		__builtin_memcpy(data, l2, sizeof(struct ethhdr));
	return XDP_TX;
}

/* The balancer, with the encapsulation undone after a TX. */
SEC("xdp")
int bench_balancer_undo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u8 l2[LBD_VLAN_HLEN];
	int vlan, act;

	if (data + LBD_VLAN_HLEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(l2, data, LBD_VLAN_HLEN);
	vlan = ((struct ethhdr *)data)->h_proto == bpf_htons(ETH_P_8021Q);
	act = lbd_process(ctx);
	if (act != XDP_TX)
		return act;
	return lbd_undo_encap(ctx, l2, vlan);
}

/*
 * The encapsulation floor: IPv4-in-IPv4 of the frame as it is to a fixed
 * real, then undone. No parsing beyond Ethernet, no lookups but the
 * configuration: what any IP-in-IP forwarder pays.
 */
SEC("xdp")
int bench_encap_undo(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct real_def real = { .addr = { 0x0201000a }, .family = LBD_FAMILY_IPV4 };
	struct packet pkt = {};
	__u8 l2[LBD_VLAN_HLEN];
	struct lbd_config *cfg;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || data + LBD_VLAN_HLEN > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(l2, data, LBD_VLAN_HLEN);
	pkt.l3_off = sizeof(struct ethhdr);
	pkt.l3_len = data_end - data - sizeof(struct ethhdr);
	pkt.family = LBD_FAMILY_IPV4;
	if (lbd_encap(ctx, &pkt, &real, 0x12345678, 0, cfg))
		return XDP_ABORTED;
	return lbd_undo_encap(ctx, l2, 0);
}

/*
 * The connection table's own cost: the insert a new IPv4 TCP flow makes,
 * and nothing else (no VIP, ring or encapsulation). It takes the 5-tuple
 * from fixed offsets of an untagged IPv4 frame without options, as the
 * benchmark sends. Whatever the balancer does, a new flow costs at least
 * this: the rest of the new-flow row is lbd's own work.
 */
SEC("xdp")
int bench_lru_insert(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = data + sizeof(struct ethhdr);
	__be16 *ports = (void *)(iph + 1);
	struct flow_key fk = {};
	struct flow_state ns = {};

	if ((void *)(ports + 2) > data_end)
		return XDP_ABORTED;
	fk.src[0] = iph->saddr;
	fk.dst[0] = iph->daddr;
	fk.sport = ports[0];
	fk.dport = ports[1];
	fk.proto = iph->protocol;
	fk.family = LBD_FAMILY_IPV4;
	ns.real = 1;
	ns.packets = 1;
	ns.bytes = data_end - (void *)iph;
	ns.first_tick = ns.last_tick = lbd_now();
	if (bpf_map_update_elem(&conns, &fk, &ns, BPF_ANY))
		return XDP_ABORTED;
	return XDP_DROP;
}
