//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bindguard's cgroup/bind4 and cgroup/bind6 programs: judge every bind() of a
 * task below the attach cgroup against the host port registry.
 *
 * The verdict, in order (policy.Decide in Go is the reference and must agree):
 *   1. port 0 (ephemeral)                         -> allow (post_bind judges where it landed)
 *   2. not TCP, MPTCP or UDP                      -> allow
 *   3. socket outside the host netns (unless all_netns) -> allow
 *   4. no rule for (proto, port)                  -> undeclared
 *   5. rule is a removed port                     -> removed
 *   6. rule has owners, the task is none of them  -> owner (pod-pending for a pending pod and pod owners)
 *   7. rule is localhost-only, address is not loopback -> address
 *   8. --pod-ports=require, a pod that does not declare the port -> pod-undeclared (pod-pending)
 *   9.                                            -> allow
 * Step 3 is taken only once 4-8 found a violation: a bind that violates
 * nothing is allowed in any namespace, so the allowed path skips the helper.
 * A violation is audited (bind proceeds) when the node or the rule is in
 * audit mode or the reason is pod-pending, denied (EPERM) otherwise, and
 * reported on the ring buffer.
 *
 * The cost of a check depends neither on the registry size nor on where the
 * owners sit: the rule is an array element indexed by (protocol, port); an
 * owner-restricted port adds one lookup of the task cgroup's membership
 * (cgroup storage, or a hash by cgroup id before 6.2) and a bit test, and a
 * uid lookup only when uids are listed and the cgroup is not a member. A
 * violation whose event rate limiting folds (the usual case in a flood: the
 * same key again) costs a per-CPU lookup more (bg_fold), not a hash lookup.
 *
 * Two variants of every program are built from the same code: *_stg use
 * BPF_MAP_TYPE_CGRP_STORAGE (6.2+), *_hash a hash keyed by cgroup id. The
 * loader loads one variant.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

#include "bindguard.h"

#define BG_IPPROTO_TCP 6
#define BG_IPPROTO_UDP 17
#define BG_IPPROTO_MPTCP 262
#define BG_NSEC_PER_SEC 1000000000ULL

/* Linux 6.2's map type; older uapi headers (Debian 12's) do not name it. */
#define BG_MAP_TYPE_CGRP_STORAGE 32

char __license[] SEC("license") = "Dual BSD/GPL";

/* Load-time configuration (rewritten by the loader before load). */
/* Network namespace cookie of the host; 0 means "judge every namespace". */
volatile const __u64 bg_host_netns_cookie = 0;
/* Non-zero: judge binds in every network namespace, not just the host's. */
volatile const __u8 bg_all_netns = 0;
/* Minimum time between two events of the same (cgroup, port, proto, reason); 0: no limit. */
volatile const __u64 bg_event_interval_ns = 0;

/* One slot's pairs: key = struct bg_key (a uid owner of a set, a port a pod declares), value = 1. */
struct bg_pairs_map {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BG_PAIRS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct bg_key);
	__type(value, __u8);
};

/* Both slots' rules: index = slot * BG_RULES_ENTRIES + bg_rule_index(proto,
 * port), value = struct bg_value. One array, not a map per slot: a bind's
 * rule load waits for no map pointer (see lookup_rule). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, BG_SLOTS * BG_RULES_ENTRIES);
	__type(key, __u32);
	__type(value, struct bg_value);
} bg_rules SEC(".maps");

/* Slot -> pairs hash of that slot's policy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, BG_SLOTS);
	__type(key, __u32);
	__array(values, struct bg_pairs_map);
} bg_pairs SEC(".maps");

/* Key 0 -> the slot in force (0 or 1). Flipping it is the whole switch to a new policy. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bg_active SEC(".maps");

/* Cgroup -> struct bg_member, in the cgroup's own storage (6.2+). */
struct {
	__uint(type, BG_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct bg_member);
} bg_members SEC(".maps");

/* Cgroup id -> struct bg_member, where the kernel has no cgroup storage. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, BG_MEMBERS_MAX_ENTRIES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct bg_member);
} bg_members_hash SEC(".maps");

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

/* Per-cgroup event budget: key = cgroup id, value = struct bg_bucket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct bg_bucket);
} bg_buckets SEC(".maps");

/*
 * The rate-limit key this CPU folded last, and until when it folds. A flood
 * is mostly one key again and again: its violations are folded here, one
 * per-CPU lookup, without the LRU lookup or the fine clock. The folds
 * counted here leave it two ways, both exact: when this CPU next takes the
 * slow path for another key, they go to their key's LRU entry; when any CPU
 * sends the key's next event, it collects them from every CPU (so the event
 * carries all the folds since the last one). Only where the kernel can read
 * another CPU's value (bpf_map_lookup_percpu_elem, 5.19+); before, every
 * violation takes the slow path. BG_CNT_SUPPRESSED and BG_CNT_THROTTLED
 * count every fold at once. The totals are exact; in two races the split
 * is not: a collector that reads the key just as its CPU switches to
 * another may take the new key's first folds into the old key's event, and
 * two takers of the same folds leave a debt the next folds pay (see take).
 *
 * A fold is a plain increment of `folded`, which only this CPU writes: no
 * locked instruction on the path a flood takes (a locked add was its
 * largest part in a profile: it waits for every store before it). Takers,
 * on any CPU, add what they take to `taken` atomically; what is pending is
 * the difference.
 * Like the counters, a fold can be lost only if a bind on this CPU is
 * preempted inside the increment by another bind that folds.
 */
