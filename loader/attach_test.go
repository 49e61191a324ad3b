package loader_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// attached lists the programs attached to a cgroup's bind4 and bind6 hooks.
func attached(t *testing.T, dir string) [2]int {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var n [2]int
	for i, typ := range []ebpf.AttachType{ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: typ})
		if err != nil {
			t.Fatal(err)
		}
		n[i] = len(res.Programs)
	}
	return n
}

// newAttached is a loader attached to cgroup abs with pins in pins.
func newAttached(t *testing.T, abs, pins string, fs *cgroups.FS) *loader.Loader {
	t.Helper()
	l, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Apply(compiled(), loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}); err != nil {
		l.Close()
		t.Fatal(err)
	}
	if err := l.Attach(); err != nil {
		l.Close()
		t.Fatal(err)
	}
	return l
}

// TestAttachFailureKeepsEarlierLinks: an Attach that fails after it decided
// to replace an earlier daemon's links leaves those links attached and
// pinned. Before, it unpinned and closed them on its way out.
func TestAttachFailureKeepsEarlierLinks(t *testing.T) {
	testutils.Privileged(t)
	first, _ := testutils.Cgroup(t, "/")
	second, _ := testutils.Cgroup(t, "/")
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	pins := testutils.BPFFS(t)
	a := newAttached(t, first, pins, fs)
	a.Close() // pinned: enforcement on first stays
	t.Cleanup(func() { loader.RemovePins(pins) })

	// An exclusive (non-multi) program on second's bind6 hook makes the
	// second Attach fail at bind6, after it has attached bind4 and decided
	// to replace the earlier links, which are on another cgroup.
	exclusive(t, second, ebpf.AttachCGroupInet6Bind)
	b, err := loader.New(loader.Config{CgroupPath: second, PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(compiled(), loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}); err != nil {
		t.Fatal(err)
	}
	if err := b.Attach(); err == nil {
		t.Fatal("Attach succeeded; the test needs it to fail after attaching")
	} else {
		t.Logf("attach failed as arranged: %v", err)
	}
	b.Close()

	if got := attached(t, first); got != [2]int{1, 1} {
		t.Errorf("earlier daemon's cgroup has %v programs attached after a failed takeover, want [1 1]", got)
	}
	if got := attached(t, second); got != [2]int{0, 1} {
		t.Errorf("failed Attach left %v programs attached to its own cgroup, want only the exclusive bind6 one", got)
	}
	for _, pin := range []string{"link_bind4", "link_bind6"} {
		if _, err := os.Stat(filepath.Join(pins, pin)); err != nil {
			t.Errorf("earlier daemon's %s pin: %v", pin, err)
		}
	}
}

// exclusive attaches an allow-all program to hook of cgroup dir the legacy
// way without BPF_F_ALLOW_MULTI, which makes a link attach there fail.
func exclusive(t *testing.T, dir string, hook ebpf.AttachType) {
	t.Helper()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.CGroupSockAddr, AttachType: hook, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts := link.RawAttachProgramOptions{Target: int(f.Fd()), Program: prog, Attach: hook}
	if err := link.RawAttachProgram(opts); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f, err := os.Open(dir)
		if err != nil {
			return
		}
		defer f.Close()
		link.RawDetachProgram(link.RawDetachProgramOptions{Target: int(f.Fd()), Program: prog, Attach: hook})
	})
}

// TestPinPathLock: a second loader on a pin path in use is refused, and the
// error names the pid that holds it.
func TestPinPathLock(t *testing.T) {
	testutils.Privileged(t)
	abs, _ := testutils.Cgroup(t, "/")
	pins := testutils.BPFFS(t)
	a, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	if pid, held := loader.PinPathHolder(pins); !held || pid != os.Getpid() {
		t.Errorf("PinPathHolder = %d, %v; want %d, true", pid, held, os.Getpid())
	}
	b, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err == nil {
		b.Close()
		t.Fatal("a second loader on the same pin path started")
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("error does not name the holder: %v", err)
	}
	if err := a.Detach(); err != nil {
		t.Fatal(err)
	}
	if _, held := loader.PinPathHolder(pins); held {
		t.Error("pin path still held after Detach")
	}
	c, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err != nil {
		t.Fatalf("after the first loader went: %v", err)
	}
	c.Detach()
}

// TestCheckAttached: the kernel's view, not the daemon's belief.
func TestCheckAttached(t *testing.T) {
	testutils.Privileged(t)
	abs, _ := testutils.Cgroup(t, "/")
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	pins := testutils.BPFFS(t)
	l := newAttached(t, abs, pins, fs)
	defer l.Detach()
	if err := l.CheckAttached(); err != nil {
		t.Fatalf("just attached: %v", err)
	}
	st, err := loader.ReadStatus(pins)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Attached() {
		t.Errorf("status says not attached: %+v", st.Links)
	}
	// What `bindguard detach` does while the daemon runs.
	if err := loader.RemovePins(pins); err != nil {
		t.Fatal(err)
	}
	if got := attached(t, abs); got != [2]int{0, 0} {
		t.Fatalf("after RemovePins: %v programs attached", got)
	}
	err = l.CheckAttached()
	if err == nil || !strings.Contains(err.Error(), "detached") {
		t.Errorf("CheckAttached after detach = %v, want a detached error", err)
	}
}
