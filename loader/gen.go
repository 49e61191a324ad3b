package loader

// The BPF objects are generated from bpf/ and committed, so building and
// testing need no clang. `make generate` reruns this and CI checks that the
// result is unchanged.
//go:generate sh ../scripts/bpf2go.sh -tags linux -target bpfel -type bg_key -type bg_value -type bg_member -type bg_member_slot -type bg_event -type bg_rl_key -type bg_rl_value -type bg_bucket -type bg_status -type bg_limits -type bg_pair_kind -type bg_proto -type bg_family -type bg_mode -type bg_rule_flags -type bg_meta_flags -type bg_member_flags -type bg_reason -type bg_verdict -type bg_counter -type bg_cgroup_event -type bg_cgroup_op bindguard ../bpf/bindguard.c -- -mcpu=v3 -O2 -g -Wall -Werror -I../bpf
