/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The kernel/user contract of bindguard: every struct and constant that both
 * the BPF programs (bpf/bindguard.c) and the Go loader (loader/) read.
 * bpf2go exports the structs to Go with -type; nothing here is copied by hand.
 *
 * Byte order: ports are HOST byte order in keys, values and events (the
 * program converts ctx->user_port with bpf_ntohs). Addresses in events are
 * NETWORK byte order, as the socket API carries them.
 *
 * Changing any struct or constant here changes the pinned layout: bump
 * BG_LAYOUT_VERSION so a daemon finding older pins replaces them instead of
 * reading them with the wrong shape.
 */
#ifndef BINDGUARD_H
#define BINDGUARD_H

/* Sizes and versions. An enum rather than #defines so bpf2go exports them to Go. */
enum bg_limits {
	/* Bump when any struct or constant here changes meaning or shape. */
	BG_LAYOUT_VERSION = 8,
	/* Entries of one slot's rules: one per (protocol, port), see bg_rule_index. */
	BG_RULES_ENTRIES = 2 << 16,
	/* Capacity of one pairs map (uid owners and pods' declared ports). The
	 * Go side checks a compiled policy against it before anything loads. */
	BG_PAIRS_MAX_ENTRIES = 1 << 18,
	/* Policy slots: one in force, one being prepared. */
	BG_SLOTS = 2,
	/* Owner sets one policy may name (bg_value.set), and the 64-bit words
	 * of a membership bitmap that hold them. */
	BG_OWNER_SETS = 512,
	BG_SET_WORDS = 8,
	/* Capacity of the membership hash used where the kernel has no cgroup
	 * storage (before 6.2): cgroups that are, or are below, an owner. */
	BG_MEMBERS_MAX_ENTRIES = 1 << 16,
	/* Events a cgroup may emit in a burst, and then per second (the
	 * per-cgroup token bucket that bounds a flood whatever its keys). */
	BG_EVENT_BURST = 32,
	BG_EVENTS_PER_SEC = 16,
	/* The same per non-root uid, whatever cgroups it spreads over: a user
	 * who can create cgroups does not multiply its budget. */
	BG_UID_EVENT_BURST = 256,
	BG_UID_EVENTS_PER_SEC = 64,
};

/* bg_key.proto, bg_event.proto. MPTCP sockets are judged as TCP. */
enum bg_proto {
	BG_PROTO_TCP = 1,
	BG_PROTO_UDP = 2,
};

/* bg_event.family: the socket's address family. */
enum bg_family {
	BG_FAMILY_INET = 4,  /* AF_INET, judged by bind4 */
	BG_FAMILY_INET6 = 6, /* AF_INET6, judged by bind6 (a v4-mapped address too) */
};

/* bg_status.mode, and what the node flag BG_META_AUDIT encodes. */
enum bg_mode {
	BG_MODE_AUDIT = 0,
	BG_MODE_ENFORCE = 1,
};

/*
 * A policy lives in slot s: the range s * BG_RULES_ENTRIES.. of the rules
 * array bg_rules, the pairs hash in slot s of bg_pairs, and slot s of each
 * membership. The one-entry array bg_active names the slot in force. A
 * reload rewrites the other slot, then flips bg_active with one write: a
 * bind reads the slot once and is judged wholly by that slot's rules, pairs
 * and memberships. The reload after it waits until no bind can still read
 * the old slot before rewriting it.
 *
 * A slot's rules are indexed by bg_rule_index(proto, port) and hold a
 * struct bg_value per (protocol, port): a direct index, no hashing, the same
 * cost at any registry size. One array for both slots, not a map per slot,
 * so a bind reads no map pointer before its rule. A value without
 * BG_RULE_DECLARED is an undeclared port. Every entry of a written slot,
 * declared or not, carries the policy's generation (never 0) and its node
 * flags (enum bg_meta_flags): a bind reads its port's entry and no other, a
 * violation too. A slot never written is all zeros: no policy. Index 0 (TCP
 * port 0, which is never judged) is the policy's meta entry: written even
 * for an empty registry, and like an undeclared port's, the generation and
 * node flags alone.
 *
 * Owners. Every distinct owner list of the registry (cgroups, units, pods)
 * is an owner set, numbered 0..BG_OWNER_SETS-1; a rule with owners names its
 * set in bg_value.set. Each cgroup that is an owner, or lies below one,
 * carries a struct bg_member (per-cgroup storage, or the members hash before
 * 6.2) whose bitmap for the slot says which sets it belongs to. The owner
 * check is one lookup of the current cgroup's membership and a bit test,
 * whatever the depth and however many owners there are. A new cgroup
 * inherits its parent's membership in the kernel, at mkdir, before any task
 * can enter it. uid owners are pairs {BG_PAIR_UID, set, uid} in bg_pairs.
 *
 * Worked example, a registry with
 *   - {port: 2379, protocol: tcp, owners: [{cgroup: /system.slice/etcd.service}, {uid: 0}]}
 * in generation 7, slot 1, compiles to (slot 1's rules start at BG_RULES_ENTRIES):
 *   bg_rules[BG_RULES_ENTRIES + bg_rule_index(TCP, 2379)] = {origin=1, flags=DECLARED|OWNERS|UID_OWNERS,
 *                                                           set=0, uid=0+1, generation=7}
 *   bg_rules[BG_RULES_ENTRIES + any other index]          = {generation=7, node=0 (enforce)}
 *                                                           (undeclared; index 0 is the meta entry)
 * (a rule listing two uids or more has uid=0 and one pair per uid:
 *   pairs[{kind=UID, set=0, id=UID}] = 1)
 * and the cgroup /system.slice/etcd.service, and every cgroup below it,
 * holds member.slot[1] = {generation=7, bits[0]=1<<0}. A bind of 2379 from
 * /system.slice/etcd.service/x is allowed because bit 0 is set; from any
 * other cgroup, only if its uid is 0. An empty registry compiles to the meta
 * entry alone: every bind of a non-zero port is then `undeclared` (deny-all
 * in enforce mode), never allow-all.
 */
