package loader_test

import (
	"errors"
	"path"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// TestLateOwnerNotYetVisible: the mkdir tracepoint fires before the kernel
// makes the new directory visible, so the daemon can read the event of an
// owner's cgroup before it can open it. CgroupCreated waits for it: the
// owner is in force, not taken for removed. A cgroup that never appears is
// not written, and CgroupCreated says so.
func TestLateOwnerNotYetVisible(t *testing.T) {
	testutils.Privileged(t)
	loader.WithVisibleWait(t, 30*time.Second)
	abs, rel := testutils.Cgroup(t, "/")
	late := path.Join(rel, "late")
	c := compiled(policy.Rule{Port: 18090, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{late, path.Join(rel, "never")}}})
	l, _ := setupIn(t, abs, c, policy.ModeEnforce)

	type result struct {
		wrote bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		wrote, err := l.CgroupCreated(loader.CgroupEvent{Op: loader.CgroupMkdir, Path: late})
		done <- result{wrote, err}
	}()
	// Most often CgroupCreated is already looking for the directory when it
	// appears; either order must end with the membership written.
	time.Sleep(20 * time.Millisecond)
	dir := testutils.Mkdir(t, abs, "late")
	if r := <-done; !r.wrote || r.err != nil {
		t.Fatalf("CgroupCreated(%s) = %v, %v: want the membership written", late, r.wrote, r.err)
	}
	in := testutils.StartBinder(t, dir, testutils.BinderOptions{})
	out := testutils.StartBinder(t, testutils.Mkdir(t, abs, "other"), testutils.BinderOptions{})
	if err := in.Bind("tcp", "4", any4, 18090); err != nil {
		t.Errorf("bind from the late owner = %v, want allowed", err)
	}
	if err := out.Bind("tcp", "4", any4, 18090); !errors.Is(err, unix.EPERM) {
		t.Errorf("bind from another cgroup = %v, want EPERM", err)
	}

	loader.WithVisibleWait(t, 10*time.Millisecond)
	if wrote, err := l.CgroupCreated(loader.CgroupEvent{Op: loader.CgroupMkdir, Path: path.Join(rel, "never")}); wrote || err != nil {
		t.Errorf("CgroupCreated of a cgroup that never appeared = %v, %v; want false, nil", wrote, err)
	}
}