struct bg_fold {
	struct bg_rl_key key;
	__u64 until;      /* rate-limit clock: the key folds while now < until */
	__u32 folded;     /* folds counted here, ever; written by this CPU only */
	__u32 taken;      /* of them, taken into an event or an LRU entry; by any CPU, atomically */
	__u32 throttled;  /* the window is the bucket's, not the key's interval */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bg_fold);
} bg_fold SEC(".maps");

/* The CPUs whose folds an event collects: at most this many (NR_CPUS of a
 * large distribution kernel is 8192). Folds on a CPU beyond reach the key's
 * LRU entry when that CPU next changes key. */
#define BG_FOLD_MAX_CPUS 1024

/*
 * The socket of the last bind(port 0) on this CPU, by its cookie: bind4/6
 * write it for port 0 only (an explicit bind pays nothing), and post_bind
 * judges only the socket it names. A cookie is never reused, so a stale
 * entry matches nothing; a thread that migrates between the two hooks is
 * taken for an explicit bind (judged already), never for an autobind.
 */
struct bg_last_bind {
	__u64 cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bg_last_bind);
} bg_last_bind SEC(".maps");

/* The daemon's record of the policy in force (struct bg_status); not read here. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct bg_status);
} bg_state SEC(".maps");

/* Cgroup events that did not fit bg_cgroup_events. */
__u64 bg_cgroup_events_lost = 0;

/* Cgroup creations and removals (struct bg_cgroup_event) for the daemon:
 * every cgroup2 mkdir and rmdir of the host, so room for a burst of ~3,600
 * (a loss makes the daemon rescan: bg_cgroup_events_lost). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} bg_cgroup_events SEC(".maps");

/* Keep the types that only user space reads in the object's BTF, for bpf2go -type. */
const struct bg_event *unused_bg_event __attribute__((unused));
const struct bg_key *unused_bg_key __attribute__((unused));
const struct bg_value *unused_bg_value __attribute__((unused));
const struct bg_member *unused_bg_member __attribute__((unused));
const enum bg_limits *unused_bg_limits __attribute__((unused));
const enum bg_pair_kind *unused_bg_pair_kind __attribute__((unused));
const enum bg_proto *unused_bg_proto __attribute__((unused));
const enum bg_family *unused_bg_family __attribute__((unused));
const enum bg_mode *unused_bg_mode __attribute__((unused));
const enum bg_rule_flags *unused_bg_rule_flags __attribute__((unused));
const enum bg_meta_flags *unused_bg_meta_flags __attribute__((unused));
const enum bg_member_flags *unused_bg_member_flags __attribute__((unused));
const enum bg_reason *unused_bg_reason __attribute__((unused));
const enum bg_verdict *unused_bg_verdict __attribute__((unused));
const enum bg_counter *unused_bg_counter __attribute__((unused));
const struct bg_cgroup_event *unused_bg_cgroup_event __attribute__((unused));
const enum bg_cgroup_op *unused_bg_cgroup_op __attribute__((unused));

/*
 * Kernel types. Only the fields read here are declared; CO-RE relocates
 * them against the running kernel's BTF.
 */
struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup_root {
	int hierarchy_id;
} __attribute__((preserve_access_index));

struct cgroup;

struct cgroup_subsys_state {
	struct cgroup *cgroup;
	struct cgroup_subsys_state *parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct cgroup_subsys_state self;
	struct kernfs_node *kn;
	struct cgroup_root *root;
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp;
} __attribute__((preserve_access_index));

typedef struct {
	__u32 val;
} kuid_t;

struct cred {
	kuid_t uid;
} __attribute__((preserve_access_index));

struct task_struct {
	struct css_set *cgroups;
	const struct cred *cred;
} __attribute__((preserve_access_index));

static __always_inline void count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&bg_counters, &idx);
	if (c)
		*c += 1;
}

/* The judging policy: its slot. */
struct policy {
	__u32 slot;
};

/* load_policy reads the slot in force once; everything is judged by that slot. */
static __always_inline int load_policy(struct policy *p)
{
	__u32 zero = 0;
	__u32 *active = bpf_map_lookup_elem(&bg_active, &zero);
	if (!active)
		return 0;
	p->slot = *active & 1;
	return 1;
}

/* slot_index returns the bg_rules index of a slot's entry idx. A branch,
 * not arithmetic: the CPU predicts it and loads the rule without waiting
 * for the slot number, whose line is as cold as the rule's. */
static __always_inline __u32 slot_index(struct policy *p, __u32 idx)
{
	if (p->slot & 1) {
		asm volatile("" ::: "memory"); /* keep the branch (no select) */
		idx += BG_RULES_ENTRIES;
	}
	return idx;
}

/* lookup_rule returns the rule for (proto, port); an undeclared port's has no BG_RULE_DECLARED. */
static __always_inline struct bg_value *lookup_rule(struct policy *p, __u8 proto, __u16 port)
{
	__u32 idx = slot_index(p, bg_rule_index(proto, port));
	return bpf_map_lookup_elem(&bg_rules, &idx);
}

/* proto_of maps the socket protocol to enum bg_proto, or 0 for one not judged. */
static __always_inline __u8 proto_of(__u32 protocol)
{
	switch (protocol) {
	case BG_IPPROTO_TCP:
	case BG_IPPROTO_MPTCP:
		return BG_PROTO_TCP;
	case BG_IPPROTO_UDP:
		return BG_PROTO_UDP;
	}
	return 0;
}

/* member_of returns the current task's cgroup membership, or NULL. */
static __always_inline struct bg_member *member_of(int storage)
{
	if (storage) {
		struct task_struct *t = bpf_get_current_task_btf();
		return bpf_cgrp_storage_get(&bg_members, t->cgroups->dfl_cgrp, 0, 0);
	}
	__u64 id = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&bg_members_hash, &id);
}

