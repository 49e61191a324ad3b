//go:build ignore
// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The hook floor for scripts/bench: cgroup/bind4 and cgroup/bind6 programs
 * that allow every bind and do nothing else. What they cost is what any
 * program attached to these hooks costs (the kernel's dispatch, and with BPF
 * stats enabled the run-time accounting), so bindguard's figures are reported
 * as multiples of it.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("cgroup/bind4")
int floor_bind4(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/bind6")
int floor_bind6(struct bpf_sock_addr *ctx)
{
	return 1;
}
