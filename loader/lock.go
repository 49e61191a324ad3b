package loader

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockPinPath takes an exclusive lock (flock) on the pin directory for the
// life of the Loader. Two daemons on one pin path would take over each
// other's links, and the first to exit would detach the programs the other
// believes in force.
func lockPinPath(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("lock pin path: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if err == nil {
		return f, nil
	}
	f.Close()
	if errors.Is(err, unix.EWOULDBLOCK) {
		return nil, fmt.Errorf("pin path %s is in use by another bindguard (%s); stop it first, or give this one another --pin-path", dir, holderText(dir))
	}
	return nil, fmt.Errorf("lock pin path %s: %w", dir, err)
}

// PinPathHolder reports whether a running daemon holds the pin directory,
// and its pid when /proc/locks tells (0 otherwise).
func PinPathHolder(dir string) (pid int, held bool) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_SH|unix.LOCK_NB); err == nil {
		return 0, false // the lock is released with f
	}
	pid, _ = lockHolder(dir)
	return pid, true
}

func holderText(dir string) string {
	if pid, err := lockHolder(dir); err == nil {
		return "pid " + strconv.Itoa(pid)
	}
	return "pid unknown"
}

// lockHolder finds the pid holding a flock on dir in /proc/locks, whose
// lines read "1: FLOCK  ADVISORY  WRITE 4242 00:1d:1234 0 EOF".
func lockHolder(dir string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, err
	}
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	f, err := os.Open("/proc/locks")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		for i, w := range fields {
			if w != "FLOCK" || i+4 >= len(fields) || fields[i+4] != want {
				continue
			}
			if pid, err := strconv.Atoi(fields[i+3]); err == nil {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no flock on %s in /proc/locks", dir)
}
