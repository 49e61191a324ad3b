package autobind

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testutils"
)

// TestReserveHostSysctl reserves a port in the host's real sysctl and
// releases it: the value afterwards is exactly what it was, and a cleanup
// restores it whatever happens.
func TestReserveHostSysctl(t *testing.T) {
	testutils.Privileged(t)
	orig, err := os.ReadFile(ReservedPortsSysctl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(ReservedPortsSysctl, orig, 0); err != nil {
			t.Errorf("restore %s to %q: %v", ReservedPortsSysctl, orig, err)
		}
	})
	before, err := ParseList(string(orig))
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(40917)
	for before[port] {
		port++
	}
	r := New(filepath.Join(t.TempDir(), "state"))
	if err := r.Reserve([]uint16{port}); err != nil {
		t.Fatal(err)
	}
	now, err := readList(ReservedPortsSysctl)
	if err != nil || !now[port] || len(now) != len(before)+1 {
		t.Errorf("after Reserve(%d): %s (%v), before %s", port, now, err, before)
	}
	if err := r.Release(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(ReservedPortsSysctl); string(after) != string(orig) {
		t.Errorf("after Release: %q, want %q", after, orig)
	}
}

// inPrivateNetns runs f on a thread in a new network namespace with lo up;
// the thread is never reused. The namespace has its own reserved ports, so
// the host's sysctl and sockets are left alone.
func inPrivateNetns(t *testing.T, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- fmt.Errorf("unshare: %w", err)
			return
		}
		if err := loUp(); err != nil {
			done <- err
			return
		}
		done <- f()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func loUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// autobindPort makes a socket of typ whose autobind may only pick ports in
// [lo, hi] (IP_LOCAL_PORT_RANGE), lets the kernel bind it the way named by
// how, and returns the port it got (0 when the kernel found none).
func autobindPort(typ int, lo, hi uint16, how string, peer int) (uint16, error) {
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_LOCAL_PORT_RANGE, int(lo)|int(hi)<<16); err != nil {
		return 0, fmt.Errorf("IP_LOCAL_PORT_RANGE: %w", err)
	}
	loop := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: peer}
	switch how {
	case "bind0":
		err = unix.Bind(fd, &unix.SockaddrInet4{})
	case "listen":
		err = unix.Listen(fd, 1)
	case "sendto":
		err = unix.Sendto(fd, []byte("x"), 0, loop)
	case "connect":
		err = unix.Connect(fd, loop)
	}
	if errors.Is(err, unix.EADDRINUSE) || errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EADDRNOTAVAIL) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("%s: %w", how, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	return uint16(sa.(*unix.SockaddrInet4).Port), nil
}

// autobindPath is one way to let the kernel choose a port.
type autobindPath struct {
	typ  int
	how  string
	peer int
}

// checkPaths makes one socket on each path with IP_LOCAL_PORT_RANGE [p, p]
// and wants each to get p (reserved false) or anything else (reserved true).
func checkPaths(paths []autobindPath, p uint16, reserved bool) error {
	for _, x := range paths {
		got, err := autobindPort(x.typ, p, p, x.how, x.peer)
		if err != nil || (got == p) == reserved {
			return fmt.Errorf("reserved %v: %s on type %d got port %d (%v)", reserved, x.how, x.typ, got, err)
		}
	}
	return nil
}

// explicitBind binds a UDP socket to port p and closes it. UDP: a TCP
// connect may still hold p in FIN_WAIT.
func explicitBind(p uint16) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(p)}); err != nil {
		return fmt.Errorf("explicit bind of reserved %d: %w", p, err)
	}
	return nil
}

// TestReservationClosesAutobind shows the bypass and its closing, in a
// private network namespace: with IP_LOCAL_PORT_RANGE [P, P] (Linux 6.3) a
// listen, bind(0), sendto or connect gets exactly P; with P reserved none
// does, and with ip_local_port_range [P, P+1] rounds of bind(0) that take
// every free port never get P. An explicit bind of P still works.
func TestReservationClosesAutobind(t *testing.T) {
	testutils.Privileged(t)
	const p, server = 40123, 45555
	dir := t.TempDir()
	inPrivateNetns(t, func() error {
		l, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(l)
		if err := unix.Bind(l, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: server}); err != nil {
			return err
		}
		if err := unix.Listen(l, 512); err != nil {
			return err
		}
		// First, while no connection holds P (a closed connect leaves it in
		// FIN_WAIT or TIME_WAIT).
		before, err := loopBind0(p, p+1)
		if err != nil || before[p] != 100 {
			return fmt.Errorf("without the reservation 100 rounds of 2 bind(0) over [%d, %d] got %v (%v), want %d in every round", p, p+1, before, err, p)
		}
		paths := []autobindPath{{unix.SOCK_STREAM, "listen", 0}, {unix.SOCK_STREAM, "bind0", 0},
			{unix.SOCK_DGRAM, "sendto", 9}, {unix.SOCK_DGRAM, "bind0", 0}, {unix.SOCK_STREAM, "connect", server}}
		if _, err := autobindPort(unix.SOCK_STREAM, p, p, "bind0", 0); errors.Is(err, unix.ENOPROTOOPT) {
			t.Logf("no IP_LOCAL_PORT_RANGE (Linux 6.3): only the bind(0) loop runs")
			paths = nil
		}
		if err := checkPaths(paths, p, false); err != nil {
			return err
		}
		r := New(filepath.Join(dir, "state")) // opened from this thread: this namespace's sysctl
		if err := r.Reserve([]uint16{p}); err != nil {
			return err
		}
		if err := errors.Join(explicitBind(p), checkPaths(paths, p, true)); err != nil {
			return err
		}
		after, err := loopBind0(p, p+1)
		if err != nil || after[p] != 0 || after[p+1] != 100 || after[0] != 100 {
			return fmt.Errorf("100 rounds of 2 bind(0) over [%d, %d] with %d reserved got %v (port: count; 0 is none), %v", p, p+1, p, after, err)
		}
		t.Logf("100 rounds of 2 bind(0) over [%d, %d]: without the reservation %v, with %d reserved %v", p, p+1, before, p, after)
		return r.Release()
	})
}

// loopBind0 sets this network namespace's ip_local_port_range to [lo, hi]
// and runs 100 rounds of binding hi-lo+1 TCP sockets to port 0, all held
// open until the round ends so that every free port of the range gets taken;
// it counts the ports they got (0: the kernel found none). It puts the
// namespace's default range back.
func loopBind0(lo, hi uint16) (_ map[uint16]int, err error) {
	if err := os.WriteFile(PortRangeSysctl, fmt.Appendf(nil, "%d %d\n", lo, hi), 0); err != nil {
		return nil, err
	}
	defer func() {
		err = errors.Join(err, os.WriteFile(PortRangeSysctl, []byte("32768 60999\n"), 0))
	}()
	hits := map[uint16]int{}
	for round := 0; round < 100; round++ {
		var fds []int
		for i := lo; i <= hi; i++ {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return nil, err
			}
			fds = append(fds, fd)
			if err := unix.Bind(fd, &unix.SockaddrInet4{}); err != nil {
				hits[0]++
				continue
			}
			sa, err := unix.Getsockname(fd)
			if err != nil {
				return nil, err
			}
			hits[uint16(sa.(*unix.SockaddrInet4).Port)]++
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	return hits, nil
}
