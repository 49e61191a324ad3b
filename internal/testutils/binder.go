package testutils

import (
	"bufio"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const binderEnv = "BINDGUARD_TEST_BINDER"

// MaybeBinder turns the process into a binder when started by StartBinder.
// Call it first thing in TestMain.
func MaybeBinder() { maybeServe(binderEnv, binderMain) }

// binderMain serves "PROTO FAMILY ADDR PORT" lines with "ok" or "err ERRNO",
// "autobind PROTO FAMILY ADDR PORT" lines with "ok PORT" or "err ERRNO", and
// "pid" with the binder's pid.
func binderMain(in io.Reader, out io.Writer) int {
	serveLines(in, out, binderReply)
	return 0
}

func binderReply(f []string) string {
	switch {
	case len(f) == 1 && f[0] == "pid":
		return strconv.Itoa(os.Getpid())
	case len(f) == 5 && f[0] == "autobind":
		lo, _ := strconv.Atoi(f[4])
		port, err := autobindOnce(f[1], f[2], f[3], lo)
		if err != nil {
			return errReply(err)
		}
		return "ok " + strconv.Itoa(port)
	case len(f) == 4:
		port, _ := strconv.Atoi(f[3])
		if err := bindOnce(f[0], f[1], f[2], port); err != nil {
			return errReply(err)
		}
		return "ok"
	}
	return ""
}

func bindOnce(proto, family, addr string, port int) error {
	fd, err := openBound(proto, family, addr, port)
	if err == nil {
		unix.Close(fd)
	}
	return err
}

// ipLocalPortRange is IP_LOCAL_PORT_RANGE (Linux 6.3): a socket's own
// ephemeral range, low port in the low 16 bits, high in the high 16.
const ipLocalPortRange = 51

// autobindOnce binds port 0 with the socket's ephemeral range narrowed to
// the one port want, as an attacker would to take a declared port without
// an explicit bind, and returns the port it got.
func autobindOnce(proto, family, addr string, want int) (int, error) {
	fd, err := openSocket(proto, family)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, ipLocalPortRange, want|want<<16); err != nil {
		return 0, err
	}
	if err := unix.Bind(fd, sockaddr(family, addr, 0)); err != nil {
		return 0, err
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return 0, err
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return a.Port, nil
	case *unix.SockaddrInet6:
		return a.Port, nil
	}
	return 0, unix.EAFNOSUPPORT
}

func openSocket(proto, family string) (int, error) {
	typ, p := unix.SOCK_STREAM, unix.IPPROTO_TCP
	switch proto {
	case "udp":
		typ, p = unix.SOCK_DGRAM, unix.IPPROTO_UDP
	case "mptcp":
		p = unix.IPPROTO_MPTCP
	}
	af := unix.AF_INET
	if family == "6" {
		af = unix.AF_INET6
	}
	return unix.Socket(af, typ|unix.SOCK_CLOEXEC, p)
}

func sockaddr(family, addr string, port int) unix.Sockaddr {
	a := netip.MustParseAddr(addr)
	if family == "6" {
		return &unix.SockaddrInet6{Port: port, Addr: a.As16()}
	}
	return &unix.SockaddrInet4{Port: port, Addr: a.As4()}
}

// openBound creates a socket (proto tcp, udp or mptcp; family "4" or "6")
// and binds it to addr:port. It returns the open socket or the errno.
func openBound(proto, family, addr string, port int) (int, error) {
	sa := sockaddr(family, addr, port)
	fd, err := openSocket(proto, family)
	if err != nil {
		return -1, err
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Binder is a process placed in a cgroup (and optionally under another uid or
// in a new network namespace) that binds on request.
type Binder struct {
	helperProc
}

// BinderOptions place the binder.
type BinderOptions struct {
	UID    *uint32
	NewNet bool
}

// StartBinder starts a binder in the cgroup directory cgroupAbs. The binder
// is the test binary itself; its TestMain must call MaybeBinder.
func StartBinder(tb testing.TB, cgroupAbs string, o BinderOptions) *Binder {
	tb.Helper()
	b := &Binder{}
	startHelper(tb, &b.helperProc, "binder", binderEnv, cgroupAbs, o)
	tb.Cleanup(b.Stop)
	return b
}

// startHelper re-executes the test binary with env=1, placed in cgroupAbs
// from its first instruction (CLONE_INTO_CGROUP), and fills in h.
func startHelper(tb testing.TB, h *helperProc, what, env, cgroupAbs string, o BinderOptions) {
	tb.Helper()
	cg, err := os.Open(cgroupAbs)
	if err != nil {
		tb.Fatal(err)
	}
	defer cg.Close()
	exe, err := binderExecutable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	// A -race test binary sleeps a second at exit unless told not to.
	cmd.Env = append(os.Environ(), env+"=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	if o.UID != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: *o.UID, Gid: *o.UID, NoSetGroups: true}
	}
	if o.NewNet {
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNET
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", what, err)
	}
	h.what, h.cmd, h.in, h.out, h.PID = what, cmd, in, bufio.NewReader(out), cmd.Process.Pid
}

// Bind asks the binder to bind (and close) one socket. proto is tcp, udp or
// mptcp; family "4" or "6" is the socket's family (an IPv4-mapped address on
// family 6 exercises bind6). It returns nil or the errno.
func (b *Binder) Bind(proto, family string, addr netip.Addr, port uint16) error {
	_, err := b.request("%s %s %s %d", proto, family, addr, port)
	return err
}

// Autobind asks the binder to bind port 0 with its ephemeral range set to
// the one port want (IP_LOCAL_PORT_RANGE), and returns the port it got.
func (b *Binder) Autobind(proto, family string, addr netip.Addr, want uint16) (uint16, error) {
	v, err := b.request("autobind %s %s %s %d", proto, family, addr, want)
	if err != nil {
		return 0, err
	}
	p, _ := strconv.Atoi(v)
	return uint16(p), nil
}

// Move puts the binder into another cgroup (its new sockets are judged there).
func (b *Binder) Move(cgroupAbs string) error {
	return os.WriteFile(filepath.Join(cgroupAbs, "cgroup.procs"), []byte(strconv.Itoa(b.PID)), 0)
}

var (
	binderOnce sync.Once
	binderPath string
	binderErr  error
)

// binderExecutable is a copy of the test binary that any uid may run: go test
// builds it in a directory only root can enter.
func binderExecutable() (string, error) {
	binderOnce.Do(func() {
		exe, err := os.Executable()
		if err != nil {
			binderErr = err
			return
		}
		dir, err := os.MkdirTemp("", "bindguard-binder-")
		if err != nil {
			binderErr = err
			return
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			binderErr = err
			return
		}
		data, err := os.ReadFile(exe)
		if err != nil {
			binderErr = err
			return
		}
		binderPath = filepath.Join(dir, filepath.Base(exe))
		binderErr = os.WriteFile(binderPath, data, 0o755)
	})
	return binderPath, binderErr
}

// CleanupBinder removes the binder copy; call it at the end of TestMain.
func CleanupBinder() {
	if binderPath != "" {
		os.RemoveAll(filepath.Dir(binderPath))
	}
}
