package cri_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/cri"
	"github.com/bindguard/bindguard/internal/testbed/containerd"
	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/policy"
)

// bed starts a test containerd below a fresh test cgroup, and a cri client
// on its socket whose log lines the test can read.
type bed struct {
	// cgroup2 is the cgroup2 mount point.
	cgroup2 string
	ctd     *containerd.Containerd
	c       *cri.Client
	mu      sync.Mutex
	lines   []string
}

func newBed(t *testing.T, refresh time.Duration) *bed {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	root, err := cgroups.Mount2()
	if err != nil {
		t.Fatal(err)
	}
	b := &bed{cgroup2: root, ctd: containerd.Start(t, abs, rel)}
	c, err := cri.New(context.Background(), cri.Options{
		Socket: b.ctd.Socket, MaxBackoff: 100 * time.Millisecond, Refresh: refresh,
		Logf: func(f string, a ...any) {
			b.mu.Lock()
			b.lines = append(b.lines, f)
			b.mu.Unlock()
			t.Logf(f, a...)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b.c = c
	return b
}

func (b *bed) logged() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.lines...)
}

func etcdSpec(ns string, labels map[string]string) containerd.PodSpec {
	return containerd.PodSpec{
		Namespace: ns, Name: "etcd-node1", Labels: labels,
		Containers: []containerd.ContainerSpec{
			{Name: "etcd", Args: []string{"tcp:0"}, Ports: []corev1.ContainerPort{{Name: "client", HostPort: 2379, ContainerPort: 2379, Protocol: corev1.ProtocolTCP}}},
			{Name: "metrics", Args: []string{"udp:0"}, Ports: []corev1.ContainerPort{{ContainerPort: 9979, Protocol: corev1.ProtocolUDP}}},
		},
	}
}

// containerCgroup reads the cgroup a container's process really is in.
func containerCgroup(ctx context.Context, t *testing.T, ctd *containerd.Containerd, id string) string {
	t.Helper()
	pid, err := ctd.ContainerPid(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cgroup"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup2 line for pid %d: %s", pid, b)
	return ""
}

func TestContainerdPodIdentity(t *testing.T) {
	b := newBed(t, time.Hour) // no periodic sync: what is seen comes from lookups
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"component": "etcd", "tier": "control-plane"}
	p, err := b.ctd.RunPod(ctx, etcdSpec("kube-system", labels))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ctd.WaitLog(ctx, p, "etcd", "bind tcp:0 ok"); err != nil {
		t.Fatal(err)
	}
	t.Run("cgroup layout", func(t *testing.T) { checkLayout(ctx, t, b, p) })
	t.Run("lookup", func(t *testing.T) {
		got, err := b.c.LookupWait(ctx, p.Spec.UID, p.Containers["etcd"])
		if err != nil {
			t.Fatal(err)
		}
		want := &policy.Pod{Namespace: "kube-system", Name: "etcd-node1", UID: p.Spec.UID, Labels: labels, Container: "etcd",
			Ports: []policy.PodPort{{Port: 2379, Protocol: policy.TCP}, {Port: 9979, Protocol: policy.UDP}}, PortsKnown: true}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Lookup = %+v\nwant %+v", got, want)
		}
		sb, err := b.c.Lookup(p.Spec.UID, p.SandboxID)
		if err != nil || sb.Container != "" || sb.Name != "etcd-node1" {
			t.Errorf("Lookup(sandbox) = %+v, %v", sb, err)
		}
	})
	t.Run("container of another pod", func(t *testing.T) { checkForeignContainer(ctx, t, b, p) })
	t.Run("restart keeps the pod", func(t *testing.T) { checkRestart(ctx, t, b, p) })
	t.Run("removed pod is gone", func(t *testing.T) {
		if err := b.ctd.RemovePod(ctx, p); err != nil {
			t.Fatal(err)
		}
		b.c.Forget(p.Spec.UID)
		if got, err := b.c.Lookup(p.Spec.UID, ""); !errors.Is(err, cri.ErrNotYet) {
			t.Errorf("Lookup(removed pod) = %+v, %v; want ErrNotYet", got, err)
		}
	})
	if st := b.c.Status(); !st.Connected || st.RuntimeName != "containerd" || st.Socket != b.ctd.Socket {
		t.Errorf("Status = %+v", st)
	}
}