/* member_slot returns the membership's part for the judging policy (its
 * slot, and generation: the rule's), or NULL when stale. */
static __always_inline struct bg_member_slot *member_slot(struct bg_member *m, struct policy *p, __u32 generation)
{
	if (!m)
		return 0;
	struct bg_member_slot *ms = &m->slot[p->slot & 1];
	if (ms->generation != generation)
		return 0;
	/* Keep the compiler from folding the NULL test of the result into the
	 * generation compare: the verifier must see a pointer tested for NULL. */
	barrier_var(ms);
	return ms;
}

/* in_set reports whether the membership holds owner set `set`. */
static __always_inline int in_set(struct bg_member_slot *ms, __u16 set)
{
	if (!ms || set >= BG_OWNER_SETS)
		return 0;
	__u32 word = set >> 6;
	/* Keep the mask in the object: clang drops it where it knows set <
	 * BG_OWNER_SETS, and the 5.10 and 6.1 verifiers lose that bound when
	 * the register is spilled and filled on the way. */
	barrier_var(word);
	return (ms->bits[word & (BG_SET_WORDS - 1)] >> (set & 63)) & 1;
}

/* has_pair looks a pair up in the judging slot's pairs map. */
static __always_inline int has_pair(struct policy *p, struct bg_key *k)
{
	void *pairs = bpf_map_lookup_elem(&bg_pairs, &p->slot);
	return pairs && bpf_map_lookup_elem(pairs, k);
}

/*
 * current_uid returns the task's real uid (in the initial user namespace,
 * as bpf_get_current_uid_gid gives it). Where cgroup storage is (6.2+), so
 * is bpf_get_current_task_btf (5.15+): the uid is read from the task's
 * credentials, which costs two loads, not the helper's two id mappings.
 * kuid_t values are the initial namespace's ids.
 */
static __always_inline __u32 current_uid(int storage)
{
	if (storage)
		return bpf_get_current_task_btf()->cred->uid.val;
	return (__u32)bpf_get_current_uid_gid();
}

/* the_uid_owns reports whether the rule holds one uid (rule->uid, + 1) and
 * it is the task's: the uid check the allowed path makes alone. */
static __always_inline int the_uid_owns(struct bg_value *rule, int storage)
{
	return rule->uid && rule->uid == current_uid(storage) + 1;
}

/* uid_owns reports whether the task's real uid is an owner of the rule:
 * the one uid the rule holds, or a pair of its set. */
static __always_inline int uid_owns(struct policy *p, struct bg_value *rule, int storage)
{
	if (rule->uid)
		return the_uid_owns(rule, storage);
	struct bg_key k = {.kind = BG_PAIR_UID, .set = rule->set, .id = current_uid(storage)};
	return has_pair(p, &k);
}

/* pod_declares reports whether the pod of the membership declares (proto, port). */
static __always_inline int pod_declares(struct policy *p, struct bg_member_slot *ms, __u8 proto, __u16 port)
{
	struct bg_key k = {.kind = BG_PAIR_POD_PORT, .proto = proto, .port = port, .id = ms->pod};
	return has_pair(p, &k);
}

static __always_inline __u16 member_flags(struct bg_member_slot *ms)
{
	return ms ? ms->flags : 0;
}

/*
 * violation returns the reason a bind of (proto, port) breaks the rule, or
 * BG_REASON_NONE. The membership is looked up only for owner-restricted
 * rules and pod-port checks, unless `looked` says *msp already holds it;
 * *msp returns it when it was.
 */
static __always_inline __u8 violation(struct policy *p, struct bg_value *rule, __u8 proto, __u16 port,
				      int lo, int storage, struct bg_member_slot **msp, int looked)
{
	__u8 flags = rule->flags;
	if (!(flags & BG_RULE_DECLARED))
		return BG_REASON_UNDECLARED;
	if (flags & BG_RULE_REMOVED)
		return BG_REASON_REMOVED;
	struct bg_member_slot *ms = looked ? *msp : 0;
	if (flags & BG_RULE_OWNERS) {
		/* Cheapest first: the one uid the rule holds (a helper call and a
		 * compare), then the membership (none for a list of uids alone: it
		 * has no set bit), then the uid pairs (a hash lookup). */
		int uids = flags & BG_RULE_UID_OWNERS;
		int owns = uids && rule->uid && uid_owns(p, rule, storage);
		if (!owns && rule->set < BG_OWNER_SETS) {
			if (!looked)
				ms = member_slot(member_of(storage), p, rule->generation);
			looked = 1;
			owns = in_set(ms, rule->set);
		}
		if (!owns && uids && !rule->uid)
			owns = uid_owns(p, rule, storage);
		if (!owns) {
			if (!looked) /* for the event's member flags */
				ms = member_slot(member_of(storage), p, rule->generation);
			*msp = ms;
			if ((flags & BG_RULE_POD_OWNERS) && (member_flags(ms) & BG_MEMBER_PENDING))
				return BG_REASON_POD_PENDING;
			return BG_REASON_OWNER;
		}
	}
	if ((flags & BG_RULE_LOCALHOST) && !lo)
		return BG_REASON_ADDRESS;
	if (rule->node & BG_META_POD_PORTS) {
		if (!looked)
			ms = member_slot(member_of(storage), p, rule->generation);
		*msp = ms;
		__u16 mf = member_flags(ms);
		if (mf & BG_MEMBER_PENDING)
			return BG_REASON_POD_PENDING;
		if ((mf & BG_MEMBER_POD) && !pod_declares(p, ms, proto, port))
			/* pod id 0: the pod's declared ports are not known yet */
			return ms->pod ? BG_REASON_POD_UNDECLARED : BG_REASON_POD_PENDING;
	}
	return BG_REASON_NONE;
}

