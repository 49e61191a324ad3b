//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bindguard's cgroup/bind4 and cgroup/bind6 programs: judge every bind() of a
 * task below the attach cgroup against the host port registry.
 *
 * The verdict, in order (policy.Decide in Go is the reference and must agree):
 *   1. port 0 (ephemeral)                        -> allow
 *   2. not TCP, MPTCP or UDP                      -> allow
 *   3. socket outside the host netns (unless all_netns) -> allow
 *   4. no rule for (proto, port)                 -> undeclared
 *   5. rule is a removed port                    -> removed
 *   6. rule has owners, none matches the task    -> owner
 *   7. rule is localhost-only, address is not loopback -> address
 *   8.                                           -> allow
 * Step 3 is taken only once 4-7 found a violation: a bind that violates
 * nothing is allowed in any namespace, so the allowed path skips the helper.
 * A violation is audited (bind proceeds) when the node or the rule is in
 * audit mode, denied (EPERM) otherwise, and reported on the ring buffer.
 *
 * The cost of a check does not depend on the registry size: the rule is an
 * array element indexed by (protocol, port); owner-restricted ports add one
 * hash lookup for the uid (when uids are listed) and one per cgroup level at
 * which an owner of that port exists.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "bindguard.h"

#define BG_IPPROTO_TCP 6
#define BG_IPPROTO_UDP 17
#define BG_IPPROTO_MPTCP 262

char __license[] SEC("license") = "Dual BSD/GPL";

/* Load-time configuration (rewritten by the loader before load). */
/* Network namespace cookie of the host; 0 means "judge every namespace". */
volatile const __u64 bg_host_netns_cookie = 0;
/* Non-zero: judge binds in every network namespace, not just the host's. */
volatile const __u8 bg_all_netns = 0;
/* Minimum time between two events of the same (cgroup, port, proto, reason); 0: no limit. */
volatile const __u64 bg_event_interval_ns = 0;

/* One slot's rules: index = bg_rule_index(proto, port), value = struct bg_value. */
struct bg_rules_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BG_RULES_ENTRIES);
	__type(key, __u32);
	__type(value, struct bg_value);
};

/* One slot's owners: key = struct bg_key (a cgroup or uid for a port), value = struct bg_value. */
struct bg_owners_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BG_OWNERS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bg_key);
	__type(value, struct bg_value);
};

/* Slot -> rules array of that slot's policy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, BG_SLOTS);
	__type(key, __u32);
	__array(values, struct bg_rules_map);
} bg_rules SEC(".maps");

/* Slot -> owners hash of that slot's policy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, BG_SLOTS);
	__type(key, __u32);
	__array(values, struct bg_owners_map);
} bg_owners SEC(".maps");

/* Key 0 -> the slot in force (0 or 1). Flipping it is the whole switch to a new policy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bg_active SEC(".maps");

/* Counters: key = enum bg_counter, value = per-CPU count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BG_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} bg_counters SEC(".maps");

/* Violation events (struct bg_event) for the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} bg_events SEC(".maps");

/* Rate limiting: key = struct bg_rl_key, value = last event time and suppressed count. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct bg_rl_key);
	__type(value, struct bg_rl_value);
} bg_ratelimit SEC(".maps");

/* The daemon's record of the policy in force (struct bg_status); not read here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bg_status);
} bg_state SEC(".maps");

/* Cgroup events that did not fit bg_cgroup_events. */
__u64 bg_cgroup_events_lost = 0;

/* Cgroup creations and removals (struct bg_cgroup_event) for the daemon. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} bg_cgroup_events SEC(".maps");

/* Keep the types that only user space reads in the object's BTF, for bpf2go -type. */
const struct bg_event *unused_bg_event __attribute__((unused));
const struct bg_key *unused_bg_key __attribute__((unused));
const struct bg_value *unused_bg_value __attribute__((unused));
const enum bg_limits *unused_bg_limits __attribute__((unused));
const enum bg_kind *unused_bg_kind __attribute__((unused));
const enum bg_proto *unused_bg_proto __attribute__((unused));
const enum bg_rule_flags *unused_bg_rule_flags __attribute__((unused));
const enum bg_meta_flags *unused_bg_meta_flags __attribute__((unused));
const enum bg_reason *unused_bg_reason __attribute__((unused));
const enum bg_verdict *unused_bg_verdict __attribute__((unused));
const enum bg_counter *unused_bg_counter __attribute__((unused));
const struct bg_cgroup_event *unused_bg_cgroup_event __attribute__((unused));
const enum bg_cgroup_op *unused_bg_cgroup_op __attribute__((unused));

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&bg_counters, &idx);
	if (c)
		*c += 1;
}

