package benchbpf

// The reference objects are generated from bpf/bench/ and committed, so the
// benchmark needs no clang. `make generate` reruns these and CI checks that
// the result is unchanged. The stems are capitalised so the generated loaders
// are exported to scripts/bench.
//go:generate sh ../../scripts/bpf2go.sh -tags linux -target bpfel Floor ../../bpf/bench/floor.c -- -mcpu=v3 -O2 -g -Wall -Werror -I../../bpf
//go:generate sh ../../scripts/bpf2go.sh -tags linux -target bpfel -type rule -type limits Linear ../../bpf/bench/linear.c -- -mcpu=v3 -O2 -g -Wall -Werror -I../../bpf
//go:generate sh ../../scripts/bpf2go.sh -tags linux -target bpfel Parts ../../bpf/bench/parts.c -- -mcpu=v3 -O2 -g -Wall -Werror -I../../bpf
