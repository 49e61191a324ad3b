# shellcheck shell=bash
# vmtest-qemu.sh: how scripts/vmtest.sh and scripts/vmtest-systemd.sh boot
# their guest, sourced by both so the two VMs stay alike. Not run on its own.

# qemu_boot CONSOLE APPEND boots $KDIR/vmlinuz with $STAGE/initramfs.cpio
# under QEMU ($ACCEL: kvm or tcg; 2 CPUs, 2G, killed after $TIMEOUT s) and
# sets QEMU_PID. It makes $OUT and sets CONSOLE (the guest's ttyS0) and
# RESULTS (its ttyS1, emptied first) in it. CONSOLE=stdio puts ttyS0 on
# QEMU's output, both into $CONSOLE; CONSOLE=file writes ttyS0 to $CONSOLE
# and QEMU's own output to $OUT/qemu.log. APPEND is the kernel command line
# after console=ttyS0. QEMU runs in the background, so that an interrupt
# reaches the caller's trap (and through timeout, QEMU) at once.
qemu_boot() {
  local serial out accel
  mkdir -p "$OUT"
  CONSOLE=$OUT/console.log
  RESULTS=$OUT/results.log
  : >"$RESULTS"
  case $1 in
    stdio) serial=stdio out=$CONSOLE ;;
    file) serial=file:$CONSOLE out=$OUT/qemu.log ;;
    *) die "qemu_boot: console '$1': want stdio or file" ;;
  esac
  if [ "$ACCEL" = kvm ]; then
    accel=(-accel kvm -cpu host)
  else
    accel=(-accel "tcg,thread=multi" -cpu max)
  fi
  log "booting under qemu ($ACCEL, 2 CPUs, 2G, timeout ${TIMEOUT}s); console: $CONSOLE"
  timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${accel[@]}" -machine q35 -m 2G -smp 2 \
    -nographic -no-reboot -monitor none -nic none \
    -kernel "$KDIR/vmlinuz" -initrd "$STAGE/initramfs.cpio" \
    -append "console=ttyS0 $2" -serial "$serial" -serial "file:$RESULTS" </dev/null >"$out" 2>&1 &
  QEMU_PID=$!
}