/*
 * rl_now is the rate limiter's clock: the coarse monotonic clock (a tick's
 * resolution, no clock-source read) where the kernel has it (5.11+), the
 * monotonic clock before. Only rate-limit state holds its readings; events
 * carry the boot clock.
 */
static __always_inline __u64 rl_now(void)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_ktime_get_coarse_ns))
		return bpf_ktime_get_coarse_ns();
	return bpf_ktime_get_ns();
}

/*
 * bucket_take takes one event from the GCRA bucket key (tat: the theoretical
 * arrival time of the next event), and reports whether there was one: an
 * event passes when now >= tat - (burst-1)*step, and then tat = max(tat, now)
 * + step. When there was none, *retry is the first time one may pass. Not
 * atomic: concurrent binds may let one or two more through.
 */
static __always_inline int bucket_take(__u64 key, __u64 step, __u64 burst, __u64 now, __u64 *retry)
{
	struct bg_bucket *b = bpf_map_lookup_elem(&bg_buckets, &key);
	if (!b) {
		struct bg_bucket nb = {.tat = now + step};
		bpf_map_update_elem(&bg_buckets, &key, &nb, BPF_ANY);
		return 1;
	}
	__u64 tat = b->tat > now ? b->tat : now;
	if (tat - now > (burst - 1) * step) {
		*retry = tat - (burst - 1) * step;
		return 0;
	}
	b->tat = tat + step;
	return 1;
}

static __always_inline int same_key(const struct bg_rl_key *a, const struct bg_rl_key *b)
{
	return a->cgroup_id == b->cgroup_id && a->port == b->port && a->proto == b->proto && a->reason == b->reason;
}

/* fold_here remembers that key folds on this CPU until `until`. */
static __always_inline void fold_here(struct bg_fold *f, const struct bg_rl_key *rk, __u64 until, __u32 throttled)
{
	if (!f)
		return;
	f->key = *rk;
	f->until = until;
	f->throttled = throttled;
}

/* have_fold reports whether the per-CPU fold cache is used on this kernel. */
static __always_inline int have_fold(void)
{
	return bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_map_lookup_percpu_elem);
}

/* pending is what a fold cache holds, not yet taken: negative after two
 * takers took the same folds (see take). */
static __always_inline __s32 pending(const struct bg_fold *f)
{
	return (__s32)(f->folded - f->taken);
}

/*
 * take takes what it reads pending in a fold cache, atomically (a fold
 * racing in stays pending), and returns it. The read and the addition are
 * two steps (an atomic fetch is 5.12+): two takers racing on one CPU's
 * cache (two events of the key at once, or a collector and that CPU
 * changing key) may both take the same folds and leave pending below zero.
 * A negative count takes nothing, and the folds that follow pay it back:
 * each fold is still carried by exactly one event in the sum, only by an
 * earlier one than its own.
 */
static __always_inline __u32 take(struct bg_fold *f)
{
	__s32 n = pending(f);
	if (n <= 0)
		return 0;
	__sync_fetch_and_add(&f->taken, n);
	return n;
}

/* flush moves the folds counted on this CPU for another key than rk to
 * that key's LRU entry. */
static __always_inline void flush(struct bg_fold *f, const struct bg_rl_key *rk)
{
	if (!f || pending(f) <= 0 || same_key(&f->key, rk))
		return;
	__u32 n = take(f);
	struct bg_rl_value *fv = bpf_map_lookup_elem(&bg_ratelimit, &f->key);
	if (fv) {
		__sync_fetch_and_add(&fv->suppressed, n);
	} else {
		/* Folded by the bucket before the key had an entry. */
		struct bg_rl_value nv = {.last_ns = 0, .suppressed = n};
		bpf_map_update_elem(&bg_ratelimit, &f->key, &nv, BPF_NOEXIST);
	}
}

/*
 * bg_take_cpu takes the folds of the key (cgroup_id, port, proto, reason)
 * from one CPU's fold cache: how many, or -1 past the last possible CPU.
 * A global function, verified once: to the loop in bg_collect a call of it
 * is one instruction whose result is any number, so the verifier walks
 * 1,024 short iterations, not 1,024 times this body (6.1 gave up at a
 * million instructions on the loop written out).
 */
__attribute__((noinline)) int bg_take_cpu(__u32 cpu, __u64 cgroup_id, __u32 port, __u32 proto, __u32 reason)
{
	if (!have_fold())
		return -1;
	struct bg_rl_key key = {.cgroup_id = cgroup_id, .port = port, .proto = proto, .reason = reason};
	__u32 zero = 0;
	struct bg_fold *f = bpf_map_lookup_percpu_elem(&bg_fold, &zero, cpu);
	if (!f)
		return -1;
	return same_key(&f->key, &key) ? take(f) : 0;
}

/*
 * bg_collect takes the key's folds from every CPU's fold cache and returns
 * how many. Global, like bg_take_cpu; both take scalars, which global
 * functions take on every kernel (pointers only since 5.12).
 */
__attribute__((noinline)) int bg_collect(__u64 cgroup_id, __u32 port, __u32 proto, __u32 reason)
{
	__u32 n = 0;
	for (__u32 cpu = 0; cpu < BG_FOLD_MAX_CPUS; cpu++) {
		int got = bg_take_cpu(cpu, cgroup_id, port, proto, reason);
		if (got < 0)
			break;
		n += got;
	}
	return n;
}

