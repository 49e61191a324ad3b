#!/bin/sh
# Runs `go tool bpf2go` with the build machine's multiarch include directory
# (where <asm/types.h> lives: /usr/include/x86_64-linux-gnu on amd64 Debian,
# /usr/include/aarch64-linux-gnu on arm64), so `make generate` works on either.
# The go:generate lines in loader/, scan/ and internal/benchbpf/ call it with
# bpf2go's own arguments, which must end with the C flags after `--`.
# Distributions without multiarch keep <asm/types.h> in /usr/include/asm,
# which clang searches anyway: then no directory is added.
set -eu
multiarch=$(gcc -print-multiarch 2>/dev/null || true)
[ -n "$multiarch" ] || multiarch="$(uname -m)-linux-gnu"
inc="/usr/include/$multiarch"
if [ -d "$inc" ]; then
	set -- "$@" "-I$inc"
elif [ ! -d /usr/include/asm ]; then
	echo "bpf2go.sh: no <asm/types.h>: neither $inc nor /usr/include/asm exists (install the kernel headers: linux-libc-dev on Debian)" >&2
	exit 1
fi
# go generate puts $GOROOT/bin first on PATH, so this is the go that runs it.
exec go tool bpf2go "$@"
