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
	BG_LAYOUT_VERSION = 2,
	/* Entries of one rules array: one per (protocol, port), see bg_rule_index. */
	BG_RULES_ENTRIES = 2 << 16,
	/* Capacity of one owners map. The Go side checks a compiled policy
	 * against it before anything loads. */
	BG_OWNERS_MAX_ENTRIES = 1 << 18,
	/* Policy slots: one in force, one being prepared. */
	BG_SLOTS = 2,
	/* Owners are looked up at cgroup levels 0 (the cgroup2 root) up to this
	 * one. A task deeper than this still matches an owner at or above it. */
	BG_MAX_CGROUP_DEPTH = 16,
};

/* bg_key.proto, bg_event.proto. MPTCP sockets are judged as TCP. */
enum bg_proto {
	BG_PROTO_TCP = 1,
	BG_PROTO_UDP = 2,
};

/*
 * A policy is a pair of maps, held in slot s of bg_rules and bg_owners; the
 * one-entry array bg_active names the slot in force. A reload fills the other
 * slot, then flips bg_active with one write: a bind reads the slot once and
 * is judged wholly by that slot's rules and owners.
 *
 * The rules array is indexed by bg_rule_index(proto, port) and holds a
 * struct bg_value per (protocol, port): a direct index, no hashing, the same
 * cost at any registry size. An all-zero value (no BG_RULE_DECLARED) is an
 * undeclared port. Index 0 (TCP port 0, which is never judged) holds the
 * policy's meta entry instead.
 *
 * The owners map is a hash from struct bg_key to struct bg_value.
 *
 * Worked example, a registry with
 *   - {port: 2379, protocol: tcp, owners: [{cgroup: /system.slice/etcd.service}, {uid: 0}]}
 * and /system.slice/etcd.service having cgroup id 4242 compiles to:
 *   rules[bg_rule_index(TCP, 2379) = 2379]         = {origin=1, flags=DECLARED|OWNERS|UID_OWNERS, min_depth=2, max_depth=2}
 *   owners[{kind=CGROUP, proto=TCP, port=2379, id=4242}] = {origin=1}
 *   owners[{kind=UID,    proto=TCP, port=2379, id=0}]    = {origin=1}
 *   rules[0]                                        = {origin=<generation>, flags=0 (enforce)}
 * An empty registry compiles to the meta entry alone: every bind of a
 * non-zero port is then `undeclared` (deny-all in enforce mode), never allow-all.
 */
#define bg_rule_index(proto, port) ((((__u32)(proto) - 1) << 16) | (__u32)(port))

/* bg_key.kind */
enum bg_kind {
	BG_KIND_CGROUP = 2, /* id = cgroup id (kernfs node id) allowed to bind (proto, port) */
	BG_KIND_UID = 3,    /* id = uid allowed to bind (proto, port) */
};

/* struct bg_key: the key of the owners map. Padding must be zero. */
struct bg_key {
	__u8 kind;  /* enum bg_kind */
	__u8 proto; /* enum bg_proto */
	__u16 port; /* host byte order */
	__u32 pad;
	__u64 id;   /* cgroup id or uid */
};

/* bg_value.flags of a rule */
enum bg_rule_flags {
	BG_RULE_OWNERS = 1 << 0,     /* only listed cgroups/uids may bind */
	BG_RULE_LOCALHOST = 1 << 1,  /* only 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104 */
	BG_RULE_REMOVED = 1 << 2,    /* removed port: every bind is a violation */
	BG_RULE_AUDIT = 1 << 3,      /* violations are only audited, whatever the node mode */
	BG_RULE_DECLARED = 1 << 4,   /* the port is in the registry (set on every rule) */
	BG_RULE_UID_OWNERS = 1 << 5, /* some owners are uids: look the task's uid up */
};

/* bg_value.flags of the meta entry */
enum bg_meta_flags {
	BG_META_AUDIT = 1 << 0, /* the node runs in audit mode: nothing is denied */
};

/*
 * struct bg_value: a rule, an owner, or the meta entry.
 *  rule:  origin = index+1 of the registry entry the rule came from (0: none);
 *         min_depth..max_depth = the cgroup levels at which an owner cgroup
 *         of this port exists (only those levels are looked up; when no
 *         cgroup owner is resolved, min_depth > max_depth and none is).
 *  owner: origin as for the rule; other fields zero.
 *  meta:  origin = the policy generation (events carry it, so the daemon maps
 *         origin indexes with the table of the generation that judged them).
 */
struct bg_value {
	__u32 origin;
	__u8 flags;
	__u8 min_depth;
	__u8 max_depth;
	__u8 pad;
};

/* bg_event.reason */
enum bg_reason {
	BG_REASON_NONE = 0,
	BG_REASON_UNDECLARED = 1, /* no rule for (proto, port) */
	BG_REASON_OWNER = 2,      /* rule has owners; neither the task's cgroup chain nor its uid is one */
	BG_REASON_ADDRESS = 3,    /* rule is localhost-only; the address is not loopback */
	BG_REASON_REMOVED = 4,    /* the port is in the registry's removed list */
	BG_REASON_MAX = 5,
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
 * OTHER_PROTO break ALLOWED down.
 */
enum bg_counter {
	BG_CNT_ALLOWED = 0,         /* no violation (includes the three below) */
	BG_CNT_EPHEMERAL = 1,       /* port 0 */
	BG_CNT_OTHER_NETNS = 2,     /* would violate, but outside the host network namespace */
	BG_CNT_OTHER_PROTO = 3,     /* neither TCP, MPTCP nor UDP */
	BG_CNT_AUDIT = 4,           /* 4..7: audited, by reason */
	BG_CNT_DENY = 8,            /* 8..11: denied, by reason */
	BG_CNT_EVENTS_DROPPED = 12, /* ring buffer full: event lost, verdict still applied */
	BG_CNT_SUPPRESSED = 13,     /* events folded into a later one by rate limiting */
	BG_CNT_NO_POLICY = 14,      /* no policy in force: allowed (never expected) */
	BG_CNT_MAX = 15,
};

/* An event for every violation that the rate limiter lets through. */
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
	__u32 suppressed;   /* events folded into this one since the previous one */
	__u16 port;         /* host byte order */
	__u8 proto;         /* enum bg_proto */
	__u8 family;        /* 4 or 6: the socket's family (a v4-mapped address is family 6) */
	__u8 reason;        /* enum bg_reason */
	__u8 verdict;       /* enum bg_verdict */
	__u8 pad[2];
	__u8 addr[16];      /* network byte order; family 4 uses addr[0..3] */
	char comm[16];
};

/* Rate-limit key: one event per interval per (cgroup, port, proto, reason). */
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
	__u32 op;        /* enum bg_cgroup_op */
	__s32 path_len;  /* bytes in path with the NUL; <= 0 or == sizeof(path): not usable */
	/* The cgroup's path from the cgroup2 root ("/system.slice/x.service"),
	 * as the tracepoint reports it. The tracepoint fires before the new
	 * directory can be opened by id, so the path must come from here. */
	char path[256];
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
	__u8 mode;                 /* 0 audit, 1 enforce */
	__u8 all_netns;
	__u8 pad[6];
	__u64 reloads_ok;
	__u64 reloads_failed;
	__u64 last_failure_unix_ns;
	__u8 digest[32];           /* SHA-256 of the registry input in force */
	char last_error[256];      /* first line(s) of the last failed reload, NUL-terminated */
};

#endif /* BINDGUARD_H */
