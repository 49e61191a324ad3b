package loader

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

func getsockoptBytes(fd, level, opt int, buf []byte) error {
	l := uint32(len(buf))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func nativeUint64(b []byte) uint64 { return binary.NativeEndian.Uint64(b) }
