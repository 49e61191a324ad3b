#!/usr/bin/env bash
# vmtest.sh KERNEL: run bindguard's privileged tests (./test and ./loader) on a
# Debian kernel booted under QEMU.
#
#   KERNEL    5.10  linux-image-amd64 from bullseye (no SO_NETNS_COOKIE: the
#                   loader's sock_create fallback finds the host netns cookie)
#             6.1   linux-image-amd64 from bookworm
#             6.12  linux-image-amd64 from bookworm-backports
#
# The kernel package is fetched with a private apt state (the host's apt
# configuration is neither read nor changed) into a cache, so a second run
# downloads nothing. The guest is a minimal initramfs: busybox-static, the
# bindguard binary and the statically linked test binaries; its /init mounts
# proc, sysfs, devtmpfs, cgroup2, bpffs, debugfs and tracefs, brings up lo,
# runs the tests as root with -test.v and powers off. The kernel console is
# on ttyS0 (this script's stdout); the guest's results go to ttyS1 as well,
# which is what this script parses.
#
# Needs: qemu-system-x86_64 (qemu-system-x86), busybox-static, cpio, apt-get,
# dpkg-deb, Go. Root is not needed (KVM needs access to /dev/kvm).
#
# Environment:
#   VMTEST_CACHE    download cache (default ${XDG_CACHE_HOME:-~/.cache}/bindguard-vmtest)
#   VMTEST_OUT      logs: console.log, results.log, summary (default bin/vmtest/KERNEL)
#   VMTEST_TIMEOUT  seconds before the VM is killed (default 2400)
#   VMTEST_ACCEL    auto (KVM when /dev/kvm works, else TCG), kvm or tcg (default auto)
#   VMTEST_RUN      -test.run pattern for both packages (default: all tests)
#   VMTEST_SKIP     -test.skip pattern: tests that need parts the initramfs does not
#                   have (containerd and runc, nginx/redis, python3, Prometheus, an
#                   API server); they run on the host in make test (default below).
#                   The guest sets BINDGUARD_REQUIRE_PRIVILEGED=1, under which a
#                   missing tool fails a test (testutils.Need): a test that starts
#                   one must be named here, or the VM run fails
#   VMTEST_SUITE    auto (run the suite unless the kernel is below the minimum), 1 or 0
#   VMTEST_EXEC     shell commands (busybox sh) the guest runs first, as step "exec";
#                   for investigations, e.g. VMTEST_EXEC='ulimit -l; bindguard version'
#   VMTEST_REFRESH  1: re-resolve the newest kernel package even when one is cached
#   VMTEST_KEEP     1: keep the staging directory (initramfs tree) for inspection
#   GO              the go command (default: go, or /usr/local/go/bin/go)
#
# Exit status: 0 the kernel behaved as expected (suite passed, or refused
# cleanly below the minimum), 1 it did not, 2 the VM produced no result
# (timeout, panic, boot failure) or the setup failed.
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "vmtest: $*" >&2
  exit 2
}

[ $# -eq 1 ] || usage
KERNEL=$1
case $KERNEL in
  5.10) SUITE=bullseye expect=pass ;;
  6.1) SUITE=bookworm expect=pass ;;
  6.12) SUITE=bookworm-backports expect=pass ;;
  *) echo "vmtest: unknown kernel '$KERNEL' (want 5.10, 6.1 or 6.12)" >&2; usage ;;
esac

cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE=${VMTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bindguard-vmtest}
OUT=${VMTEST_OUT:-$ROOT/bin/vmtest/$KERNEL}
TIMEOUT=${VMTEST_TIMEOUT:-2400}
ACCEL=${VMTEST_ACCEL:-auto}
RUN=${VMTEST_RUN:-}
# python3 (the socket holder): TestScanDifferential, TestScanMovedProcess,
# TestScanOtherNetns, TestScanBusyNode; containerd: TestPod*, TestDifferentialPods,
# TestImageUnderCRI; Prometheus: TestPrometheusFleet; the API server: TestNode*.
SKIP=${VMTEST_SKIP:-'^(TestPod|TestDifferentialPods|TestImageUnderCRI|TestScanBusyNode|TestScanDifferential|TestScanMovedProcess|TestScanOtherNetns|TestPrometheus|TestNode)'}
RUN_SUITE=${VMTEST_SUITE:-auto}
if [ -z "${GO:-}" ]; then
  GO=go
  command -v go >/dev/null || GO=/usr/local/go/bin/go
fi

