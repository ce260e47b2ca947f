// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Block network: attached to a cgroup (cgroup v2), these programs refuse the
 * new connections (connect) and UDP sends (sendmsg) of every process in it,
 * except DNS (port 53) and the destinations in the allow maps (the agent's
 * backend). A refused call fails with EPERM.
 *
 * The context is the UAPI struct bpf_sock_addr, whose field offsets the
 * verifier rewrites: it is declared here as the UAPI header has it (the
 * first fields), without CO-RE.
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

/* [0]: calls refused. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
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
