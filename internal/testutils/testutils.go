package testutils

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
)

// requireEnv is the variable that turns the skips of Privileged and Need
// into failures; make test sets it when run as root, and so in CI.
const requireEnv = "BINDGUARD_REQUIRE_PRIVILEGED"

// Privileged skips the test unless it runs as root on a kernel with cgroup2
// and BPF. CI runs as root, so there these tests always run; set
// BINDGUARD_REQUIRE_PRIVILEGED=1 to turn a skip into a failure.
func Privileged(tb testing.TB) {
	tb.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := cgroups.Mount2(); err != nil {
		why = err.Error()
	} else if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		why = "kernel has no BTF"
	}
	if why == "" {
		return
	}
	if os.Getenv(requireEnv) == "1" {
		tb.Fatalf("privileged test cannot run: %s", why)
	}
	tb.Skipf("privileged test skipped: %s", why)
}

// Need skips the test because something it needs is not here (a tool, a
// file), with why in the message; under BINDGUARD_REQUIRE_PRIVILEGED=1 it
// fails the test instead, so that what CI is meant to install
// (scripts/ci-setup.sh) cannot go missing as a skip nobody reads. A test
// that needs what a CI run cannot have (the VM of scripts/vmtest.sh) is left
// out of that run by name, not skipped here.
func Need(tb testing.TB, why string) {
	tb.Helper()
	if os.Getenv(requireEnv) == "1" {
		tb.Fatalf("test cannot run (%s=1): %s", requireEnv, why)
	}
	tb.Skipf("test skipped: %s", why)
}

// Cgroup creates a temporary cgroup below parent (a registry path, "/" for
// the root) and removes it, with every process still in it killed, when the
// test ends. It returns the file system path and the registry path.
func Cgroup(tb testing.TB, parent string) (abs, rel string) {
	tb.Helper()
	fs, err := cgroups.Open("")
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp(fs.Abs(parent), "bindguard-test-")
	if err != nil {
		tb.Fatalf("create test cgroup: %v", err)
	}
	tb.Cleanup(func() { RemoveCgroup(tb, dir) })
	rel, err = fs.Rel(dir)
	if err != nil {
		tb.Fatal(err)
	}
	return dir, rel
}

// Mkdir creates a child cgroup (removed by the parent's cleanup, deepest first).
func Mkdir(tb testing.TB, parentAbs, name string) string {
	tb.Helper()
	dir := filepath.Join(parentAbs, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		tb.Fatalf("create cgroup: %v", err)
	}
	return dir
}

// RemoveCgroup kills what runs in dir and below, then removes the
// directories; a failure fails the test.
func RemoveCgroup(tb testing.TB, dir string) {
	if err := RemoveTree(dir); err != nil {
		tb.Errorf("remove test cgroup: %v", err)
	}
}

// RemoveTree kills what runs in the cgroup dir and below, then removes the
// directories, deepest first, waiting for killed tasks to leave.
func RemoveTree(dir string) error {
	var dirs []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	var errs []error
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		if err := os.WriteFile(filepath.Join(d, "cgroup.kill"), []byte("1"), 0); err != nil {
			killProcs(d) // cgroup.kill is Linux 5.14
		}
		var err error
		for try := 0; try < 100; try++ {
			if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
				err = nil
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

func killProcs(dir string) {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		var pid int
		fmt.Sscan(f, &pid)
		if pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// BPFFS mounts a private bpf file system for the test and returns a pin
// directory path inside it (not yet created); everything pinned there goes
// with the unmount at cleanup.
func BPFFS(tb testing.TB) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "bindguard-bpffs-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		os.Remove(dir)
		tb.Fatalf("mount bpffs: %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount test bpffs: %v", err)
		}
		os.Remove(dir)
	})
	return filepath.Join(dir, "bindguard")
}

// Terminate sends p SIGTERM and waits until exited is closed (by whoever
// waits for p), killing p if that takes longer than grace.
func Terminate(p *os.Process, exited <-chan struct{}, grace time.Duration) {
	p.Signal(unix.SIGTERM)
	select {
	case <-exited:
	case <-time.After(grace):
		p.Kill()
		<-exited
	}
}