for tool in qemu-system-x86_64:qemu-system-x86 cpio:cpio apt-get:apt dpkg-deb:dpkg timeout:coreutils flock:util-linux; do
  command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} not found (apt-get install ${tool#*:})"
done
BUSYBOX=/bin/busybox
if ! [ -x "$BUSYBOX" ] || ! "$BUSYBOX" --list >/dev/null 2>&1; then
  die "$BUSYBOX not found (apt-get install busybox-static)"
fi
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "$BUSYBOX is dynamically linked; the guest needs busybox-static (apt-get install busybox-static)"
fi
command -v "$GO" >/dev/null || die "go not found (set GO=)"

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/bindguard-vmtest.XXXXXX")
QEMU_PID=
TAIL_PID=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local pid
  for pid in $QEMU_PID $TAIL_PID; do
    kill "$pid" 2>/dev/null && { wait "$pid" 2>/dev/null || true; }
  done
  if [ "${VMTEST_KEEP:-0}" = 1 ]; then echo "vmtest: kept $STAGE" >&2; else rm -rf "$STAGE"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start=$(date +%s)
log() { printf 'vmtest[%s +%ss]: %s\n' "$KERNEL" $(($(date +%s) - start)) "$*" >&2; }
# shellcheck source=scripts/vmtest-qemu.sh
. scripts/vmtest-qemu.sh

# ---- the kernel ------------------------------------------------------------

# apt with its own sources, lists, cache and (empty) dpkg status: APT_CONFIG
# is read before /etc/apt, and Dir::Etc points away from it.
APTDIR=$CACHE/apt/$SUITE
apt_private() {
  APT_CONFIG=$APTDIR/apt.conf apt-get -q "$@"
}
apt_setup() {
  mkdir -p "$APTDIR"/etc/apt.conf.d "$APTDIR"/etc/preferences.d "$APTDIR"/etc/sources.list.d \
    "$APTDIR"/state/lists/partial "$APTDIR"/cache/archives/partial
  [ -f "$APTDIR/state/status" ] || : >"$APTDIR/state/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" \
    >"$APTDIR/etc/sources.list"
  cat >"$APTDIR/apt.conf" <<EOF
Dir::Etc "$APTDIR/etc";
Dir::Etc::SourceList "$APTDIR/etc/sources.list";
Dir::Etc::SourceParts "$APTDIR/etc/sources.list.d";
Dir::Etc::Parts "$APTDIR/etc/apt.conf.d";
Dir::Etc::Preferences "$APTDIR/etc/preferences";
Dir::Etc::PreferencesParts "$APTDIR/etc/preferences.d";
Dir::State "$APTDIR/state";
Dir::State::status "$APTDIR/state/status";
Dir::Cache "$APTDIR/cache";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Debug::NoLocking "true";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
}

# The kernel of a suite is kept in $KDIR: vmlinuz, config and "package"
# (name=version). Once there, nothing is downloaded again unless VMTEST_REFRESH=1
# (which takes the suite's newest linux-image-amd64).
KDIR=$CACHE/kernels/$KERNEL
fetch_kernel() {
  [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || die "no /usr/share/keyrings/debian-archive-keyring.gpg (apt-get install debian-archive-keyring)"
  apt_setup
  log "resolving linux-image-amd64 in $SUITE (private apt state in $APTDIR)"
  apt_private update >"$STAGE/apt.log" 2>&1 || { cat "$STAGE/apt.log" >&2; die "apt-get update for $SUITE failed"; }
  local pkg ver deb
  pkg=$(APT_CONFIG=$APTDIR/apt.conf apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ {print $2; exit}')
  [ -n "$pkg" ] || die "cannot resolve linux-image-amd64 in $SUITE"
  ver=$(APT_CONFIG=$APTDIR/apt.conf apt-cache policy "$pkg" | awk '$1 == "Candidate:" {print $2}')
  log "downloading $pkg=$ver"
  # The package alone (apt-get download resolves no dependencies).
  (cd "$APTDIR/cache/archives" && apt_private download "$pkg=$ver") >"$STAGE/apt.log" 2>&1 ||
    { cat "$STAGE/apt.log" >&2; die "downloading $pkg=$ver failed"; }
  local debs=("$APTDIR"/cache/archives/"${pkg}"_*.deb)
  deb=${debs[0]}
  [ -f "$deb" ] || die "apt-get download left no $pkg .deb in $APTDIR/cache/archives"
  log "extracting $(basename "$deb")"
  local x=$STAGE/deb
  mkdir -p "$x"
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$x" --wildcards './boot/*'
  local tmp=$KDIR.new
  rm -rf "$tmp" && mkdir -p "$tmp"
  cp "$x"/boot/vmlinuz-* "$tmp/vmlinuz"
  cp "$x"/boot/config-* "$tmp/config"
  echo "$pkg=$ver" >"$tmp/package"
  # Everything bindguard and the guest need is built in (CONFIG_BPF_SYSCALL,
  # CONFIG_CGROUP_BPF, CONFIG_DEBUG_INFO_BTF, CONFIG_SERIAL_8250_CONSOLE,
  # CONFIG_DEVTMPFS, CONFIG_BLK_DEV_INITRD); check rather than assume.
  local opt
  for opt in BPF_SYSCALL CGROUP_BPF DEBUG_INFO_BTF SERIAL_8250_CONSOLE DEVTMPFS BLK_DEV_INITRD NET_NS IPV6; do
    grep -qx "CONFIG_$opt=y" "$tmp/config" || die "$pkg: CONFIG_$opt is not built in; the guest would need its module"
  done
  rm -rf "$KDIR" && mv "$tmp" "$KDIR"
  # Only the kernel is kept (8 MB); lists and .deb (~150 MB) are fetched
  # again, in seconds, by VMTEST_REFRESH=1.
  rm -rf "$APTDIR"
}
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$KERNEL"
flock 9 # one fetch per kernel at a time; runs of other kernels go on
if [ "${VMTEST_REFRESH:-0}" = 1 ] || [ ! -f "$KDIR/vmlinuz" ] || [ ! -f "$KDIR/package" ]; then
  fetch_kernel
fi
exec 9>&-
PACKAGE=$(cat "$KDIR/package")
log "kernel $PACKAGE (cached in $KDIR)"

# ---- the guest ---------------------------------------------------------------

case $RUN_SUITE in
  auto) [ "$expect" = pass ] && RUN_SUITE=1 || RUN_SUITE=0 ;;
  0 | 1) ;;
  *) die "VMTEST_SUITE must be auto, 0 or 1" ;;
esac

INITRD=$STAGE/root
mkdir -p "$INITRD"/{bin,dev,proc,sys,tmp,run,pkg/test,pkg/loader}
log "building bindguard and the test binaries (CGO_ENABLED=0)"
export CGO_ENABLED=0
"$GO" build -trimpath -ldflags "-X main.version=vmtest" -o "$INITRD/bin/bindguard" ./cmd/bindguard
if [ "$RUN_SUITE" = 1 ]; then
  "$GO" test -c -o "$INITRD/bin/test.test" ./test
  "$GO" test -c -o "$INITRD/bin/loader.test" ./loader
fi
cp "$BUSYBOX" "$INITRD/bin/busybox"
printf '%s\n' "${VMTEST_EXEC:-}" >"$INITRD/vmtest-exec.sh"

cat >"$INITRD/vmtest.env" <<EOF
VMTEST_KERNEL='$KERNEL'
VMTEST_RUN='$RUN'
VMTEST_SKIP='$SKIP'
VMTEST_SUITE='$RUN_SUITE'
VMTEST_GUEST_TIMEOUT='$((TIMEOUT * 9 / 10))s'
EOF

# /init runs as PID 1 with no console yet (there is no /dev/console in an
# unprivileged-built initramfs): it mounts devtmpfs, then reopens the console.
cat >"$INITRD/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mkdir -p /dev
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TMPDIR=/tmp
. /vmtest.env

off() {
  sync
  poweroff -f
  echo o >/proc/sysrq-trigger
  sleep 10
}
trap off EXIT

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /sys/fs/cgroup /sys/fs/bpf /root
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
ip link set lo up
hostname vmtest

main() {
  echo "VMTEST-BOOT kernel=$(uname -r) cpus=$(nproc) mem=$(awk '/MemTotal/{print $2}' /proc/meminfo)kB"
  if [ -s /vmtest-exec.sh ] && [ "$(cat /vmtest-exec.sh)" != "" ]; then
    echo "VMTEST-BEGIN step=exec"
    (cd /tmp && sh -x /vmtest-exec.sh)
    echo "VMTEST-END step=exec rc=$?"
  fi
  echo "VMTEST-BEGIN step=version"
  /bin/bindguard version
  echo "VMTEST-END step=version rc=$?"

  # Does `bindguard run` start, or refuse? Attached to a child cgroup.
  echo "VMTEST-BEGIN step=run"
  mkdir -p /sys/fs/cgroup/vmtest-probe
  rm -f /tmp/ready
  /bin/bindguard run --registry builtin:openshift --node-label role=worker --mode audit \
    --cgroup /vmtest-probe --ready-file /tmp/ready --log-format text >/tmp/run.out 2>&1 &
  pid=$!
  state=timeout
  i=0
  while [ $i -lt 600 ]; do
    if [ -e /tmp/ready ]; then state=started; break; fi
    if ! kill -0 $pid 2>/dev/null; then state=exited; break; fi
    sleep 0.1
    i=$((i + 1))
  done
  kill -TERM $pid 2>/dev/null
  wait $pid
  rc=$?
  cat /tmp/run.out
  echo "VMTEST-END step=run state=$state rc=$rc"

  if [ "$VMTEST_SUITE" = 1 ]; then
    for p in loader test; do
      echo "VMTEST-BEGIN step=$p"
      cd /pkg/$p
      # -test.short: under TCG the heavy tests run smaller (fewer rounds,
      # fewer cgroups); the host runs them in full in make test.
      set -- -test.v -test.count=1 -test.short -test.timeout="$VMTEST_GUEST_TIMEOUT"
      [ -n "$VMTEST_RUN" ] && set -- "$@" -test.run "$VMTEST_RUN"
      [ -n "$VMTEST_SKIP" ] && set -- "$@" -test.skip "$VMTEST_SKIP"
      t0=$(date +%s)
      # No API server test bed in the VM: the node tests skip (they are about the API, not the kernel).
      BINDGUARD_REQUIRE_PRIVILEGED=1 BINDGUARD_SKIP_TESTBED=1 BINDGUARD_BIN=/bin/bindguard /bin/$p.test "$@"
      rc=$?
      echo "VMTEST-END step=$p rc=$rc seconds=$(($(date +%s) - t0))"
    done
  fi
  echo "VMTEST-DONE kernel=$(uname -r)"
}
# The console shows everything; ttyS1 gets the same, for the host to parse.
main 2>&1 | tee /dev/ttyS1
EOF
chmod 755 "$INITRD/init"

(cd "$INITRD" && find . -print0 | cpio --null -o -H newc --quiet) >"$STAGE/initramfs.cpio"

# ---- boot ------------------------------------------------------------------

# /dev/kvm can be there and still not run a guest (nested under another
# hypervisor, a guest can hang in the kernel's decompressor): boot the kernel
# once with an initramfs that only says hello. The answer is kept per host
# boot, so only the first run of a boot pays for a hang (20 s).
kvm_works() {
  [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
  local bootid memo
  bootid=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown)
  memo=$CACHE/kvm-probe
  if [ -f "$memo" ] && [ "$(head -1 "$memo")" = "$bootid" ]; then
    [ "$(sed -n 2p "$memo")" = yes ]
    return
  fi
  local p=$STAGE/kvm-probe
  mkdir -p "$p/root/bin"
  cp "$BUSYBOX" "$p/root/bin/busybox"
  printf '#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs d /dev\n/bin/busybox echo VMTEST-KVM-OK >/dev/console\n/bin/busybox poweroff -f\n' >"$p/root/init"
  chmod 755 "$p/root/init"
  (cd "$p/root" && find . -print0 | cpio --null -o -H newc --quiet) >"$p/initramfs.cpio"
  local ok=no
  if timeout -k 5 20 qemu-system-x86_64 -accel kvm -cpu host -machine q35 -m 512M -nographic -no-reboot \
    -monitor none -nic none -kernel "$KDIR/vmlinuz" -initrd "$p/initramfs.cpio" \
    -append "console=ttyS0 panic=-1 quiet" -serial stdio </dev/null 2>&1 | grep -q VMTEST-KVM-OK; then
    ok=yes
  fi
  mkdir -p "$CACHE" && printf '%s\n%s\n' "$bootid" "$ok" >"$memo"
  [ "$ok" = yes ]
}
case $ACCEL in
  auto)
    log "checking whether KVM runs a guest here"
    if kvm_works; then ACCEL=kvm; else ACCEL=tcg; fi ;;
  kvm) kvm_works || die "VMTEST_ACCEL=kvm but KVM is not usable here" ;;
  tcg) ;;
  *) die "VMTEST_ACCEL must be auto, kvm or tcg" ;;
