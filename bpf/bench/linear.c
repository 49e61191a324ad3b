//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A reference for scripts/bench: cgroup/bind4 and cgroup/bind6 programs that
 * judge a bind by scanning an ordered rule list, one array lookup per rule,
 * first match wins, the way systemd's SocketBindAllow=/SocketBindDeny= do
 * (src/core/bpf/socket_bind/). A port no rule matches costs a scan of every
 * rule: that worst case is what the benchmark measures, against bindguard's
 * one hash lookup whatever the registry size.
 *
 * Not a policy engine: nothing here is used outside the benchmark.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define LINEAR_AF_INET 2
#define LINEAR_AF_INET6 10

char __license[] SEC("license") = "Dual BSD/GPL";

enum limits {
	/* Capacity of linear_rules, as systemd's 128-rule limit. */
	LINEAR_MAX_RULES = 128,
};

/*
 * struct rule: one entry of the rule list.
 *   family: 0 matches both families, else AF_INET (2) or AF_INET6 (10);
 *   first..last: the port range matched, host byte order, inclusive;
 *     first = 0 and last = 0xffff match every port;
 *   verdict: non-zero allows the bind, 0 fails it with EPERM.
 * Example: {family=0, first=8080, last=8080, verdict=1} allows port 8080 on
 * both families.
 */
struct rule {
	__u8 family;
	__u8 verdict;
	__u16 first;
	__u16 last;
	__u16 pad;
};

/* Rules in order: key = index (0..linear_nr_rules-1), value = struct rule. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, LINEAR_MAX_RULES);
	__type(key, __u32);
	__type(value, struct rule);
} linear_rules SEC(".maps");

/* Load-time configuration: how many entries of linear_rules are in use. */
volatile const __u32 linear_nr_rules = 0;

/* Keep the types that only user space reads in the object's BTF, for bpf2go -type. */
const struct rule *unused_rule __attribute__((unused));
const enum limits *unused_limits __attribute__((unused));

/* scan returns the verdict of the first rule matching (family, port); a bind no rule matches is allowed. */
static __always_inline int scan(__u8 family, __u16 port)
{
	for (__u32 i = 0; i < LINEAR_MAX_RULES; i++) {
		if (i >= linear_nr_rules)
			break;
		__u32 key = i;
		struct rule *r = bpf_map_lookup_elem(&linear_rules, &key);
		if (!r)
			break;
		if (r->family && r->family != family)
			continue;
		if (port < r->first || port > r->last)
			continue;
		return r->verdict ? 1 : 0;
	}
	return 1;
}

SEC("cgroup/bind4")
int linear_bind4(struct bpf_sock_addr *ctx)
{
	return scan(LINEAR_AF_INET, bpf_ntohs((__u16)ctx->user_port));
}

SEC("cgroup/bind6")
int linear_bind6(struct bpf_sock_addr *ctx)
{
	return scan(LINEAR_AF_INET6, bpf_ntohs((__u16)ctx->user_port));
}
