// Package cgroups finds the cgroup2 hierarchy and translates between cgroup
// paths (relative to the cgroup2 root, as registries write them), cgroup ids
// (what the kernel programs see) and systemd units or container ids (what
// operators recognise). It reads kubelet's cgroup layouts (ParseKube,
// KubeLevelOf): which pod and container a path claims to be; confirming
// that claim is the cri package's work.
//
// It owns reading /proc/self/mountinfo and the cgroup2 file system. It does
// not create, attach to or modify cgroups; tests and the loader do that.
package cgroups
