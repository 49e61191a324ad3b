// Package testutils holds what privileged tests share: the skip helper, a
// temporary cgroup per test, a private bpffs per test, and a binder process
// placed in a cgroup that makes real bind() calls on request.
//
// Tests never attach to the cgroup2 root: every attach point comes from
// Cgroup, and everything made here is removed in t.Cleanup.
package testutils
