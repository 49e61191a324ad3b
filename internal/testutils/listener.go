package testutils

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const listenerEnv = "BINDGUARD_TEST_LISTENER"

// MaybeListener turns the process into a listener when started by
// StartListener. Call it first thing in TestMain, next to MaybeBinder.
func MaybeListener() {
	if os.Getenv(listenerEnv) != "1" {
		return
	}
	os.Exit(listenerMain(os.Stdin, os.Stdout))
}

// listenerMain serves "PROTO FAMILY ADDR PORT" lines with "ok INODE" or
// "err ERRNO", keeping every socket it opened (TCP ones listening) until its
// input closes.
func listenerMain(in io.Reader, out io.Writer) int {
	s := bufio.NewScanner(in)
	w := bufio.NewWriter(out)
	var fds []int
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) != 4 {
			fmt.Fprintf(w, "bad %q\n", s.Text())
			w.Flush()
			continue
		}
		port, _ := strconv.Atoi(f[3])
		fd, err := listenOnce(f[0], f[1], f[2], port)
		if err != nil {
			fmt.Fprintf(w, "err %d\n", err.(syscall.Errno))
		} else {
			fds = append(fds, fd)
			var st unix.Stat_t
			unix.Fstat(fd, &st)
			fmt.Fprintf(w, "ok %d\n", st.Ino)
		}
		w.Flush()
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	return 0
}

func listenOnce(proto, family, addr string, port int) (int, error) {
	fd, err := openBound(proto, family, addr, port)
	if err == nil && proto != "udp" {
		if err = unix.Listen(fd, 16); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	return fd, err
}

// Listener is a process placed in a cgroup (optionally under another uid or
// in a new network namespace) that binds sockets on request and holds them:
// TCP sockets listen, UDP sockets stay bound, until Stop.
type Listener struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	PID int
}

// StartListener starts a listener in the cgroup directory cgroupAbs. It is
// the test binary itself; its TestMain must call MaybeListener.
func StartListener(tb testing.TB, cgroupAbs string, o BinderOptions) *Listener {
	tb.Helper()
	cmd, in, out := startHelper(tb, "listener", listenerEnv, cgroupAbs, o)
	l := &Listener{cmd: cmd, in: in, out: out, PID: cmd.Process.Pid}
	tb.Cleanup(l.Stop)
	return l
}

// Listen asks the listener to bind one socket and keep it: proto is tcp
// (which also listens) or udp; family "4" or "6". It returns the socket's
// inode, or the errno.
func (l *Listener) Listen(proto, family string, addr netip.Addr, port uint16) (uint64, error) {
	if _, err := fmt.Fprintf(l.in, "%s %s %s %d\n", proto, family, addr, port); err != nil {
		return 0, fmt.Errorf("listener: %w", err)
	}
	line, err := l.out.ReadString('\n')
	if err != nil {
		return 0, fmt.Errorf("listener: %w", err)
	}
	line = strings.TrimSpace(line)
	if n, ok := strings.CutPrefix(line, "ok "); ok {
		ino, _ := strconv.ParseUint(n, 10, 64)
		return ino, nil
	}
	if n, ok := strings.CutPrefix(line, "err "); ok {
		e, _ := strconv.Atoi(n)
		return 0, syscall.Errno(e)
	}
	return 0, errors.New("listener: " + line)
}

// Stop closes the listener's sockets and ends it.
func (l *Listener) Stop() {
	if l.in != nil {
		l.in.Close()
		l.in = nil
		l.cmd.Wait()
	}
}