#define bg_rule_index(proto, port) ((((__u32)(proto) - 1) << 16) | (__u32)(port))

/* bg_key.kind. 0 is never used, so an all-zero key matches nothing. */
enum bg_pair_kind {
	BG_PAIR_UID = 1,      /* set = owner set, id = a uid that owns it */
	BG_PAIR_POD_PORT = 2, /* proto, port = a port the pod id (bg_member.pod) declares */
};

/* struct bg_key: the key of a pairs map. Padding must be zero. */
struct bg_key {
	__u8 kind;  /* enum bg_pair_kind */
	__u8 proto; /* enum bg_proto, or 0 */
	__u16 port; /* host byte order, or 0 */
	__u32 set;  /* owner set, or 0 */
	__u64 id;   /* uid or pod id */
};

/* bg_value.flags of a rule */
enum bg_rule_flags {
	BG_RULE_OWNERS = 1 << 0,     /* only members of owner set `set` (or uid pairs) may bind */
	BG_RULE_LOCALHOST = 1 << 1,  /* only 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104 */
	BG_RULE_REMOVED = 1 << 2,    /* removed port: every bind is a violation */
	BG_RULE_AUDIT = 1 << 3,      /* violations are only audited, whatever the node mode */
	BG_RULE_DECLARED = 1 << 4,   /* the port is in the registry (set on every rule) */
	BG_RULE_UID_OWNERS = 1 << 5, /* some owners are uids: look the task's uid up */
	BG_RULE_POD_OWNERS = 1 << 6, /* some owners are pods: a pending pod is not refused */
	/* 1 << 7 is free. --pod-ports=require is BG_META_POD_PORTS in
	 * bg_value.node, which every entry carries. */
};

/* node flags: bg_value.node of every entry */
enum bg_meta_flags {
	BG_META_AUDIT = 1 << 0,        /* the node runs in audit mode: nothing is denied */
	BG_META_POD_PORTS = 1 << 1,    /* --pod-ports=require: pods bind only ports they declare */
};

/*
 * struct bg_value: a port's entry.
 *  rule:  origin = index+1 of the registry entry the rule came from (0: none);
 *         flags = enum bg_rule_flags; set = the owner set of the rule (with
 *         BG_RULE_OWNERS);
 *  every entry of a written slot, rules, undeclared ports and the meta entry:
 *         generation = the policy generation: the membership check compares
 *         it (memberships of another generation are ignored), events carry
 *         it (so the daemon maps origin indexes with the table of the
 *         generation that judged them), and 0 means no policy; node = enum
 *         bg_meta_flags, for the verdict. A bind never reads another entry
 *         than its port's.
 */
struct bg_value {
	__u32 origin;
	__u8 flags;
	__u8 node; /* enum bg_meta_flags */
	__u16 set;
	/* rule with BG_RULE_UID_OWNERS: uid + 1 of its owner when it lists
	 * exactly one uid (checked here, no map lookup); 0 when it lists more,
	 * and each is a BG_PAIR_UID pair. */
	__u32 uid;
	__u32 generation;
};

/* bg_member_slot.flags */
enum bg_member_flags {
	BG_MEMBER_POD = 1 << 0,     /* a pod's cgroup (or below), identity known: pod id in `pod` */
	BG_MEMBER_PENDING = 1 << 1, /* a pod's cgroup whose identity is not known yet */
	/* A cgroup created below this one starts PENDING (this flag is not
	 * inherited): set on kubelet's QoS parents, and on a pod whose
	 * containers own ports by name, so each container waits for its own. */
	BG_MEMBER_SPAWN_PENDING = 1 << 2,
};