/*
 * rate_limited reports whether the event for this key is folded into a
 * later one: by the per-key interval, or by the cgroup's or the user's token
 * bucket. It returns in *suppressed what earlier events of the key this one
 * carries. The per-CPU fold cache answers a repeated key first.
 */
static __always_inline int rate_limited(struct bg_rl_key *rk, __u32 *suppressed)
{
	__u64 now = rl_now();
	__u32 zero = 0;
	struct bg_fold *f = have_fold() ? bpf_map_lookup_elem(&bg_fold, &zero) : 0;
	if (f && now < f->until && same_key(&f->key, rk)) {
		f->folded += 1;
		if (f->throttled)
			count(BG_CNT_THROTTLED);
		count(BG_CNT_SUPPRESSED);
		return 1;
	}

	flush(f, rk);
	struct bg_rl_value *rv = bpf_map_lookup_elem(&bg_ratelimit, rk);
	if (rv && now - rv->last_ns < bg_event_interval_ns) {
		fold_here(f, rk, rv->last_ns + bg_event_interval_ns, 0);
		goto fold;
	}

	/* The cgroup's bucket, and the user's unless root, whatever the key. */
	__u64 retry = 0;
	if (!bucket_take(rk->cgroup_id, BG_NSEC_PER_SEC / BG_EVENTS_PER_SEC, BG_EVENT_BURST, now, &retry))
		goto throttled;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	if (uid && !bucket_take((1ULL << 63) | uid, BG_NSEC_PER_SEC / BG_UID_EVENTS_PER_SEC, BG_UID_EVENT_BURST, now, &retry))
		goto throttled;

	/* The event goes out: it carries the key's folds, here and on every CPU. */
	*suppressed = bg_collect(rk->cgroup_id, rk->port, rk->proto, rk->reason);
	if (rv) {
		/* Not an atomic exchange (that needs kernel 5.12): a count racing
		 * in between is lost from the event, never from BG_CNT_SUPPRESSED. */
		*suppressed += rv->suppressed;
		rv->suppressed = 0;
		rv->last_ns = now;
	} else {
		struct bg_rl_value nv = {.last_ns = now};
		bpf_map_update_elem(&bg_ratelimit, rk, &nv, BPF_ANY);
	}
	fold_here(f, rk, now + bg_event_interval_ns, 0);
	return 0;

throttled:
	count(BG_CNT_THROTTLED);
	fold_here(f, rk, retry, 1);
fold:
	if (f)
		/* Counted in the fold cache, whose key is now rk. */
		f->folded += 1;
	else if (rv)
		__sync_fetch_and_add(&rv->suppressed, 1);
	else {
		/* Held back by the bucket before the key was ever seen: start the
		 * key's count so the next event carries this one. */
		struct bg_rl_value nv = {.last_ns = 0, .suppressed = 1};
		bpf_map_update_elem(&bg_ratelimit, rk, &nv, BPF_NOEXIST);
	}
	count(BG_CNT_SUPPRESSED);
	return 1;
}

/* What fill_event needs to know of one violation. */
struct violation {
	__u64 netns;
	__u32 origin;
	__u32 generation;
	__u16 port;
	__u16 member_flags;
	__u8 proto;
	__u8 family;
	__u8 reason;
	__u8 verdict;
	__u32 addr[4]; /* network byte order; filled only for an event that is sent */
};

static __always_inline void fill_event(struct bg_event *e, const struct violation *v, __u64 cgid, __u32 suppressed)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	e->ts_ns = bpf_ktime_get_boot_ns();
	e->cgroup_id = cgid;
	e->netns_cookie = v->netns;
	e->pid = pid_tgid >> 32;
	e->tid = (__u32)pid_tgid;
	e->uid = (__u32)uid_gid;
	e->gid = uid_gid >> 32;
	e->origin = v->origin;
	e->generation = v->generation;
	e->suppressed = suppressed;
	e->port = v->port;
	e->proto = v->proto;
	e->family = v->family;
	e->reason = v->reason;
	e->verdict = v->verdict;
	e->member_flags = v->member_flags;
	__builtin_memcpy(e->addr, v->addr, sizeof(e->addr));
	e->pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

/*
 * folded counts a violation and reports whether rate limiting folds its
 * event into a later one; when not, *suppressed is what the event carries.
 */
static __always_inline int folded(const struct violation *v, __u64 cgid, __u32 *suppressed)
{
	count((v->verdict == BG_VERDICT_AUDIT ? BG_CNT_AUDIT : BG_CNT_DENY) + v->reason - 1);
	if (!bg_event_interval_ns)
		return 0;
	struct bg_rl_key rk = {.cgroup_id = cgid, .port = v->port, .proto = v->proto, .reason = v->reason};
	return rate_limited(&rk, suppressed);
}

/* send puts the event of a violation on the ring buffer. */
static __always_inline void send(const struct violation *v, __u64 cgid, __u32 suppressed)
{
	struct bg_event *e = bpf_ringbuf_reserve(&bg_events, sizeof(*e), 0);
	if (!e) {
		count(BG_CNT_EVENTS_DROPPED);
		return;
	}
	fill_event(e, v, cgid, suppressed);
	bpf_ringbuf_submit(e, 0);
}

/* in_scope reports whether a socket's network namespace is judged. */
static __always_inline int in_scope(__u64 netns)
{
	return bg_all_netns || !bg_host_netns_cookie || netns == bg_host_netns_cookie;
}

