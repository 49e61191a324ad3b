#!/usr/bin/env bash
# vmtest-systemd.sh [KERNEL]: run the shipped systemd unit under systemd as
# PID 1, in a Debian bookworm VM booted under QEMU on a vmtest kernel
# (default 6.1, CI's), and check start, reload, restart with a bind loop,
# stop, kill -9 and a unit that binds an undeclared port
# (test/vmsystemd). `make vmtest-systemd` runs it.
#
# The root file system is built once with mmdebstrap (Debian's minbase plus
# systemd, systemd-sysv, iproute2, procps; no docs) and cached as a tarball
# next to scripts/vmtest.sh's kernels; the kernel comes from that cache
# (fetched with scripts/vmtest.sh when missing). The guest boots from an
# initramfs holding the whole root file system: the rootfs, bindguard
# installed as deploy/systemd/bindguard.service says (unit unchanged,
# registry in /etc/bindguard/registry.d, node options in
# /etc/bindguard/bindguard.env with --mode enforce), and the test binary,
# started by a vmtest.service that writes its results to ttyS1 and powers
# off.
#
# Needs root (the root file system holds root-owned files and device
# nodes), mmdebstrap, qemu-system-x86_64, cpio, Go.
#
# Environment:
#   VMTEST_CACHE    cache (default ${XDG_CACHE_HOME:-~/.cache}/bindguard-vmtest, shared with vmtest.sh)
#   VMTEST_OUT      logs: console.log, results.log, summary (default bin/vmtest-systemd/KERNEL)
#   VMTEST_TIMEOUT  seconds before the VM is killed (default 900)
#   VMTEST_ACCEL    auto (KVM when vmtest.sh found it works on this boot), kvm or tcg
#   VMTEST_REFRESH  1: rebuild the cached root file system
#   VMTEST_CAPS     1: also start the unit without each capability in turn (slow under TCG)
#   GO              the go command
#
# Exit status: 0 every step passed, 1 a step failed, 2 no result or setup failed.
set -euo pipefail

die() {
  echo "vmtest-systemd: $*" >&2
  exit 2
}
KERNEL=${1:-6.1}
case $KERNEL in
  5.10 | 6.1 | 6.12) ;;
  *) die "kernel '$KERNEL': want 5.10, 6.1 or 6.12 (scripts/vmtest.sh's kernels)" ;;
esac
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${VMTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bindguard-vmtest}
OUT=${VMTEST_OUT:-$ROOT/bin/vmtest-systemd/$KERNEL}
TIMEOUT=${VMTEST_TIMEOUT:-900}
ACCEL=${VMTEST_ACCEL:-auto}
if [ -z "${GO:-}" ]; then
  GO=go
  command -v go >/dev/null || GO=/usr/local/go/bin/go
fi
[ "$(id -u)" = 0 ] || die "needs root (the guest's root file system has root-owned files and device nodes)"
for tool in mmdebstrap:mmdebstrap qemu-system-x86_64:qemu-system-x86 cpio:cpio flock:util-linux timeout:coreutils; do
  command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} not found (apt-get install ${tool#*:})"
done
[ -x /bin/busybox ] || die "/bin/busybox not found (apt-get install busybox-static)"

start=$(date +%s)
log() { printf 'vmtest-systemd[%s +%ss]: %s\n' "$KERNEL" $(($(date +%s) - start)) "$*" >&2; }
# shellcheck source=scripts/vmtest-qemu.sh
. scripts/vmtest-qemu.sh
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/bindguard-vmtest-systemd.XXXXXX")
QEMU_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null && { wait "$QEMU_PID" 2>/dev/null || true; }; fi
  rm -rf "$STAGE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the kernel and the root file system (cached) ------------------------------

KDIR=$CACHE/kernels/$KERNEL
memo=$CACHE/kvm-probe
bootid=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
if [ ! -f "$KDIR/vmlinuz" ] || { [ "$ACCEL" = auto ] && [ "$(head -1 "$memo" 2>/dev/null)" != "$bootid" ]; }; then
  log "kernel $KERNEL not cached, or KVM not probed on this boot: scripts/vmtest.sh $KERNEL (VMTEST_SUITE=0) fetches and probes"
  VMTEST_SUITE=0 VMTEST_CACHE=$CACHE VMTEST_OUT=$STAGE/vmtest GO=$GO scripts/vmtest.sh "$KERNEL" >"$STAGE/vmtest.log" 2>&1 ||
    { tail -20 "$STAGE/vmtest.log" >&2; die "scripts/vmtest.sh $KERNEL failed"; }
fi
if [ "$ACCEL" = auto ]; then
  if [ "$(sed -n 2p "$memo" 2>/dev/null)" = yes ]; then ACCEL=kvm; else ACCEL=tcg; fi
fi
case $ACCEL in
  kvm | tcg) ;;
  *) die "VMTEST_ACCEL must be auto, kvm or tcg" ;;