// checkLayout: the cgroups runc made for the pod parse as kubelet's layout
// below the test's --cgroup-root.
func checkLayout(ctx context.Context, t *testing.T, b *bed, p *containerd.Pod) {
	id := p.Containers["etcd"]
	cg := containerCgroup(ctx, t, b.ctd, id)
	k, ok := cgroups.ParseKube(cg)
	want := cgroups.KubeCgroup{Level: cgroups.KubeContainer, Root: b.ctd.CgroupRel, Kubepods: b.ctd.CgroupRel + "/kubepods",
		QoS: cgroups.QoSBestEffort, PodUID: p.Spec.UID, ContainerID: id}
	if !ok || k != want {
		t.Errorf("ParseKube(%q) = %+v, %v; want %+v", cg, k, ok, want)
	}
	if lvl, _ := cgroups.KubeLevelOf(p.CgroupRel); lvl != cgroups.KubePodLevel {
		t.Errorf("KubeLevelOf(%q) = %v, want the pod level", p.CgroupRel, lvl)
	}
	if got, err := b.c.LookupCgroup(cg, []string{b.ctd.CgroupRel + "/kubepods"}); err != nil || got.Container != "etcd" {
		t.Errorf("LookupCgroup(%q) = %+v, %v", cg, got, err)
	}
	if _, err := b.c.LookupCgroup(cg, cgroups.DefaultKubepods); !errors.Is(err, cri.ErrNotPod) {
		t.Errorf("LookupCgroup(%q) outside kubelet's place = %v, want ErrNotPod", cg, err)
	}
	sb := containerCgroup(ctx, t, b.ctd, p.SandboxID)
	if k, ok := cgroups.ParseKube(sb); !ok || k.ContainerID != p.SandboxID || k.PodUID != p.Spec.UID {
		t.Errorf("sandbox cgroup %q parses as %+v, %v", sb, k, ok)
	}
}