/* verdict_of says whether a violation is audited or denied: from the
 * entry alone, which carries the node's mode (bg_value.node). */
static __always_inline __u8 verdict_of(struct bg_value *rule, __u8 reason)
{
	int audit = (rule->node & BG_META_AUDIT) || (rule->flags & BG_RULE_AUDIT) ||
		    reason == BG_REASON_POD_PENDING;
	return audit ? BG_VERDICT_AUDIT : BG_VERDICT_DENY;
}

static __always_inline void remember_autobind(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct bg_last_bind *lb = bpf_map_lookup_elem(&bg_last_bind, &zero);
	if (lb)
		lb->cookie = bpf_get_socket_cookie(ctx);
}

/* loopback reports whether an address (network byte order) is a loopback
 * address: 127/8, ::1, or ::ffff:127.x.y.z judged as 127.x.y.z. */
static __always_inline int loopback(__u8 family, __u32 a0, __u32 a1, __u32 a2, __u32 a3)
{
	if (family == BG_FAMILY_INET)
		return (bpf_ntohl(a0) >> 24) == 127;
	if (a0 == 0 && a1 == 0 && a2 == bpf_htonl(0xffff))
		return (bpf_ntohl(a3) >> 24) == 127;
	return a0 == 0 && a1 == 0 && a2 == 0 && a3 == bpf_htonl(1);
}

/* The address of a bind, read from the context only where needed: only a
 * localhost-only rule, and an event that is sent, read it. */
#define CTX_ADDR(ctx, family, i)                                                                   \
	((family) == BG_FAMILY_INET ? ((i) == 0 ? (ctx)->user_ip4 : 0) : (ctx)->user_ip6[i])
#define SK_ADDR(sk, family, i) ((family) == BG_FAMILY_INET ? ((i) == 0 ? (sk)->src_ip4 : 0) : (sk)->src_ip6[i])

/* report counts a violation and sends its event, unless rate limiting folds it. */
#define REPORT(v, ADDR, src)                                                                       \
	do {                                                                                       \
		__u64 cgid_ = bpf_get_current_cgroup_id();                                         \
		__u32 suppressed_ = 0;                                                             \
		if (!folded(&(v), cgid_, &suppressed_)) {                                          \
			(v).addr[0] = ADDR(src, (v).family, 0);                                    \
			(v).addr[1] = ADDR(src, (v).family, 1);                                    \
			(v).addr[2] = ADDR(src, (v).family, 2);                                    \
			(v).addr[3] = ADDR(src, (v).family, 3);                                    \
			send(&(v), cgid_, suppressed_);                                            \
		}                                                                                  \
	} while (0)

/*
 * allowed_fast reports whether the bind is allowed by the checks most binds
 * need alone: a declared port with nothing more to check, or an owner
 * check that finds the binder an owner (the one uid the rule holds, or its
 * cgroup in the rule's set). Anything else, allowed or not, is decided in
 * full by judge_slow; *msp and *looked hand it the membership if it was
 * looked up here.
 */
static __always_inline int allowed_fast(struct policy *p, struct bg_value *rule, int storage,
					struct bg_member_slot **msp, int *looked)
{
	__u8 flags = rule->flags;
	if ((flags & (BG_RULE_DECLARED | BG_RULE_REMOVED | BG_RULE_LOCALHOST)) != BG_RULE_DECLARED ||
	    (rule->node & BG_META_POD_PORTS))
		return 0;
	if (!(flags & BG_RULE_OWNERS))
		return 1;
	if ((flags & BG_RULE_UID_OWNERS) && the_uid_owns(rule, storage))
		return 1;
	__u16 set = rule->set;
	if (set >= BG_OWNER_SETS)
		return 0;
	*msp = member_slot(member_of(storage), p, rule->generation);
	*looked = 1;
	return in_set(*msp, set);
}

/*
 * judge_slow decides a bind allowed_fast did not allow: it finds the
 * violation, if any, and reports it. Not inlined into the programs (see
 * BG_JUDGE_SLOW), so the allowed path keeps its registers. pp is proto << 16
 * | port, and bit 24 says ms was looked up.
 */
static __always_inline int judge_slow(struct bpf_sock_addr *ctx, struct policy *p, struct bg_value *rule,
				      struct bg_member_slot *ms, __u32 pp, __u8 family, int storage)
{
	__u8 proto = (pp >> 16) & 0xff;
	__u16 port = pp & 0xffff;
	int lo = (rule->flags & BG_RULE_LOCALHOST) &&
		 loopback(family, CTX_ADDR(ctx, family, 0), CTX_ADDR(ctx, family, 1), CTX_ADDR(ctx, family, 2),
			  CTX_ADDR(ctx, family, 3));
	__u8 reason = violation(p, rule, proto, port, lo, storage, &ms, (pp >> 24) & 1);
	if (reason == BG_REASON_NONE)
		goto allow;

	if (!rule->generation) { /* a slot never written */
		count(BG_CNT_NO_POLICY);
		goto allow;
	}
	struct violation v = {
		.netns = bpf_get_netns_cookie(ctx), /* once: the event carries it too */
		.origin = (rule->flags & BG_RULE_DECLARED) ? rule->origin : 0,
		.generation = rule->generation,
		.port = port,
		.member_flags = member_flags(ms),
		.proto = proto,
		.family = family,
		.reason = reason,
		.verdict = verdict_of(rule, reason),
	};
	if (!in_scope(v.netns)) {
		count(BG_CNT_OTHER_NETNS);
		goto allow;
	}
	REPORT(v, CTX_ADDR, ctx);
	return v.verdict == BG_VERDICT_AUDIT;
allow:
	count(BG_CNT_ALLOWED);
	return 1;
}

