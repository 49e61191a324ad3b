#!/usr/bin/env bash
# Installs what CI needs: Debian's clang, llvm-strip, bpftool and libbpf
# headers to regenerate the BPF objects, systemd-analyze for the unit check,
# QEMU, busybox and cpio for the end-to-end suite on another kernel, and
# containerd and runc for the pod identity tests.
# Only what is missing is installed.
set -euo pipefail
need=()
command -v clang >/dev/null || need+=(clang)
command -v llvm-strip >/dev/null || need+=(llvm)
command -v bpftool >/dev/null || need+=(bpftool)
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# systemd-analyze verifies deploy/systemd/bindguard.service (works without systemd as PID 1).
command -v systemd-analyze >/dev/null || need+=(systemd)
# make vmtest-ci boots a Debian kernel under QEMU with a busybox initramfs.
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v cpio >/dev/null || need+=(cpio)
# make vmtest-systemd builds a Debian root file system with systemd.
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
# The dashboard and rules are parsed by promtool; test/prometheus_test.go
# runs a real Prometheus against two daemons (Debian's prometheus has both).
command -v prometheus >/dev/null && command -v promtool >/dev/null || need+=(prometheus)
# The cri tests run a real containerd with runc (internal/testbed/containerd);
# containerd brings ctr, which imports the locally built images.
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
# test/scan_busy_test.go runs real servers on loopback (started and stopped by the test).
command -v nginx >/dev/null || need+=(nginx-light)
command -v redis-server >/dev/null || need+=(redis-server)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "ci-setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
clang --version | head -1
# The real API server test bed (kube-apiserver and etcd, built from the Go
# module proxy once per machine; skipped when present at the right version).
"$(dirname "$0")/testbed/build-k8s.sh"