/*
 * struct bg_member: what one cgroup is, per policy slot. A slot's part counts
 * only while its generation is that of the slot's entries: a reload
 * writes the idle slot's part of every member with the new generation, and
 * stale parts are never read. At mkdir the kernel copies the parent's value
 * into the child (both slots), turning SPAWN_PENDING into PENDING.
 *
 * Worked example: a pod cgroup of a pod matching owner sets 3 and 70 in
 * generation 9, slot 0, with pod id 5:
 *   slot[0] = {generation=9, flags=POD, pod=5, bits[0]=1<<3, bits[1]=1<<6}
 */
struct bg_member_slot {
	__u32 generation;
	__u16 flags; /* enum bg_member_flags */
	__u16 pad;
	__u32 pod;   /* pod id for BG_PAIR_POD_PORT pairs; 0: none */
	__u32 pad2;
	__u64 bits[BG_SET_WORDS]; /* bit s of word s/64: member of owner set s */
};

struct bg_member {
	struct bg_member_slot slot[BG_SLOTS];
};

/* bg_event.reason */
enum bg_reason {
	BG_REASON_NONE = 0,
	BG_REASON_UNDECLARED = 1,     /* no rule for (proto, port) */
	BG_REASON_OWNER = 2,          /* rule has owners; the task's cgroup is in none of its set, nor is its uid */
	BG_REASON_ADDRESS = 3,        /* rule is localhost-only; the address is not loopback */
	BG_REASON_REMOVED = 4,        /* the port is in the registry's removed list */
	BG_REASON_POD_UNDECLARED = 5, /* --pod-ports=require: the binder's pod does not declare the port */
	BG_REASON_POD_PENDING = 6,    /* the binder's pod identity is not known yet: audited, never denied */
	BG_REASON_AUTOBIND = 7,       /* bind(port 0) landed on a port the binder may not bind (post_bind) */
	BG_REASON_MAX = 8,
};

/* bg_event.verdict */
enum bg_verdict {
	BG_VERDICT_ALLOW = 0,
	BG_VERDICT_AUDIT = 1, /* violation, bind proceeds */
	BG_VERDICT_DENY = 2,  /* violation, bind fails with EPERM */
};

/*
 * Indexes of the per-CPU counter array bg_counters. Each judged bind adds one
 * to exactly one of ALLOWED, AUDIT+reason-1 or DENY+reason-1, so the number
 * of checks is their sum (summed over CPUs); EPHEMERAL, OTHER_NETNS and
 * OTHER_PROTO break ALLOWED down. An autobind violation found by post_bind
 * adds to AUDIT/DENY+AUTOBIND-1 on top of the EPHEMERAL count its bind(0)
 * made.
 */
enum bg_counter {
	BG_CNT_ALLOWED = 0,     /* no violation (includes the three below) */
	BG_CNT_EPHEMERAL = 1,   /* port 0 */
	BG_CNT_OTHER_NETNS = 2, /* would violate, but outside the host network namespace */
	BG_CNT_OTHER_PROTO = 3, /* neither TCP, MPTCP nor UDP */
	BG_CNT_AUDIT = 4,       /* AUDIT + reason - 1: audited, by reason */
	BG_CNT_DENY = BG_CNT_AUDIT + BG_REASON_MAX - 1,             /* DENY + reason - 1 */
	BG_CNT_EVENTS_DROPPED = BG_CNT_DENY + BG_REASON_MAX - 1,    /* ring buffer full: event lost, verdict still applied */
	BG_CNT_SUPPRESSED = BG_CNT_EVENTS_DROPPED + 1,              /* events folded into a later one by rate limiting */
	BG_CNT_NO_POLICY = BG_CNT_SUPPRESSED + 1,                   /* no policy in force: allowed (never expected) */
	BG_CNT_THROTTLED = BG_CNT_NO_POLICY + 1,                    /* of SUPPRESSED: held back by the per-cgroup bucket */
	BG_CNT_MEMBER_COPY_FAILED = BG_CNT_THROTTLED + 1,           /* mkdir could not copy a membership (repaired from user space) */
	BG_CNT_MAX = BG_CNT_MEMBER_COPY_FAILED + 1,
};

/*
 * An event for every violation that the rate limiter lets through.
 *
 * Worked example: python3 (pid 812, uid 1000) in cgroup 4711 binds
 * [::ffff:10.0.0.5]:8123/tcp on an AF_INET6 socket; 8123 is undeclared and
 * the node audits; two earlier attempts were folded:
 *   {ts_ns, cgroup_id=4711, netns_cookie, pid=812, tid=812, uid=1000, gid=1000,
 *    origin=0, generation=G, suppressed=2, port=8123, proto=TCP, family=6,
 *    reason=UNDECLARED, verdict=AUDIT, member_flags=0,
 *    addr=00..00 ff ff 0a 00 00 05, comm="python3"}
 * The address is the one the socket API was given: a v4-mapped address stays
 * family 6 with ::ffff:a.b.c.d in addr.
 */
