// Package policy owns the host port registry: its schema, parsing,
// validation and compilation into the policy of one node; Decide, the
// reference verdict on one bind that the kernel programs must reproduce; and
// the vocabulary events, counters and flags share (Reason, Verdict, Mode,
// Family, PodPortsMode). It does not touch the kernel: loading a Compiled
// policy into BPF maps is package loader's, cgroup path knowledge (which
// cgroup is a systemd unit, cgroups.UnitOf) is package cgroups', pod
// identity comes from the container runtime (package cri), and the
// registries built into the binary are package builtin's.
//
// # Registry
//
// A registry is YAML (JSON is accepted, being YAML) of kind PortRegistry:
//
//	apiVersion: bindguard.io/v1
//	kind: PortRegistry
//	metadata: {name: openshift-4.16, source: "OpenShift host port registry"}
//	entries:
//	  - port: 2379             # 1-65535 in decimal, or a range "9200-9219"
//	    protocol: tcp          # tcp (default), udp, or [tcp, udp]
//	    process: etcd          # required
//	    owners:                # optional; absent: any process may bind
//	      - cgroup: /system.slice/etcd.service  # that cgroup or below it
//	      - unit: etcd.service                  # the system manager's unit
//	      - uid: 0                              # in decimal
//	      - pod: {namespace: kube-system, labels: {component: etcd}, container: etcd}
//	    nodeSelector: {node-role.kubernetes.io/master: ""}  # absent: every node
//	    # or a Kubernetes label selector (see Selector):
//	    # nodeSelector:
//	    #   matchLabels: {kubernetes.io/os: linux}
//	    #   matchExpressions:
//	    #     - {key: node-role.kubernetes.io/worker, operator: Exists}
//	    #     - {key: topology.kubernetes.io/zone, operator: In, values: [a, b]}
//	    bind: any              # any (default) or localhost
//	    mode: audit            # audit: only audited even when the node enforces
//	    team: etcd
//	    since: "4.4"
//	    notes: "client port"
//	removed:                   # ports freed by removed features
//	  - {port: 10256, protocol: tcp, process: openshift-sdn, removed: "4.17"}
//
// Protocol names are case-insensitive; SCTP, DCCP and others are rejected
// because the kernel programs judge TCP (MPTCP included) and UDP binds only.
// A field set to null is treated as absent, but an empty owners list is an
// error (omit owners to let anyone bind). YAML aliases are followed; merge
// keys (<<) are not supported. A file may hold several documents.
// Load merges several files or directories, and builtin:NAME registries, in
// order. Every error is reported with its FILE:LINE:COL, all at once (see
// ErrorList), each once and at most 100 per file; a registry with any error
// never compiles.
//
// # Merging and conflicts
//
// Two entries that claim an overlapping (port, protocol) for different
// processes (compared trimmed and case-insensitively) conflict when one node
// could match both selectors. That is decided exactly (see Satisfiable): key
// by key, the values that matchLabels, In and NotIn leave, and Exists against
// DoesNotExist. A port both claimed and removed conflicts likewise. A
// selector that no node can match is an error.
//
// Entries of the same process on the same port do not conflict; the node's
// rule merges them: owners are the union, but if either entry has no owners
// the rule has none (anyone may bind); the rule is localhost-only only if
// both entries are; it is audit-only if either is. Removed entries on the
// same port merge too. A merged rule points at the first entry.
//
// # Compiled policy
//
// Compile yields, for one node's labels, one Rule per (port, protocol) that
// the node's entries declare, sorted and deterministic. A port no Rule
// declares is undeclared: binding it is a violation. So an empty registry
// compiles to zero Rules, which the loader turns into an explicit deny-all
// policy (its meta entry alone), never an allow-all.
//
// Limits are checked before anything loads: a compiled policy needs 1 meta
// map entry, 1 per rule and 1 per owner of each rule (a unit or pod owner
// counted as 1), at most MaxMapEntries in all, and each rule lists at most
// MaxOwnersPerRule owners.
//
// # Decide
//
// Decide judges one BindAttempt (port, protocol, address, the task's cgroup,
// uid and network namespace, and its pod when it runs in one) against a
// Compiled policy, in the order its comment lists; the kernel programs
// follow the same order, and a differential test compares them.
package policy
