#!/usr/bin/env bash
# Installs what CI needs: Debian's clang, llvm-strip, bpftool and libbpf
# headers to regenerate the BPF objects, systemd-analyze for the unit check,
# QEMU, busybox and cpio for the end-to-end suite on another kernel,
# containerd and runc for the pod identity tests, and what the end-to-end
# tests start (Prometheus, nginx, redis, python3). Under
# BINDGUARD_REQUIRE_PRIVILEGED=1 a test whose tool is missing fails
# (testutils.Need), so each one it needs must be installed here.
# Only what is missing is installed.
set -euo pipefail
need=()
# install_missing CMD PACKAGE: apt-get installs PACKAGE (below, all at once)
# when the command CMD is not there.
install_missing() { command -v "$1" >/dev/null || need+=("$2"); }
install_missing clang clang
install_missing llvm-strip llvm
install_missing bpftool bpftool
[ -f /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
# systemd-analyze verifies deploy/systemd/bindguard.service (works without systemd as PID 1).
install_missing systemd-analyze systemd
# make vmtest-ci boots a Debian kernel under QEMU with a busybox initramfs.
install_missing qemu-system-x86_64 qemu-system-x86
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
install_missing cpio cpio
# make vmtest-systemd builds a Debian root file system with systemd.
install_missing mmdebstrap mmdebstrap
# The dashboard and rules are parsed by promtool; test/prometheus_test.go
# runs a real Prometheus against two daemons (Debian's prometheus has both).
install_missing prometheus prometheus
install_missing promtool prometheus
# The cri tests run a real containerd with runc (internal/testbed/containerd);
# containerd brings ctr, which imports the locally built images.
install_missing containerd containerd
install_missing runc runc
# test/scan_busy_test.go runs real servers on loopback (started and stopped by the test).
install_missing nginx nginx-light
install_missing redis-server redis-server
# The tests run Debian's /usr/bin/python3 (test/sockholder_test.go,
# test/scan_busy_test.go), not whatever python3 is first on PATH (a pyenv
# shim under /root, which other uids cannot run); http.server is in the
# stdlib that the python3 package brings, not in python3-minimal.
{ [ -x /usr/bin/python3 ] && dpkg -s python3 >/dev/null 2>&1; } || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  echo "ci-setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # sort -u: a package wanted for two commands (prometheus) is named once.
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
fi
clang --version | head -1
# The real API server test bed (kube-apiserver and etcd, built from the Go
# module proxy once per machine; skipped when present at the right version).
"$(dirname "$0")/testbed/build-k8s.sh"
