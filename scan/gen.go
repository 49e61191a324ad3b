package scan

// The socket iterators are generated from bpf/iter.c and committed, so
// building and testing need no clang. `make generate` reruns this and CI
// checks that the result is unchanged.
//go:generate sh ../scripts/bpf2go.sh -tags linux -target bpfel -type bg_sock -type bg_userlocks iter ../bpf/iter.c -- -mcpu=v3 -O2 -g -Wall -Werror -I../bpf
