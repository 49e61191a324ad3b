//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Parts of a check, alone, for scripts/bench: cgroup/bind4 and cgroup/bind6
 * programs that each make one of the kernel reads bindguard's check cannot
 * do without, and allow the bind. Measured beside the floor on the same
 * binds, they show what that read costs by itself on this machine, in the
 * same run as the rows that need it: a lower bound for those rows.
 *
 *   parts_member*:    the task's cgroup, then its storage (cgroup storage,
 *                     6.2+): what an owner or pod check reads.
 *   parts_hash*:      the task's cgroup id, then a hash lookup by it: the
 *                     same membership read where there is no cgroup storage.
 *   parts_violation*: the netns cookie and the cgroup id, and one per-CPU
 *                     count: what every violation reads (the scope, the
 *                     rate-limit key) and writes (its exact counter).
 *
 * A membership lookup that misses is counted in parts_misses, so the bench
 * can refuse a figure that measured a miss (which returns early) instead of
 * a hit. Not a policy engine: nothing here is used outside the benchmark.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* Linux 6.2's map type; older uapi headers (Debian 12's) do not name it. */
#define PARTS_MAP_TYPE_CGRP_STORAGE 32

char __license[] SEC("license") = "Dual BSD/GPL";

/* Cgroup -> a value the bench writes for the helper's cgroup. */
struct {
	__uint(type, PARTS_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} parts_members SEC(".maps");

/* Cgroup id -> a value the bench writes for the helper's cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u64);
} parts_members_hash SEC(".maps");

/* Key 0: membership lookups that missed. Key 1: the violation part's count. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} parts_counts SEC(".maps");

/* Kernel types: only the fields read here; CO-RE relocates them. */
struct cgroup;

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

struct task_struct {
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

static __always_inline void add(__u32 key, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&parts_counts, &key);
	if (c)
		*c += n;
}

/* hit makes the value's load part of the program (a value the bench wrote
 * is never 0) and counts a miss. */
static __always_inline int hit(__u64 *v)
{
	if (!v || !*v)
		add(0, 1);
	return 1;
}

static __always_inline int member(void)
{
	struct task_struct *t = bpf_get_current_task_btf();
	return hit(bpf_cgrp_storage_get(&parts_members, t->cgroups->dfl_cgrp, 0, 0));
}

static __always_inline int member_hash(void)
{
	__u64 id = bpf_get_current_cgroup_id();
	return hit(bpf_map_lookup_elem(&parts_members_hash, &id));
}

static __always_inline int violation(struct bpf_sock_addr *ctx)
{
	__u64 netns = bpf_get_netns_cookie(ctx);
	__u64 cgid = bpf_get_current_cgroup_id();
	add(1, (netns ^ cgid) | 1); /* both reads feed the one count */
	return 1;
}

SEC("cgroup/bind4")
int parts_member4(struct bpf_sock_addr *ctx)
{
	return member();
}

SEC("cgroup/bind6")
int parts_member6(struct bpf_sock_addr *ctx)
{
	return member();
}

SEC("cgroup/bind4")
int parts_hash4(struct bpf_sock_addr *ctx)
{
	return member_hash();
}

SEC("cgroup/bind6")
int parts_hash6(struct bpf_sock_addr *ctx)
{
	return member_hash();
}

SEC("cgroup/bind4")
int parts_violation4(struct bpf_sock_addr *ctx)
{
	return violation(ctx);
}

SEC("cgroup/bind6")
int parts_violation6(struct bpf_sock_addr *ctx)
{
	return violation(ctx);
}
