// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Block network: attached to a cgroup (cgroup v2), these programs refuse the
 * new connections (connect) and UDP sends (sendmsg) of every process in it,
 * except DNS (port 53) and the destinations in the allow maps (the agent's
 * backend). A refused call fails with EPERM.
 *
 * Isolate: attached to a cgroup's skb ingress and egress, the isolate
 * programs drop every packet of its sockets, loopback included, whose
 * remote or local end is neither port 53 (DNS) nor an allowed destination.
 *
 * The contexts are the UAPI structs bpf_sock_addr and __sk_buff, whose
 * field offsets the verifier rewrites: they are declared here as the UAPI
 * header has them (the first fields), without CO-RE.
 */
#include "../../sensor/bpf/kernel_types.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;
	__u32 user_ip6[4];
	__u32 user_port;
	__u32 family;
	__u32 type;
	__u32 protocol;
};

struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
};

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

/* Allowed destinations; ports in network byte order, as in the context. */
struct allow4_key {
	u32 ip;
	u32 port;
};
struct allow6_key {
	u32 ip[4];
	u32 port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct allow4_key);
	__type(value, u8);
} allow4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct allow6_key);
	__type(value, u8);
} allow6 SEC(".maps");

/* [0]: calls refused; [1]: packets dropped by isolation. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, u32);
	__type(value, u64);
} refused SEC(".maps");

static __always_inline int refuse(void)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&refused, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

static __always_inline int check4(struct bpf_sock_addr *ctx)
{
	u32 port = ctx->user_port;
	if (port == bpf_htons(53))
		return 1;
	struct allow4_key k = {.ip = ctx->user_ip4, .port = port};
	if (bpf_map_lookup_elem(&allow4, &k))
		return 1;
	return refuse();
}

static __always_inline int check6(struct bpf_sock_addr *ctx)
{
	u32 port = ctx->user_port;
	if (port == bpf_htons(53))
		return 1;
	struct allow6_key k = {.port = port};
	k.ip[0] = ctx->user_ip6[0];
	k.ip[1] = ctx->user_ip6[1];
	k.ip[2] = ctx->user_ip6[2];
	k.ip[3] = ctx->user_ip6[3];
	if (bpf_map_lookup_elem(&allow6, &k))
		return 1;
	return refuse();
}

SEC("cgroup/connect4")
int block_connect4(struct bpf_sock_addr *ctx) { return check4(ctx); }

SEC("cgroup/connect6")
int block_connect6(struct bpf_sock_addr *ctx) { return check6(ctx); }

SEC("cgroup/sendmsg4")
int block_sendmsg4(struct bpf_sock_addr *ctx) { return check4(ctx); }

SEC("cgroup/sendmsg6")
int block_sendmsg6(struct bpf_sock_addr *ctx) { return check6(ctx); }

static __always_inline int drop(void)
{
	u32 one = 1;
	u64 *n = bpf_map_lookup_elem(&refused, &one);
	if (n)
		__sync_fetch_and_add(n, 1);
	return 0;
}

/* allowed4/6 say whether one end (address, port in network byte order) of
 * a packet is DNS or an allowed destination. */
static __always_inline int allowed4(u32 ip, u16 port)
{
	if (port == bpf_htons(53))
		return 1;
	struct allow4_key k = {.ip = ip, .port = port};
	return bpf_map_lookup_elem(&allow4, &k) != 0;
}

static __always_inline int allowed6(const u32 *ip, u16 port)
{
	if (port == bpf_htons(53))
		return 1;
	struct allow6_key k = {.port = port};
	k.ip[0] = ip[0];
	k.ip[1] = ip[1];
	k.ip[2] = ip[2];
	k.ip[3] = ip[3];
	return bpf_map_lookup_elem(&allow6, &k) != 0;
}

/* isolate keeps a packet (1) when either of its ends is allowed; a packet
 * without TCP or UDP ports (ICMP, fragments, IPv6 extension headers) is
 * dropped. The skb's data starts at the network header. */
static __always_inline int isolate(struct __sk_buff *skb)
{
	u16 ports[2];
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		u8 hdr[20];
		if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)))
			return drop();
		if (hdr[9] != IPPROTO_TCP && hdr[9] != IPPROTO_UDP)
			return drop();
		u32 ihl = (hdr[0] & 0xf) * 4;
		if (ihl < 20 || bpf_skb_load_bytes(skb, ihl, ports, sizeof(ports)))
			return drop();
		u32 saddr, daddr;
		__builtin_memcpy(&saddr, &hdr[12], 4);
		__builtin_memcpy(&daddr, &hdr[16], 4);
		if (allowed4(saddr, ports[0]) || allowed4(daddr, ports[1]))
			return 1;
		return drop();
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		u8 hdr[40];
		if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)))
			return drop();
		if (hdr[6] != IPPROTO_TCP && hdr[6] != IPPROTO_UDP)
			return drop();
		if (bpf_skb_load_bytes(skb, 40, ports, sizeof(ports)))
			return drop();
		u32 saddr[4], daddr[4];
		__builtin_memcpy(saddr, &hdr[8], 16);
		__builtin_memcpy(daddr, &hdr[24], 16);
		if (allowed6(saddr, ports[0]) || allowed6(daddr, ports[1]))
			return 1;
		return drop();
	}
	return drop();
}

SEC("cgroup_skb/ingress")
int isolate_ingress(struct __sk_buff *skb) { return isolate(skb); }

SEC("cgroup_skb/egress")
int isolate_egress(struct __sk_buff *skb) { return isolate(skb); }