/* owner_matches reports whether the task's uid or one of its cgroup ancestors owns (proto, port). */
static __always_inline int owner_matches(__u32 slot, const struct bg_value *rule, __u8 proto, __u16 port)
{
	void *owners = bpf_map_lookup_elem(&bg_owners, &slot);
	if (!owners)
		return 0;

	struct bg_key k = {.kind = BG_KIND_UID, .proto = proto, .port = port};
	if (rule->flags & BG_RULE_UID_OWNERS) {
		k.id = (__u32)bpf_get_current_uid_gid();
		if (bpf_map_lookup_elem(owners, &k))
			return 1;
	}

	k.kind = BG_KIND_CGROUP;
	__u32 lo = rule->min_depth, hi = rule->max_depth;
	for (__u32 i = 0; i <= BG_MAX_CGROUP_DEPTH; i++) {
		__u32 level = lo + i;
		if (level > hi || level > BG_MAX_CGROUP_DEPTH)
			break;
		k.id = bpf_get_current_ancestor_cgroup_id(level);
		if (!k.id) /* the task is shallower than level */
			break;
		if (bpf_map_lookup_elem(owners, &k))
			return 1;
	}
	return 0;
}

/* emit reports a violation, at most once per interval per (cgroup, port, proto, reason). */
static __always_inline void emit(struct bpf_sock_addr *ctx, __u8 family, __u16 port, __u8 proto,
				 __u8 reason, __u8 verdict, __u32 origin, __u32 generation, __u64 netns)
{
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 cgid = bpf_get_current_cgroup_id();
	__u32 suppressed = 0;

	if (bg_event_interval_ns) {
		struct bg_rl_key rk = {.cgroup_id = cgid, .port = port, .proto = proto, .reason = reason};
		struct bg_rl_value *rv = bpf_map_lookup_elem(&bg_ratelimit, &rk);
		if (rv && now - rv->last_ns < bg_event_interval_ns) {
			__sync_fetch_and_add(&rv->suppressed, 1);
			count(BG_CNT_SUPPRESSED);
			return;
		}
		if (rv) {
			/* Not an atomic exchange (that needs kernel 5.12): a count racing
			 * in between is lost from the event, never from BG_CNT_SUPPRESSED. */
			suppressed = rv->suppressed;
			rv->suppressed = 0;
			rv->last_ns = now;
		} else {
			struct bg_rl_value nv = {.last_ns = now};
			bpf_map_update_elem(&bg_ratelimit, &rk, &nv, BPF_ANY);
		}
	}

	struct bg_event *e = bpf_ringbuf_reserve(&bg_events, sizeof(*e), 0);
	if (!e) {
		count(BG_CNT_EVENTS_DROPPED);
		return;
	}
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	e->ts_ns = now;
	e->cgroup_id = cgid;
	e->netns_cookie = netns;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->origin = origin;
	e->generation = generation;
	e->suppressed = suppressed;
	e->port = port;
	e->proto = proto;
	e->family = family;
	e->reason = reason;
	e->verdict = verdict;
	e->pad[0] = 0;
	e->pad[1] = 0;
	if (family == 4) {
		__u32 *a = (__u32 *)e->addr;
		a[0] = ctx->user_ip4;
		a[1] = 0;
		a[2] = 0;
		a[3] = 0;
	} else {
		__u32 *a = (__u32 *)e->addr;
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
	}
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	bpf_ringbuf_submit(e, 0);
}