/* The slow path of each program: a BPF-to-BPF call (at most five
 * arguments), with the family and the membership variant fixed. */
#define BG_JUDGE_SLOW(name, family, storage)                                                       \
	static __attribute__((noinline)) int name(struct bpf_sock_addr *ctx, struct policy *p,       \
						  struct bg_value *rule, struct bg_member_slot *ms,   \
						  __u32 pp)                                           \
	{                                                                                          \
		return judge_slow(ctx, p, rule, ms, pp, family, storage);                          \
	}

BG_JUDGE_SLOW(judge_slow4_stg, BG_FAMILY_INET, 1)
BG_JUDGE_SLOW(judge_slow6_stg, BG_FAMILY_INET6, 1)
BG_JUDGE_SLOW(judge_slow4_hash, BG_FAMILY_INET, 0)
BG_JUDGE_SLOW(judge_slow6_hash, BG_FAMILY_INET6, 0)

/* judge returns the program's verdict: 1 lets the bind proceed, 0 makes it fail with EPERM. */
static __always_inline int judge(struct bpf_sock_addr *ctx, __u8 family, int storage)
{
	__u16 port = bpf_ntohs((__u16)ctx->user_port);
	if (!port) {
		remember_autobind(ctx);
		count(BG_CNT_EPHEMERAL);
		goto allow;
	}
	__u8 proto = proto_of(ctx->protocol);
	if (!proto) {
		count(BG_CNT_OTHER_PROTO);
		goto allow;
	}
	struct policy p;
	if (!load_policy(&p))
		goto no_policy;
	struct bg_value *rule = lookup_rule(&p, proto, port);
	if (!rule)
		goto no_policy;
	struct bg_member_slot *ms = 0;
	int looked = 0;
	if (allowed_fast(&p, rule, storage, &ms, &looked))
		goto allow;
	__u32 pp = (__u32)looked << 24 | (__u32)proto << 16 | port;
	if (storage)
		return family == BG_FAMILY_INET ? judge_slow4_stg(ctx, &p, rule, ms, pp)
						: judge_slow6_stg(ctx, &p, rule, ms, pp);
	return family == BG_FAMILY_INET ? judge_slow4_hash(ctx, &p, rule, ms, pp)
					: judge_slow6_hash(ctx, &p, rule, ms, pp);

no_policy:
	count(BG_CNT_NO_POLICY);
allow:
	count(BG_CNT_ALLOWED);
	return 1;
}

/* The programs: each hook and family, in both membership variants. */
#define BG_PROGRAM(hook, name, ctx_type, fn, family, storage)                                     \
	SEC(hook) int name(ctx_type *ctx)                                                          \
	{                                                                                          \
		return fn(ctx, family, storage);                                                   \
	}

BG_PROGRAM("cgroup/bind4", bindguard_bind4_stg, struct bpf_sock_addr, judge, BG_FAMILY_INET, 1)
BG_PROGRAM("cgroup/bind6", bindguard_bind6_stg, struct bpf_sock_addr, judge, BG_FAMILY_INET6, 1)
BG_PROGRAM("cgroup/bind4", bindguard_bind4_hash, struct bpf_sock_addr, judge, BG_FAMILY_INET, 0)
BG_PROGRAM("cgroup/bind6", bindguard_bind6_hash, struct bpf_sock_addr, judge, BG_FAMILY_INET6, 0)

/*
 * post_bind: after bind() took a port, and only for a bind(0) whose port the
 * kernel chose (bind4/6 judged every explicit one), judge the port it got.
 * A kernel-chosen port is never undeclared (that is what ephemeral ports
 * are); it violates when the registry restricts it and this binder may not
 * bind it: owners, localhost-only, removed. Autobinds that do not go through
 * bind() (listen, connect, sendto) reach no hook: the daemon keeps restricted
 * ports out of the kernel's choice with ip_local_reserved_ports.
 */
static __always_inline int post_bind(struct bpf_sock *sk, __u8 family, int storage)
{
	__u32 zero = 0;
	struct bg_last_bind *lb = bpf_map_lookup_elem(&bg_last_bind, &zero);
	if (!lb || !lb->cookie || lb->cookie != bpf_get_socket_cookie(sk))
		return 1; /* an explicit bind: judged by bind4/6 */
	lb->cookie = 0; /* consumed */
	__u8 proto = proto_of(sk->protocol);
	if (!proto)
		return 1;
	__u16 port = (__u16)sk->src_port;
	struct policy p;
	if (!load_policy(&p))
		return 1;
	struct bg_value *rule = lookup_rule(&p, proto, port);
	if (!rule || !(rule->flags & BG_RULE_DECLARED))
		return 1;
	int lo = (rule->flags & BG_RULE_LOCALHOST) &&
		 loopback(family, SK_ADDR(sk, family, 0), SK_ADDR(sk, family, 1), SK_ADDR(sk, family, 2),
			  SK_ADDR(sk, family, 3));
	struct bg_member_slot *ms = 0;
	__u8 reason = violation(&p, rule, proto, port, lo, storage, &ms, 0);
	if (reason == BG_REASON_NONE || reason == BG_REASON_POD_PENDING)
		return 1;
	struct violation v = {
		.netns = bpf_get_netns_cookie(sk),
		.origin = rule->origin,
		.generation = rule->generation,
		.port = port,
		.member_flags = member_flags(ms),
		.proto = proto,
		.family = family,
		.reason = BG_REASON_AUTOBIND,
		.verdict = verdict_of(rule, reason),
	};
	if (!in_scope(v.netns))
		return 1;
	REPORT(v, SK_ADDR, sk);
	return v.verdict == BG_VERDICT_AUDIT;
}

