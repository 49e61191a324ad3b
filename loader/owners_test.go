package loader_test

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
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

// TestFailedApplyBurnsItsGeneration: an Apply that fails after it wrote
// some memberships of the idle slot leaves them there, stamped with its
// generation. The next Apply writes the same slot and numbers its owner
// sets anew; if it took the same generation, a cgroup the failed policy
// made an owner would pass for an owner of whatever that set number means
// now. No generation is taken twice, by this Loader or by one that takes
// its pins over.
func TestFailedApplyBurnsItsGeneration(t *testing.T) {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	y := testutils.Mkdir(t, abs, "a-y")
	testutils.Mkdir(t, abs, "b-w")
	z := testutils.Mkdir(t, abs, "c-z")
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	pins := testutils.BPFFS(t)
	l, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	opts, src := loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}
	if _, err := l.Apply(compiled(policy.Rule{Port: 18100, Protocol: policy.TCP}), opts, src); err != nil {
		t.Fatal(err)
	}
	if err := l.Attach(); err != nil {
		t.Fatal(err)
	}
	by := testutils.StartBinder(t, y, testutils.BinderOptions{})
	bz := testutils.StartBinder(t, z, testutils.BinderOptions{})

	// Set 0 is a-y's, set 1 b-w's; b-w's write fails, after a-y's.
	failed := compiled(
		policy.Rule{Port: 18101, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{path.Join(rel, "a-y")}}},
		policy.Rule{Port: 18102, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{path.Join(rel, "b-w")}}})
	// Set 0 is c-z's in the policy that follows, in the slot the failed one wrote.
	good := compiled(policy.Rule{Port: 18101, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{path.Join(rel, "c-z")}}})
	applyAfterFailure := func(l *loader.Loader, want uint32) {
		t.Helper()
		loader.WithFailingMemberWrites(t, func(r string) bool { return path.Base(r) == "b-w" })
		before := l.Generation()
		if _, err := l.Apply(failed, opts, src); err == nil {
			t.Fatal("Apply with a failing membership write succeeded")
		}
		loader.WithFailingMemberWrites(t, func(string) bool { return false })
		if g := l.Generation(); g != before {
			t.Fatalf("generation in force %d after a failed Apply, want %d", g, before)
		}
		res, err := l.Apply(good, opts, src)
		if err != nil {
			t.Fatal(err)
		}
		if res.Generation != want {
			t.Errorf("generation %d, want %d (the failed Apply's is burned)", res.Generation, want)
		}
		if err := by.Bind("tcp", "4", any4, 18101); !errors.Is(err, unix.EPERM) {
			t.Errorf("bind from a-y, an owner only in the policy that failed: %v, want EPERM", err)
		}
		if err := bz.Bind("tcp", "4", any4, 18101); err != nil {
			t.Errorf("bind from c-z, the owner in force: %v", err)
		}
	}
	applyAfterFailure(l, 3)

	// The same across a restart: the failed generation is found in the
	// pinned rules by the Loader that takes them over.
	loader.WithFailingMemberWrites(t, func(r string) bool { return path.Base(r) == "b-w" })
	if _, err := l.Apply(failed, opts, src); err == nil {
		t.Fatal("Apply with a failing membership write succeeded")
	}
	loader.WithFailingMemberWrites(t, func(string) bool { return false })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l2.Detach(); err != nil {
			t.Error(err)
		}
	})
	// The links l pinned judge the binds until l2 attaches.
	applyAfterFailure(l2, 6) // 4 failed before the restart, 5 here
	if err := l2.Attach(); err != nil {
		t.Fatal(err)
	}
}

// TestDeepNestBelowOwner: below an owner, whoever may create cgroups there
// can nest them deeper than a path may be long (mkdirat from each level).
// Such a subtree cannot be opened by path: the write skips it, and every
// other owner is still written; the Apply does not fail for it.
func TestDeepNestBelowOwner(t *testing.T) {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	owner := testutils.Mkdir(t, abs, "owner")
	other := testutils.Mkdir(t, abs, "other-owner")
	removeNest := deepNest(t, owner, 20) // 20 × 250 bytes: past PATH_MAX
	defer removeNest()
	var logged []string
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	l, err := loader.New(loader.Config{CgroupPath: abs, Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := compiled(
		policy.Rule{Port: 18110, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{path.Join(rel, "owner")}}},
		policy.Rule{Port: 18111, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{path.Join(rel, "other-owner")}}})
	if _, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}); err != nil {
		t.Fatalf("Apply with a too-deep nest below an owner: %v", err)
	}
	if err := l.Attach(); err != nil {
		t.Fatal(err)
	}
	defer l.Detach()
	if len(logged) != 1 || !strings.Contains(logged[0], "keep no owner membership") {
		t.Errorf("log %q, want one line about the skipped subtree", logged)
	}
	for _, tc := range []struct {
		dir  string
		port uint16
	}{{owner, 18110}, {other, 18111}} {
		b := testutils.StartBinder(t, tc.dir, testutils.BinderOptions{})
		if err := b.Bind("tcp", "4", any4, tc.port); err != nil {
			t.Errorf("bind %d from its owner %s: %v", tc.port, tc.dir, err)
		}
	}
}

