package loader

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
)

// netnsProbeEnv makes a process that links this package create one socket
// and exit: the socket the netns-cookie fallback observes.
const netnsProbeEnv = "BINDGUARD_NETNS_COOKIE_PROBE"

// MaybeNetnsProbe turns the process into the netns-cookie probe when the
// loader started it for that (kernels before 5.14), and returns otherwise.
// Call it first thing in main (and in TestMain of tests that load programs):
// a library does not take over a process from an init function.
func MaybeNetnsProbe() {
	switch os.Getenv(netnsProbeEnv) {
	case "1":
	case "wait":
		// Started outside the probe cgroup: wait until the parent has
		// moved this process in (it writes one byte, or closes stdin).
		os.Stdin.Read(make([]byte, 1))
	default:
		return
	}
	if fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0); err == nil {
		unix.Close(fd)
	}
	os.Exit(0)
}

// HostNetnsCookie returns the cookie of the caller's network namespace: the
// one the programs call the host's. It asks a socket (SO_NETNS_COOKIE, Linux
// 5.14) and, on older kernels, the kernel's own bpf_get_netns_cookie.
func HostNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err == nil {
		return cookie, nil
	}
	if !errors.Is(err, unix.ENOPROTOOPT) {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	cookie, perr := netnsCookieFromProbe()
	if perr != nil {
		return 0, fmt.Errorf("network namespace cookie: no SO_NETNS_COOKIE (Linux 5.14), and the fallback failed: %w", perr)
	}
	return cookie, nil
}

// netnsCookieFromProbe attaches a cgroup/sock_create program to a temporary
// cgroup, starts a process there that creates one socket in this network
// namespace, and reads the cookie the program recorded.
func netnsCookieFromProbe() (_ uint64, err error) {
	spec, err := loadBindguard()
	if err != nil {
		return 0, err
	}
	sub := &ebpf.CollectionSpec{
		Maps:     map[string]*ebpf.MapSpec{bindguardMapBgNetnsProbe: spec.Maps[bindguardMapBgNetnsProbe]},
		Programs: map[string]*ebpf.ProgramSpec{bindguardProgBindguardNetnsProbe: spec.Programs[bindguardProgBindguardNetnsProbe]},
		Types:    spec.Types,
	}
	coll, err := ebpf.NewCollection(sub)
	if err != nil {
		return 0, fmt.Errorf("load probe: %w", err)
	}
	defer coll.Close()

	dir, err := probeCgroup()
	if err != nil {
		return 0, err
	}
	defer func() {
		if rerr := unix.Rmdir(dir); rerr != nil && err == nil {
			err = fmt.Errorf("remove probe cgroup: %w", rerr)
		}
	}()
	ln, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: ebpf.AttachCGroupInetSockCreate, Program: coll.Programs[bindguardProgBindguardNetnsProbe]})
	if err != nil {
		return 0, fmt.Errorf("attach probe: %w", err)
	}
	defer ln.Close()

	if err := runProbe(dir); err != nil {
		return 0, err
	}
	var cookie uint64
	if err := coll.Maps[bindguardMapBgNetnsProbe].Lookup(uint32(0), &cookie); err != nil {
		return 0, fmt.Errorf("read probe: %w", err)
	}
	if cookie == 0 {
		return 0, errors.New("probe saw no socket")
	}
	return cookie, nil
}

// cloneIntoCgroup is false in tests of the path taken when clone3 is refused.
var cloneIntoCgroup = true

// runProbe runs the probe process in the cgroup dir. It is started there
// with clone3(CLONE_INTO_CGROUP); where that answers ENOSYS (systemd's
// RestrictNamespaces= filter makes clone3 fail so, to force the filterable
// clone), it is started outside, moved in through cgroup.procs, and only
// then told to make its socket.
func runProbe(dir string) error {
	if cloneIntoCgroup {
		cg, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer cg.Close()
		cmd := exec.Command("/proc/self/exe")
		cmd.Env = append(os.Environ(), netnsProbeEnv+"=1")
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
		out, err := cmd.CombinedOutput()
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.ENOSYS) {
			return fmt.Errorf("probe process: %w: %s", err, out)
		}
	}
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append(os.Environ(), netnsProbeEnv+"=wait")
	var buf strings.Builder
	cmd.Stdout, cmd.Stderr = &buf, &buf
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("probe process: %w", err)
	}
	moveErr := os.WriteFile(dir+"/cgroup.procs", []byte(fmt.Sprint(cmd.Process.Pid)), 0)
	if moveErr != nil {
		cmd.Process.Kill() // it must not make its socket outside the probe cgroup
	} else {
		stdin.Write([]byte{1})
	}
	stdin.Close()
	werr := cmd.Wait()
	if moveErr != nil {
		return fmt.Errorf("probe process: move into %s: %w", dir, moveErr)
	}
	if werr != nil {
		return fmt.Errorf("probe process: %w: %s", werr, buf.String())
	}
	return nil
}

// probeCgroup creates the temporary cgroup of the probe: below the cgroup2
// root, or where that is not writable (the root is often mode 0555), below
// the caller's own cgroup.
func probeCgroup() (string, error) {
	fs, err := cgroups.Open("")
	if err != nil {
		return "", err
	}
	defer fs.Close()
	parents := []string{fs.Root}
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if own, ok := strings.CutPrefix(line, "0::"); ok && own != "/" {
				parents = append(parents, fs.Abs(own))
			}
		}
	}
	var errs []error
	for _, p := range parents {
		dir, err := os.MkdirTemp(p, "bindguard-netns-probe-")
		if err == nil {
			return dir, nil
		}
		errs = append(errs, err)
	}
	return "", fmt.Errorf("create the probe's cgroup: %w", errors.Join(errs...))
}
