#!/usr/bin/env bash
# Installs what CI needs: Debian's clang, llvm-strip, bpftool and libbpf
# headers to regenerate the BPF objects, and systemd-analyze for the unit
# check. Only what is missing is installed.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang)
command -v llvm-strip >/dev/null || need+=(llvm)
command -v bpftool >/dev/null || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# systemd-analyze verifies deploy/systemd/bindguard.service (works without systemd as PID 1).
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  echo "ci-setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
clang --version | head -1
