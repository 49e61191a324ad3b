// Package features probes the running kernel for what bindguard needs: the
// program, map and link types, the helpers its programs call, kernel BTF and
// SO_NETNS_COOKIE. Check reports each feature with the Linux release that
// introduced it; Require turns the missing ones into one error that names
// them, so the daemon refuses to start with a message an operator can act on
// instead of a verifier log.
//
// Probes use github.com/cilium/ebpf/features where it has one. The cgroup
// bpf_link probe attaches a program that allows every bind to a temporary,
// empty cgroup (a child of the process's own cgroup, or of the cgroup2
// root; never the root itself) and removes it; where it may not create one
// it asks the kernel for BPF_LINK_CREATE instead.
//
// It owns the list of features and the kernel releases that introduced them.
// It does not load bindguard's programs (package loader does) and does not
// require capabilities: a probe the caller lacks privileges for reports that
// it could not tell, not that the feature is missing, and Require's error
// says which of the capabilities bindguard runs with the caller lacked.
package features
