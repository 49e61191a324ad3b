package testutils

import (
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

const listenerEnv = "BINDGUARD_TEST_LISTENER"

// MaybeListener turns the process into a listener when started by
// StartListener. Call it first thing in TestMain, next to MaybeBinder.
func MaybeListener() { maybeServe(listenerEnv, listenerMain) }

// listenerMain serves "PROTO FAMILY ADDR PORT" lines with "ok INODE" or
// "err ERRNO", keeping every socket it opened (TCP ones listening) until its
// input closes.
func listenerMain(in io.Reader, out io.Writer) int {
	var fds []int
	serveLines(in, out, func(f []string) string {
		if len(f) != 4 {
			return ""
		}
		port, _ := strconv.Atoi(f[3])
		fd, err := listenOnce(f[0], f[1], f[2], port)
		if err != nil {
			return errReply(err)
		}
		fds = append(fds, fd)
		var st unix.Stat_t
		unix.Fstat(fd, &st)
		return fmt.Sprintf("ok %d", st.Ino)
	})
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
	helperProc
}

// StartListener starts a listener in the cgroup directory cgroupAbs. It is
// the test binary itself; its TestMain must call MaybeListener.
func StartListener(tb testing.TB, cgroupAbs string, o BinderOptions) *Listener {
	tb.Helper()
	l := &Listener{}
	startHelper(tb, &l.helperProc, "listener", listenerEnv, cgroupAbs, o)
	tb.Cleanup(l.Stop)
	return l
}

// Listen asks the listener to bind one socket and keep it: proto is tcp
// (which also listens) or udp; family "4" or "6". It returns the socket's
// inode, or the errno.
func (l *Listener) Listen(proto, family string, addr netip.Addr, port uint16) (uint64, error) {
	v, err := l.request("%s %s %s %d", proto, family, addr, port)
	if err != nil {
		return 0, err
	}
	ino, _ := strconv.ParseUint(v, 10, 64)
	return ino, nil
}
