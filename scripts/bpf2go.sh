#!/bin/sh
# Runs `go tool bpf2go` with the build machine's multiarch include directory
# (where <asm/types.h> lives: /usr/include/x86_64-linux-gnu on amd64 Debian,
# /usr/include/aarch64-linux-gnu on arm64), so `make generate` works on either.
# The go:generate lines in loader/, scan/ and internal/benchbpf/ call it with
# bpf2go's own arguments, which must end with the C flags after `--`.
set -eu
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch="$(uname -m)-linux-gnu"
inc="/usr/include/$multiarch"
[ -d "$inc" ] || { echo "bpf2go.sh: no multiarch include directory $inc (install linux-libc-dev)" >&2; exit 1; }
# go generate puts $GOROOT/bin first on PATH, so this is the go that runs it.
exec go tool bpf2go "$@" "-I$inc"