esac
# A soft lockup or an RCU stall panics the guest (panic=-1: it exits at once)
# with the stuck CPU's backtrace on the console (loglevel=5 shows it), not a
# hang until VMTEST_TIMEOUT with one line per 28 s and no trace.
qemu_boot stdio "panic=-1 oops=panic softlockup_panic=1 softlockup_all_cpu_backtrace=1 sysctl.kernel.panic_on_rcu_stall=1 quiet loglevel=5 mitigations=off"
tail -n +1 --pid="$QEMU_PID" -f "$CONSOLE" &
TAIL_PID=$!
qrc=0
wait "$QEMU_PID" || qrc=$?
QEMU_PID=
wait "$TAIL_PID" || true
TAIL_PID=
wall=$(($(date +%s) - start))

# ---- results -----------------------------------------------------------------

# step_out STEP prints what the guest printed between VMTEST-BEGIN and VMTEST-END.
step_out() {
  tr -d '\r' <"$RESULTS" | awk -v s="$1" '$0 ~ "^VMTEST-BEGIN step="s"$" {on=1; next} $0 ~ "^VMTEST-END step="s" " {on=0} on'
}
end_field() { # end_field STEP FIELD
  tr -d '\r' <"$RESULTS" | awk -v s="$1" -v f="$2" '$0 ~ "^VMTEST-END step="s" " {for (i = 2; i <= NF; i++) if (index($i, f"=") == 1) print substr($i, length(f) + 2)}'
}
count() { # count STEP KIND [sub]: top-level tests (or subtests) with that verdict
  if [ "${3:-}" = sub ]; then
    step_out "$1" | grep -cE "^[[:space:]]+--- $2: " || true
  else
    step_out "$1" | grep -cE "^--- $2: " || true
  fi
}