esac

# The cache key changes with the package list, so a change rebuilds it.
PKGS=systemd,systemd-sysv,iproute2,procps
ROOTFS=$CACHE/rootfs/bookworm-$(echo "$PKGS" | sha256sum | cut -c1-12).tar
mkdir -p "$CACHE/rootfs"
exec 9>"$CACHE/rootfs/.lock"
flock 9
if [ "${VMTEST_REFRESH:-0}" = 1 ] || [ ! -f "$ROOTFS" ]; then
  log "building the root file system with mmdebstrap (bookworm minbase + $PKGS) into $ROOTFS"
  mmdebstrap --variant=minbase --include="$PKGS" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    bookworm "$ROOTFS.new" http://deb.debian.org/debian >"$STAGE/mmdebstrap.log" 2>&1 ||
    { tail -20 "$STAGE/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
  mv "$ROOTFS.new" "$ROOTFS"
fi
exec 9>&-
log "kernel $(cat "$KDIR/package"), root file system $ROOTFS"

# ---- the guest -------------------------------------------------------------------

R=$STAGE/root
mkdir -p "$R"
tar -x -C "$R" -f "$ROOTFS"
log "building bindguard and the guest test (CGO_ENABLED=0)"
CGO_ENABLED=0 "$GO" build -trimpath -ldflags "-X main.version=vmtest-systemd" -o "$R/usr/local/bin/bindguard" ./cmd/bindguard
mkdir -p "$R/vmtest"
CGO_ENABLED=0 "$GO" test -c -o "$R/vmtest/systemd.test" ./test/vmsystemd

# Installed exactly as the head of deploy/systemd/bindguard.service says.
install -D -m 0644 deploy/systemd/bindguard.service "$R/etc/systemd/system/bindguard.service"
install -D -m 0644 deploy/registry.d/00-bindguard.yaml "$R/etc/bindguard/registry.d/00-bindguard.yaml"
cat >"$R/etc/bindguard/registry.d/10-vmtest.yaml" <<'EOF'
apiVersion: bindguard.io/v1
kind: PortRegistry
metadata:
  name: vmtest
entries:
  - port: 43200
    process: vmtest bind loop
EOF
sed 's/^BINDGUARD_OPTS=.*/BINDGUARD_OPTS="--node-label role=worker --mode enforce"/' deploy/systemd/bindguard.env >"$R/etc/bindguard/bindguard.env"
grep -q -- '--mode enforce' "$R/etc/bindguard/bindguard.env" || die "deploy/systemd/bindguard.env has no BINDGUARD_OPTS line"
"$R/usr/local/bin/bindguard" check "$R/etc/bindguard/registry.d" >/dev/null

cat >"$R/vmtest/run.sh" <<'EOF'
#!/bin/sh
exec >/dev/ttyS1 2>&1
echo "VMTEST-BOOT kernel=$(uname -r) $(systemctl --version | head -1)"
systemctl is-system-running --wait >/dev/null
echo "VMTEST-BOOTED $(systemd-analyze time 2>/dev/null | head -1)"
echo "VMTEST-BEGIN step=systemd"
t0=$(date +%s)
. /vmtest/env
BINDGUARD_SYSTEMD_VM=1 BINDGUARD_VM_CAPS=$VMTEST_CAPS /vmtest/systemd.test -test.v -test.count=1 -test.timeout=10m
rc=$?
echo "VMTEST-END step=systemd rc=$rc seconds=$(($(date +%s) - t0))"
echo "VMTEST-BEGIN step=journal"
journalctl -u bindguard -o short-monotonic --no-pager | tail -n 60
systemctl show bindguard -p NRestarts -p ActiveState -p SubState -p CapabilityBoundingSet --no-pager
echo "VMTEST-END step=journal rc=0"
echo "VMTEST-DONE"
systemctl poweroff --no-block
EOF
chmod 755 "$R/vmtest/run.sh"
echo "VMTEST_CAPS='${VMTEST_CAPS:-0}'" >"$R/vmtest/env"
cat >"$R/etc/systemd/system/vmtest.service" <<'EOF'
[Unit]
Description=bindguard systemd vmtest
After=basic.target systemd-journald.service
[Service]
Type=simple
ExecStart=/vmtest/run.sh
[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vmtest.service "$R/etc/systemd/system/multi-user.target.wants/vmtest.service"
ln -sf /lib/systemd/system/multi-user.target "$R/etc/systemd/system/default.target"
# Nothing else to run: no logins, timers or first-boot questions.
for u in getty@tty1.service serial-getty@ttyS0.service serial-getty@ttyS1.service console-getty.service \
  apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
  systemd-tmpfiles-clean.timer systemd-firstboot.service systemd-networkd-wait-online.service; do
  ln -sf /dev/null "$R/etc/systemd/system/$u"
done
echo vmtest >"$R/etc/hostname"
: >"$R/etc/machine-id"

(cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) >"$STAGE/initramfs.cpio"
rm -rf "$R"
log "initramfs $(($(stat -c %s "$STAGE/initramfs.cpio") / 1048576)) MB"

# ---- boot -----------------------------------------------------------------------

qemu_boot file "rdinit=/sbin/init panic=-1 quiet loglevel=4 mitigations=off systemd.show_status=0"
qrc=0
wait "$QEMU_PID" || qrc=$?
QEMU_PID=
wall=$(($(date +%s) - start))

# ---- results ----------------------------------------------------------------------

res() { tr -d '\r' <"$RESULTS"; }
{
  verdict=PASS
  rc=$(res | awk '/^VMTEST-END step=systemd /{for (i = 2; i <= NF; i++) if ($i ~ /^rc=/) print substr($i, 4)}')
  secs=$(res | awk '/^VMTEST-END step=systemd /{for (i = 2; i <= NF; i++) if ($i ~ /^seconds=/) print substr($i, 9)}')
  echo "kernel $KERNEL: $(cat "$KDIR/package"), accel $ACCEL, wall ${wall}s"
  res | grep -E '^VMTEST-BOOT(ED)? ' || true
  res | grep -E '^\s+(systemd_test.go:[0-9]+: )?(step |bind loop:|without CAP_)' | sed 's/^ */  /' || true
  if ! res | grep -q '^VMTEST-DONE'; then
    verdict=ERROR
    echo "no result from the VM (qemu exit $qrc$([ "$qrc" = 124 ] && echo ", timed out after ${TIMEOUT}s")); last lines of the console:"
    tr -d '\r' <"$CONSOLE" | tail -n 25 | sed 's/^/  | /'
  elif [ "$rc" != 0 ]; then
    verdict=FAIL
    echo "the guest test failed (exit $rc):"
    res | awk '/^VMTEST-BEGIN step=systemd$/{on=1; next} /^VMTEST-END step=systemd /{on=0} on' | grep -E -- '--- FAIL|_test.go:' | head -40 | sed 's/^/  /'
  fi
  echo "VMTEST-RESULT kernel=$KERNEL accel=$ACCEL result=$verdict test=${secs:-?}s wall=${wall}s"
} | tee "$OUT/summary"
case $(tail -1 "$OUT/summary") in
  *result=PASS*) exit 0 ;;
  *result=FAIL*) exit 1 ;;
  *) exit 2 ;;
esac
