// Package benchbpf holds the reference BPF programs scripts/bench measures
// bindguard against: the hook floor (bpf/bench/floor.c, allow and nothing
// else), a linear rule scan in the shape of systemd's SocketBindAllow=
// (bpf/bench/linear.c), and the kernel reads a check needs, each alone
// (bpf/bench/parts.c). The objects are generated and committed like the
// loader's.
//
// It owns loading those objects and nothing else: attaching them, and every
// measurement, is scripts/bench's. Nothing in bindguard itself imports it.
package benchbpf