struct bg_event {
	__u64 ts_ns;        /* bpf_ktime_get_boot_ns() */
	__u64 cgroup_id;    /* the task's cgroup (v2) */
	__u64 netns_cookie; /* the socket's network namespace */
	__u32 pid;          /* thread group id */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 origin;       /* as bg_value.origin; 0 for undeclared */
	__u32 generation;   /* policy generation that judged the bind */
	__u32 suppressed;   /* violations of this (cgroup, port, proto, reason) folded into this event */
	__u16 port;         /* host byte order */
	__u8 proto;         /* enum bg_proto */
	__u8 family;        /* enum bg_family: the socket's family */
	__u8 reason;        /* enum bg_reason */
	__u8 verdict;       /* enum bg_verdict */
	__u16 member_flags; /* enum bg_member_flags of the task's cgroup in the judging slot */
	__u8 addr[16];      /* network byte order; family 4 uses addr[0..3] */
	char comm[16];
	__u32 pad;          /* explicit tail padding: sizeof == 96 */
};

/*
 * Rate-limit key: one event per interval per (cgroup, port, proto, reason).
 * The times in bg_rl_value.last_ns and bg_bucket.tat are readings of the
 * rate limiter's clock, CLOCK_MONOTONIC_COARSE (CLOCK_MONOTONIC before 5.11),
 * never shown to user space: events carry the boot clock.
 */
struct bg_rl_key {
	__u64 cgroup_id;
	__u16 port;
	__u8 proto;
	__u8 reason;
	__u32 pad;
};

struct bg_rl_value {
	__u64 last_ns;
	__u32 suppressed;
	__u32 pad;
};

/*
 * The per-cgroup token bucket, as a GCRA: tat is the theoretical arrival
 * time of the next event. An event passes when now >= tat - burst*interval,
 * and then tat = max(tat, now) + interval (interval = 1e9/BG_EVENTS_PER_SEC).
 * A flood from one cgroup, whatever ports it cycles, yields at most
 * BG_EVENT_BURST events and then BG_EVENTS_PER_SEC a second; what it holds
 * back stays counted in its key's suppressed count. A second bucket per
 * non-root uid (key (1 << 63) | uid; cgroup ids never have that bit) bounds
 * a user who spreads a flood over many cgroups. Both apply only with an
 * event interval (run --event-interval > 0): 0 reports every violation.
 */
struct bg_bucket {
	__u64 tat;
};

/* bg_cgroup_event.op */
enum bg_cgroup_op {
	BG_CGROUP_MKDIR = 1,
	BG_CGROUP_RMDIR = 2,
};

/*
 * A cgroup of the cgroup2 hierarchy was created or removed. The daemon
 * resolves `cgroup:` and `unit:` owners that appear after it started, and
 * drops owner entries of cgroups that went away.
 */
struct bg_cgroup_event {
	__u64 id;        /* cgroup id (kernfs node id) */
	__u64 parent_id; /* the parent's cgroup id */
	__u32 op;        /* enum bg_cgroup_op */
	__u32 copy_failed; /* mkdir: the parent is a member but its membership could not be copied */
	__s32 path_len;  /* bytes in path with the NUL; <= 0 or == sizeof(path): not usable */
	/* The cgroup's path from the cgroup2 root ("/system.slice/x.service"),
	 * as the tracepoint reports it. The tracepoint fires before the new
	 * directory can be opened by id, so the path must come from here. */
	char path[256];
	__u32 pad;       /* explicit tail padding: sizeof == 288 */
};

/*
 * The daemon's record of the policy in force, one entry in bg_status. The
 * programs never read it; `bindguard status` does, from the pin, so status
 * works without the daemon.
 */
struct bg_status {
	__u32 layout;              /* BG_LAYOUT_VERSION of the daemon that wrote it */
	__u32 generation;          /* as in the META entry in force */
	__u64 applied_unix_ns;     /* when that generation was swapped in */
	__u64 started_unix_ns;     /* when the daemon that owns the pins started */
	__u64 attach_cgroup_id;
	__u32 entries;             /* policy map entries in force */
	__u32 rules;               /* (port, protocol) rules in force */
	__u8 mode;                 /* enum bg_mode */
	__u8 all_netns;
	__u8 pad[6];
	__u64 reloads_ok;
	__u64 reloads_failed;
	__u64 last_failure_unix_ns;
	__u8 digest[32];           /* SHA-256 of the registry input in force */
	char last_error[256];      /* first line(s) of the last failed reload, NUL-terminated */
};

#endif /* BINDGUARD_H */