BG_PROGRAM("cgroup/post_bind4", bindguard_post_bind4_stg, struct bpf_sock, post_bind, BG_FAMILY_INET, 1)
BG_PROGRAM("cgroup/post_bind6", bindguard_post_bind6_stg, struct bpf_sock, post_bind, BG_FAMILY_INET6, 1)
BG_PROGRAM("cgroup/post_bind4", bindguard_post_bind4_hash, struct bpf_sock, post_bind, BG_FAMILY_INET, 0)
BG_PROGRAM("cgroup/post_bind6", bindguard_post_bind6_hash, struct bpf_sock, post_bind, BG_FAMILY_INET6, 0)

/*
 * Cgroup lifecycle. At mkdir, before any task can enter the new cgroup, it
 * inherits its parent's membership (SPAWN_PENDING turns into PENDING), so a
 * cgroup below an owner is an owner from its first instant. The daemon is
 * told of every mkdir and rmdir, to resolve owners that appear later (units,
 * cgroup paths, pods) and to repair a copy that failed.
 */
static __always_inline void inherit(struct bg_member *child, const struct bg_member *parent)
{
	*child = *parent;
	for (int s = 0; s < BG_SLOTS; s++) {
		__u16 f = parent->slot[s].flags;
		if (f & BG_MEMBER_SPAWN_PENDING)
			child->slot[s].flags = (f & ~(BG_MEMBER_SPAWN_PENDING | BG_MEMBER_POD)) | BG_MEMBER_PENDING;
	}
}

static __always_inline int copy_membership(struct cgroup *cgrp, struct cgroup *parent, int storage)
{
	if (storage) {
		struct bg_member *pm = bpf_cgrp_storage_get(&bg_members, parent, 0, 0);
		if (!pm)
			return 0;
		struct bg_member *cm = bpf_cgrp_storage_get(&bg_members, cgrp, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (!cm)
			return -1;
		inherit(cm, pm);
		return 0;
	}
	__u64 pid = parent->kn->id, cid = cgrp->kn->id;
	struct bg_member *pm = bpf_map_lookup_elem(&bg_members_hash, &pid);
	if (!pm)
		return 0;
	/* Created with the parent's value, then fixed up in place: the
	 * directory is not active yet, so nothing reads it in between. */
	if (bpf_map_update_elem(&bg_members_hash, &cid, pm, BPF_ANY))
		return -1;
	struct bg_member *cm = bpf_map_lookup_elem(&bg_members_hash, &cid);
	if (!cm)
		return -1;
	inherit(cm, pm);
	return 0;
}

static __always_inline void cgroup_event(struct cgroup *cgrp, struct cgroup *parent, const char *path, __u32 op, int failed)
{
	struct bg_cgroup_event *e = bpf_ringbuf_reserve(&bg_cgroup_events, sizeof(*e), 0);
	if (!e) {
		/* The daemon re-resolves every owner when it sees this grow. */
		__sync_fetch_and_add(&bg_cgroup_events_lost, 1);
		return;
	}
	e->id = cgrp->kn->id;
	e->parent_id = parent ? parent->kn->id : 0;
	e->op = op;
	e->copy_failed = failed;
	e->path_len = bpf_probe_read_kernel_str(e->path, sizeof(e->path), path);
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
}

static __always_inline struct cgroup *parent_of(struct cgroup *cgrp)
{
	struct cgroup_subsys_state *css = cgrp->self.parent;
	return css ? css->cgroup : 0;
}

static __always_inline int on_mkdir(struct cgroup *cgrp, const char *path, int storage)
{
	/* hierarchy 0 is cgroup2; cgroup v1 hierarchies are not ours */
	if (cgrp->root->hierarchy_id != 0)
		return 0;
	struct cgroup *parent = parent_of(cgrp);
	int failed = 0;
	if (parent && copy_membership(cgrp, parent, storage)) {
		count(BG_CNT_MEMBER_COPY_FAILED);
		failed = 1;
	}
	cgroup_event(cgrp, parent, path, BG_CGROUP_MKDIR, failed);
	return 0;
}

static __always_inline int on_rmdir(struct cgroup *cgrp, const char *path, int storage)
{
	if (cgrp->root->hierarchy_id != 0)
		return 0;
	if (!storage) {
		/* Cgroup storage goes with the cgroup; the hash entry must be freed. */
		__u64 id = cgrp->kn->id;
		bpf_map_delete_elem(&bg_members_hash, &id);
	}
	cgroup_event(cgrp, 0, path, BG_CGROUP_RMDIR, 0);
	return 0;
}

/* The cgroup lifecycle programs, in both membership variants. */
#define BG_CGROUP_PROGRAM(tp, name, fn, storage)                                                   \
	SEC("tp_btf/" tp) int BPF_PROG(name, struct cgroup *cgrp, const char *path)                \
	{                                                                                          \
		return fn(cgrp, path, storage);                                                    \
	}

BG_CGROUP_PROGRAM("cgroup_mkdir", bindguard_cgroup_mkdir_stg, on_mkdir, 1)
BG_CGROUP_PROGRAM("cgroup_mkdir", bindguard_cgroup_mkdir_hash, on_mkdir, 0)
BG_CGROUP_PROGRAM("cgroup_rmdir", bindguard_cgroup_rmdir_stg, on_rmdir, 1)
BG_CGROUP_PROGRAM("cgroup_rmdir", bindguard_cgroup_rmdir_hash, on_rmdir, 0)

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