summary=$OUT/summary
{
  guest=$(tr -d '\r' <"$RESULTS" | awk '/^VMTEST-BOOT /{sub(/^kernel=/, "", $2); print $2}')
  verdict=PASS
  if ! tr -d '\r' <"$RESULTS" | grep -q '^VMTEST-DONE '; then
    verdict=ERROR
    why="no result from the VM (qemu exit $qrc$([ "$qrc" = 124 ] && echo ", timed out after ${TIMEOUT}s")); see $CONSOLE"
  fi
  run_state=$(end_field run state)
  run_rc=$(end_field run rc)
  echo "kernel $KERNEL: $PACKAGE, uname -r ${guest:-?}, accel $ACCEL, wall ${wall}s"
  echo "bindguard run: ${run_state:-?} (exit ${run_rc:-?})"
  if [ "$expect" = refuse ] && [ "$verdict" != ERROR ]; then
    # Below the minimum: run must exit non-zero before it is ready, with a
    # sentence that names a kernel release ("... (Linux 5.14) ...").
    if [ "$run_state" = exited ] && [ "$run_rc" != 0 ] && step_out run | grep -qE 'Linux [0-9]+\.[0-9]+'; then
      echo "refused as expected:"
    else
      verdict=FAIL
      echo "expected a refusal naming the missing feature and its kernel release; got:"
    fi
    step_out run | sed 's/^/  | /'
  elif [ "$run_state" != started ] && [ "$verdict" != ERROR ]; then
    verdict=FAIL
    echo "bindguard run did not start:"
    step_out run | sed 's/^/  | /'
  fi
  if step_out run | grep -q 'cannot tell'; then
    echo "warning: some feature probes could not tell (before Linux 5.11, BPF objects count against RLIMIT_MEMLOCK; see docs/kernels.md)"
  fi
  if [ "$RUN_SUITE" = 1 ]; then
    for p in loader test; do
      rc=$(end_field "$p" rc)
      secs=$(end_field "$p" seconds)
      echo "$p: exit ${rc:-?} in ${secs:-?}s; tests: $(count "$p" PASS) passed, $(count "$p" FAIL) failed, $(count "$p" SKIP) skipped;" \
        "subtests: $(count "$p" PASS sub) passed, $(count "$p" FAIL sub) failed, $(count "$p" SKIP sub) skipped"
      if [ "$rc" != 0 ]; then
        [ "$verdict" = ERROR ] || [ "$expect" = refuse ] || verdict=FAIL
        # Each failed test with the first lines it logged (file:line: message).
        step_out "$p" | awk '
          /^=== RUN   / { name = $3; n = 0; delete logs }
          /^[[:space:]]+[A-Za-z0-9_]+_test\.go:[0-9]+: / { if (n < 3) logs[n++] = $0 }
          /^[[:space:]]*--- FAIL: / { print "  " $0; if ($3 == name) { for (i = 0; i < n; i++) print "      " substr(logs[i], 1, 300); n = 0 } }'
      fi
    done
  fi
  if [ "$verdict" = ERROR ]; then
    echo "$why"
    echo "last lines of the console:"
    tr -d '\r' <"$CONSOLE" | tail -n 20 | sed 's/^/  | /'
  fi
  echo "VMTEST-RESULT kernel=$KERNEL release=${guest:-unknown} accel=$ACCEL result=$verdict wall=${wall}s"
} | tee "$summary"

case $(tail -1 "$summary") in
  *result=PASS*) exit 0 ;;
  *result=FAIL*) exit 1 ;;
  *) exit 2 ;;
esac