// deepNest makes depth cgroups of 250-byte names below dir, each with
// mkdirat from the one above, and returns what removes them, deepest first.
func deepNest(t *testing.T, dir string, depth int) (remove func()) {
	t.Helper()
	name := strings.Repeat("d", 250)
	fds := []int{}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	fds = append(fds, fd)
	remove = func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		// Deepest first, each relative to its parent: reopen down the chain.
		chain := []int{}
		cur, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Error(err)
			return
		}
		chain = append(chain, cur)
		for {
			next, err := unix.Openat(cur, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				break
			}
			chain = append(chain, next)
			cur = next
		}
		for i := len(chain) - 1; i > 0; i-- {
			if err := unix.Unlinkat(chain[i-1], name, unix.AT_REMOVEDIR); err != nil {
				t.Errorf("remove nest level %d: %v", i, err)
			}
		}
		for _, fd := range chain {
			unix.Close(fd)
		}
	}
	for i := 0; i < depth; i++ {
		if err := unix.Mkdirat(fd, name, 0o755); err != nil {
			remove()
			t.Fatalf("mkdirat level %d: %v", i, err)
		}
		if fd, err = unix.Openat(fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err != nil {
			remove()
			t.Fatal(err)
		}
		fds = append(fds, fd)
	}
	return remove
}

// pods is a fixed PodSource: the pods the daemon's tracker would report.
type pods []loader.PodCgroup

func (p pods) PodCgroups() []loader.PodCgroup { return p }
func (p pods) SpawnPending() []string         { return nil }

// TestPodPortsCapped: a pod's declared host ports become pairs for the
// pod-ports check, in one map with the policy's. A pod that declares more
// than MaxPodPorts gets none (judged as a pending pod, audited) instead of
// filling that map for every Apply of the node; the other pods keep theirs.
func TestPodPortsCapped(t *testing.T) {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	many := testutils.Mkdir(t, abs, "many")
	few := testutils.Mkdir(t, abs, "few")
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	var logged []string
	l, err := loader.New(loader.Config{CgroupPath: abs, Logf: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var declared []policy.PodPort
	for p := range loader.MaxPodPorts + 1 {
		declared = append(declared, policy.PodPort{Port: uint16(20000 + p), Protocol: policy.TCP})
	}
	src := loader.Sources{Cgroups: fs, Pods: pods{
		{Path: path.Join(rel, "many"), Pod: &policy.Pod{UID: "u-many", Namespace: "ns", Name: "many", PortsKnown: true, Ports: declared}},
		{Path: path.Join(rel, "few"), Pod: &policy.Pod{UID: "u-few", Namespace: "ns", Name: "few", PortsKnown: true,
			Ports: []policy.PodPort{{Port: 18120, Protocol: policy.TCP}}}},
	}}
	c := compiled(policy.Rule{Port: 18120, Protocol: policy.TCP}, policy.Rule{Port: 18121, Protocol: policy.TCP})
	if _, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeEnforce, PodPorts: true}, src); err != nil {
		t.Fatal(err)
	}
	if err := l.Attach(); err != nil {
		t.Fatal(err)
	}
	defer l.Detach()
	if len(logged) != 1 || !strings.Contains(logged[0], "declares 1025 host ports") {
		t.Errorf("log %q, want one line about the pod over the cap", logged)
	}
	bf := testutils.StartBinder(t, few, testutils.BinderOptions{})
	if err := bf.Bind("tcp", "4", any4, 18120); err != nil {
		t.Errorf("a pod binding a port it declared: %v", err)
	}
	if err := bf.Bind("tcp", "4", any4, 18121); !errors.Is(err, unix.EPERM) {
		t.Errorf("a pod binding a port it did not declare: %v, want EPERM", err)
	}
	bm := testutils.StartBinder(t, many, testutils.BinderOptions{})
	if err := bm.Bind("tcp", "4", any4, 18121); err != nil {
		t.Errorf("the pod over the cap, judged as pending (audited): %v", err)
	}
	if c, err := l.Counters(); err != nil || c.Audited[loader.ReasonPodPending] != 1 {
		t.Errorf("pod-pending audits %v, %v; want 1", c.Audited, err)
	}
}

// TestFailedStartKeepsInheritance: a daemon whose start fails after it
// attached its tracepoints (a registry that does not compile, say) must
// leave the running enforcement as it was, cgroup inheritance included.
// With maps of its own (here: memberships in a hash where the pinned
// programs read cgroup storage), tracepoints pinned in place of the
// earlier ones would copy memberships where no bind program reads them.
func TestFailedStartKeepsInheritance(t *testing.T) {
	testutils.Privileged(t)
	if err := features.HaveMapType(ebpf.CgroupStorage); err != nil {
		t.Skip("no cgroup storage (6.2): the two membership stores cannot differ here")
	}
	abs, rel := testutils.Cgroup(t, "/")
	owner := testutils.Mkdir(t, abs, "owner")
	pins := testutils.BPFFS(t)
	t.Cleanup(func() {
		if err := loader.RemovePins(pins); err != nil {
			t.Error(err)
		}
	})
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	running, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins, Members: loader.MembersStorage})
	if err != nil {
		t.Fatal(err)
	}
	if err := running.WatchCgroups(); err != nil {
		t.Fatal(err)
	}
	c := compiled(policy.Rule{Port: 18130, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{path.Join(rel, "owner")}}})
	if _, err := running.Apply(c, loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}); err != nil {
		t.Fatal(err)
	}
	if err := running.Attach(); err != nil {
		t.Fatal(err)
	}
	running.Close() // the daemon exits; its pins keep enforcing

	failed, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins, Members: loader.MembersHash})
	if err != nil {
		t.Fatal(err)
	}
	if err := failed.WatchCgroups(); err != nil {
		t.Fatal(err)
	}
	failed.Close() // its start fails before Apply

	b := testutils.StartBinder(t, testutils.Mkdir(t, owner, "new"), testutils.BinderOptions{})
	if err := b.Bind("tcp", "4", any4, 18130); err != nil {
		t.Errorf("first bind from a cgroup created below the owner after a failed start: %v (membership not inherited)", err)
	}
}