// checkForeignContainer: a cgroup path could claim a pod's UID with another
// pod's container id; the runtime's view decides.
func checkForeignContainer(ctx context.Context, t *testing.T, b *bed, p *containerd.Pod) {
	other, err := b.ctd.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "other",
		Containers: []containerd.ContainerSpec{{Name: "c", Args: []string{"tcp:0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.Lookup(p.Spec.UID, other.Containers["c"]); !errors.Is(err, cri.ErrNotYet) {
		t.Errorf("Lookup(etcd's uid, other pod's container) = %v, want ErrNotYet", err)
	}
	o, err := b.c.Lookup(other.Spec.UID, other.Containers["c"])
	if err != nil || o.Namespace != "default" || !o.PortsKnown || len(o.Ports) != 0 || len(o.Labels) != 0 {
		t.Errorf("Lookup(other) = %+v, %v", o, err)
	}
}

func checkRestart(ctx context.Context, t *testing.T, b *bed, p *containerd.Pod) {
	old := p.Containers["etcd"]
	newID, err := b.ctd.RestartContainer(ctx, p, "etcd")
	if err != nil {
		t.Fatal(err)
	}
	if newID == old {
		t.Fatal("restart kept the container id")
	}
	got, err := b.c.LookupWait(ctx, p.Spec.UID, newID)
	if err != nil || got.Name != "etcd-node1" || got.Container != "etcd" || got.UID != p.Spec.UID || got.Labels["component"] != "etcd" {
		t.Errorf("Lookup(restarted) = %+v, %v", got, err)
	}
	if k, ok := cgroups.ParseKube(containerCgroup(ctx, t, b.ctd, newID)); !ok || k.PodUID != p.Spec.UID || k.ContainerID != newID {
		t.Errorf("restarted container's cgroup: %+v, %v", k, ok)
	}
}

// A pod removed behind the client's back is dropped by the periodic sync.
func TestContainerdRemovedBySync(t *testing.T) {
	b := newBed(t, 100*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := b.ctd.RunPod(ctx, etcdSpec("kube-system", nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.c.LookupWait(ctx, p.Spec.UID, p.Containers["etcd"]); err != nil {
		t.Fatal(err)
	}
	if err := b.ctd.RemovePod(ctx, p); err != nil {
		t.Fatal(err)
	}
	removed := time.Now()
	// A sync may run while the removal is under way and see the sandbox
	// without its containers: wait for the one after.
	for {
		_, err := b.c.Lookup(p.Spec.UID, p.Containers["etcd"])
		if errors.Is(err, cri.ErrNotYet) && b.c.Status().PodsKnown == 0 {
			break
		}
		if (err != nil && !errors.Is(err, cri.ErrNotYet)) || ctx.Err() != nil {
			t.Fatalf("Lookup(removed pod) = %v, PodsKnown %d, context %v", err, b.c.Status().PodsKnown, ctx.Err())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("removed pod dropped %v after RemovePodSandbox returned (refresh 100ms)", time.Since(removed))
}

// The time from RunPodSandbox returning to the pod's identity being known,
// and from StartContainer returning to the container's, over 50 pod starts
// in a row: logged, not asserted.
func TestContainerdLookupLatency(t *testing.T) {
	b := newBed(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var sb, ctr []time.Duration
	for i := 0; i < 50; i++ {
		spec := containerd.PodSpec{Namespace: "ns", Name: "p" + strconv.Itoa(i), Labels: map[string]string{"i": strconv.Itoa(i)}}
		p, err := b.ctd.RunPod(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.c.LookupWait(ctx, p.Spec.UID, p.SandboxID); err != nil {
			t.Fatal(err)
		}
		sb = append(sb, time.Since(p.SandboxReturned))
		id, err := b.ctd.StartContainer(ctx, p, containerd.ContainerSpec{Name: "c", Args: []string{"tcp:0"}})
		if err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		got, err := b.c.LookupWait(ctx, p.Spec.UID, id)
		if err != nil || got.Labels["i"] != strconv.Itoa(i) || got.Container != "c" {
			t.Fatalf("Lookup = %+v, %v", got, err)
		}
		ctr = append(ctr, time.Since(started))
	}
	t.Logf("RunPodSandbox return → Lookup(sandbox) success, 50 pods: %s", summary(sb))
	t.Logf("StartContainer return → Lookup(container) success, 50 pods: %s", summary(ctr))
}

// Pods started at once, each looked up while the others start: every
// identity resolves, and the client is race-free under load.
func TestContainerdConcurrentStarts(t *testing.T) {
	b := newBed(t, 50*time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const n = 10
	var wg sync.WaitGroup
	lat := make([]time.Duration, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p, err := b.ctd.RunPod(ctx, containerd.PodSpec{Namespace: "par", Name: "p" + strconv.Itoa(i),
				Containers: []containerd.ContainerSpec{{Name: "c", Args: []string{"tcp:0"}, Ports: []corev1.ContainerPort{{ContainerPort: int32(20000 + i)}}}}})
			if err != nil {
				errs[i] = err
				return
			}
			got, err := b.c.LookupWait(ctx, p.Spec.UID, p.Containers["c"])
			lat[i] = time.Since(p.SandboxReturned)
			if err == nil && (got.Name != "p"+strconv.Itoa(i) || !got.Declares(uint16(20000+i), policy.TCP)) {
				err = fmt.Errorf("pod %d resolved as %+v", i, got)
			}
			errs[i] = err
		}(i)
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d pods started at once, RunPodSandbox return → containers created, started and resolved: %s", n, summary(lat))
}

func summary(ds []time.Duration) string {
	s := slices.Clone(ds)
	slices.Sort(s)
	return fmt.Sprintf("min %v, median %v, p90 %v, max %v", s[0], s[len(s)/2], s[len(s)*9/10], s[len(s)-1])
}

// containerd killed and restarted mid-test: known identities are answered
// from the cache while it is down, Status says so with one log line, and
// new pods resolve once it is back.
func TestContainerdRestart(t *testing.T) {
	b := newBed(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	p, err := b.ctd.RunPod(ctx, etcdSpec("kube-system", map[string]string{"component": "etcd"}))
	if err != nil {
		t.Fatal(err)
	}
	before, err := b.c.LookupWait(ctx, p.Spec.UID, p.Containers["etcd"])
	if err != nil {
		t.Fatal(err)
	}
	b.ctd.Kill()
	checkDown(ctx, t, b, p, before)
	b.ctd.Restart()
	up := time.Now()
	q, err := b.ctd.RunPod(ctx, containerd.PodSpec{Namespace: "late", Name: "after-restart",
		Containers: []containerd.ContainerSpec{{Name: "c", Args: []string{"tcp:0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := b.c.LookupWait(ctx, q.Spec.UID, q.Containers["c"])
	if err != nil || got.Namespace != "late" || got.Container != "c" {
		t.Fatalf("Lookup(new pod after restart) = %+v, %v", got, err)
	}
	t.Logf("new pod resolved %v after containerd was restarted", time.Since(up))
	if again, err := b.c.Lookup(p.Spec.UID, p.Containers["etcd"]); err != nil || !reflect.DeepEqual(again, before) {
		t.Errorf("Lookup(old pod) after restart = %+v, %v", again, err)
	}
	if st := b.c.Status(); !st.Connected {
		t.Errorf("Status after restart = %+v", st)
	}
	if n := countLines(b, "connected to"); n != 2 {
		t.Errorf("%d connection log lines, want 2 (start, back): %q", n, b.logged())
	}
}

// checkDown: while the runtime is down, known pods are answered from the
// cache, unknown ones are ErrUnavailable, and the outage is logged once.
func checkDown(ctx context.Context, t *testing.T, b *bed, p *containerd.Pod, before *policy.Pod) {
	down := time.Now()
	for b.c.Status().Connected {
		if ctx.Err() != nil {
			t.Fatal("Status still connected long after containerd was killed")
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("disconnect seen %v after the kill", time.Since(down))
	for i := 0; i < 50; i++ {
		got, err := b.c.Lookup(p.Spec.UID, p.Containers["etcd"])
		if err != nil || !reflect.DeepEqual(got, before) {
			t.Fatalf("Lookup while down = %+v, %v; want %+v", got, err, before)
		}
		if _, err := b.c.Lookup(containerd.NewUID(), ""); !errors.Is(err, cri.ErrUnavailable) {
			t.Fatalf("Lookup(unknown pod) while down = %v, want ErrUnavailable", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := b.c.Status(); st.Connected || st.LastError == "" || st.PodsKnown != 1 {
		t.Errorf("Status while down = %+v", st)
	}
	if n := countLines(b, "unreachable"); n != 1 {
		t.Errorf("%d outage log lines, want 1: %q", n, b.logged())
	}
}

func countLines(b *bed, s string) int {
	n := 0
	for _, l := range b.logged() {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// When a container's cgroup appears (what bindguard sees first, from the
// cgroup_mkdir tracepoint), is the container already known to the runtime?
// runc makes the cgroup in StartContainer, after CreateContainer has put
// the container in the runtime's list: a single Lookup, without retries,
// must succeed. The delay from the mkdir to the answer is logged.
func TestContainerdKnownAtMkdir(t *testing.T) {
	b := newBed(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var lat []time.Duration
	for i := 0; i < 10; i++ {
		p, err := b.ctd.RunPod(ctx, containerd.PodSpec{Namespace: "mk", Name: "p" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(b.cgroup2, p.CgroupRel)
		uid := p.Spec.UID
		created := watchMkdir(t, dir, p.SandboxID, func(id string) (*policy.Pod, error) { return b.c.Lookup(uid, id) })
		id, err := b.ctd.StartContainer(ctx, p, containerd.ContainerSpec{Name: "c", Args: []string{"tcp:0"}})
		if err != nil {
			t.Fatal(err)
		}
		ev := <-created
		if ev.err != nil {
			t.Fatal(ev.err)
		}
		if ev.name != id {
			t.Fatalf("cgroup %q appeared, container is %s", ev.name, id)
		}
		if ev.lookupErr != nil || ev.pod.Container != "c" || ev.pod.Name != "p"+strconv.Itoa(i) {
			t.Errorf("Lookup at mkdir = %+v, %v", ev.pod, ev.lookupErr)
		}
		lat = append(lat, ev.took)
	}
	t.Logf("container cgroup mkdir seen → Lookup success (one try), 10 pods: %s", summary(lat))
}

type mkdirEvent struct {
	name      string
	pod       *policy.Pod
	lookupErr error
	took      time.Duration
	err       error
}

// watchMkdir reports the first directory created in dir other than skip,
// and what lookup said of it, called as soon as the event is read. The
// watch ends with the test if no directory came: the inotify descriptor is
// non-blocking, read through the runtime's poller, so closing it at
// cleanup ends the read (a blocking read(2) would outlive close(2)).
func watchMkdir(t *testing.T, dir, skip string, lookup func(string) (*policy.Pod, error)) <-chan mkdirEvent {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "inotify")
	t.Cleanup(func() { f.Close() })
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CREATE|unix.IN_ONLYDIR); err != nil {
		t.Fatal(err)
	}
	out := make(chan mkdirEvent, 1)
	go func() {
		defer f.Close() // at once when done; a second Close at cleanup is harmless
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			if err != nil {
				out <- mkdirEvent{err: err}
				return
			}
			seen := time.Now()
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				raw := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
				off += unix.SizeofInotifyEvent + int(ev.Len)
				name := strings.TrimRight(string(raw), "\x00")
				if name == skip {
					continue
				}
				p, err := lookup(name)
				out <- mkdirEvent{name: name, pod: p, lookupErr: err, took: time.Since(seen)}
				return
			}
		}
	}()
	return out
}

// No runtime at start: the client still comes up, says why it has no
// answers, and resolves pods once the runtime appears.
func TestContainerdLateRuntime(t *testing.T) {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	ctd := containerd.Start(t, abs, rel)
	ctd.Kill()
	c, err := cri.New(context.Background(), cri.Options{Socket: ctd.Socket, MaxBackoff: 50 * time.Millisecond, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Lookup(containerd.NewUID(), ""); !errors.Is(err, cri.ErrUnavailable) {
		t.Errorf("Lookup with no runtime = %v, want ErrUnavailable", err)
	}
	if st := c.Status(); st.Connected {
		t.Errorf("Status with no runtime = %+v", st)
	}
	ctd.Restart()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := ctd.RunPod(ctx, containerd.PodSpec{Namespace: "late", Name: "first",
		Containers: []containerd.ContainerSpec{{Name: "c", Args: []string{"tcp:0"}}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.LookupWait(ctx, p.Spec.UID, p.Containers["c"])
	if err != nil || got.Name != "first" {
		t.Fatalf("Lookup once the runtime is up = %+v, %v", got, err)
	}
	if st := c.Status(); !st.Connected || st.RuntimeVersion == "" {
		t.Errorf("Status once up = %+v", st)
	}
}