/* judge returns the program's verdict: 1 lets the bind proceed, 0 makes it fail with EPERM. */
static __always_inline int judge(struct bpf_sock_addr *ctx, __u8 family, int loopback)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	if (!port) {
		count(BG_CNT_EPHEMERAL);
		goto allow;
	}

	__u8 proto;
	switch (ctx->protocol) {
	case BG_IPPROTO_TCP:
	case BG_IPPROTO_MPTCP:
		proto = BG_PROTO_TCP;
		break;
	case BG_IPPROTO_UDP:
		proto = BG_PROTO_UDP;
		break;
	default:
		count(BG_CNT_OTHER_PROTO);
		goto allow;
	}

	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&bg_active, &zero);
	if (!active)
		goto no_policy;
	/* Read the slot once: everything below is judged by this slot's maps. */
	__u32 slot = *active & 1;
	void *rules = bpf_map_lookup_elem(&bg_rules, &slot);
	if (!rules)
		goto no_policy;
	__u32 idx = bg_rule_index(proto, port);
	struct bg_value *rule = bpf_map_lookup_elem(rules, &idx);
	if (!rule)
		goto no_policy;

	__u8 flags = rule->flags, reason;
	if (!(flags & BG_RULE_DECLARED))
		reason = BG_REASON_UNDECLARED;
	else if (flags & BG_RULE_REMOVED)
		reason = BG_REASON_REMOVED;
	else if ((flags & BG_RULE_OWNERS) && !owner_matches(slot, rule, proto, port))
		reason = BG_REASON_OWNER;
	else if ((flags & BG_RULE_LOCALHOST) && !loopback)
		reason = BG_REASON_ADDRESS;
	else
		goto allow;

	/* A violation: the slow path. */
	__u64 netns = bpf_get_netns_cookie(ctx); /* once: the event carries it too */
	if (!bg_all_netns && bg_host_netns_cookie && netns != bg_host_netns_cookie) {
		count(BG_CNT_OTHER_NETNS);
		goto allow;
	}
	__u32 meta_idx = 0;
	struct bg_value *meta = bpf_map_lookup_elem(rules, &meta_idx);
	if (!meta)
		goto no_policy;
	int audit = (meta->flags & BG_META_AUDIT) || (flags & BG_RULE_AUDIT);
	__u8 verdict = audit ? BG_VERDICT_AUDIT : BG_VERDICT_DENY;
	count((audit ? BG_CNT_AUDIT : BG_CNT_DENY) + reason - 1);
	emit(ctx, family, port, proto, reason, verdict, (flags & BG_RULE_DECLARED) ? rule->origin : 0, meta->origin, netns);
	return audit;

no_policy:
	count(BG_CNT_NO_POLICY);
allow:
	count(BG_CNT_ALLOWED);
	return 1;
}

SEC("cgroup/bind4")
int bindguard_bind4(struct bpf_sock_addr *ctx)
{
	__u32 ip = bpf_ntohl(ctx->user_ip4);
	return judge(ctx, 4, (ip >> 24) == 127);
}

SEC("cgroup/bind6")
int bindguard_bind6(struct bpf_sock_addr *ctx)
{
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1], a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];
	int loopback;

	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff)) /* ::ffff:a.b.c.d judged as a.b.c.d */
		loopback = (bpf_ntohl(a3) >> 24) == 127;
	else
		loopback = a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1);
	return judge(ctx, 6, loopback);
}

/*
 * Cgroup lifecycle. Only the fields read here are declared; CO-RE relocates
 * them against the running kernel's BTF.
 */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_root {
	int hierarchy_id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
	struct cgroup_root *root;
} __attribute__((preserve_access_index));

static __always_inline int cgroup_event(struct bpf_raw_tracepoint_args *ctx, __u32 op)
{
	struct cgroup *cgrp = (struct cgroup *)ctx->args[0];

	/* hierarchy 0 is cgroup2; cgroup v1 hierarchies are not ours */
	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)
		return 0;
	struct bg_cgroup_event *e = bpf_ringbuf_reserve(&bg_cgroup_events, sizeof(*e), 0);
	if (!e) {
		/* The daemon re-resolves every owner when it sees this grow. */
		__sync_fetch_and_add(&bg_cgroup_events_lost, 1);
		return 0;
	}
	e->id = BPF_CORE_READ(cgrp, kn, id);
	e->op = op;
	e->path_len = bpf_probe_read_kernel_str(e->path, sizeof(e->path), (const char *)ctx->args[1]);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tracepoint/cgroup_mkdir")
int bindguard_cgroup_mkdir(struct bpf_raw_tracepoint_args *ctx)
{
	return cgroup_event(ctx, BG_CGROUP_MKDIR);
}

SEC("raw_tracepoint/cgroup_rmdir")
int bindguard_cgroup_rmdir(struct bpf_raw_tracepoint_args *ctx)
{
	return cgroup_event(ctx, BG_CGROUP_RMDIR);
}

/*
 * Kernels before 5.14 have no SO_NETNS_COOKIE. There the loader attaches this
 * program to a temporary cgroup, creates one socket from a process placed
 * in it, and reads the cookie of that socket's (the host's) netns here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} bg_netns_probe SEC(".maps");

SEC("cgroup/sock_create")
int bindguard_netns_probe(struct bpf_sock *ctx)
{
	__u32 zero = 0;
	__u64 cookie = bpf_get_netns_cookie(ctx);
	bpf_map_update_elem(&bg_netns_probe, &zero, &cookie, BPF_ANY);
	return 1;
}
