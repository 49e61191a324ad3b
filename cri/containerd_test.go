package cri_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
	ctd   *containerd.Containerd
	c     *cri.Client
	mu    sync.Mutex
	lines []string
}

func newBed(t *testing.T) *bed {
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	b := &bed{ctd: containerd.Start(t, abs, rel)}
	c, err := cri.New(context.Background(), cri.Options{
		Socket: b.ctd.Socket, MaxBackoff: 100 * time.Millisecond,
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
func containerCgroup(t *testing.T, ctx context.Context, ctd *containerd.Containerd, id string) string {
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
	b := newBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	labels := map[string]string{"component": "etcd", "tier": "control-plane"}
	p, err := b.ctd.RunPod(ctx, etcdSpec("kube-system", labels))
	if err != nil {
		t.Fatal(err)
	}
	id := p.Containers["etcd"]
	if _, err := b.ctd.WaitLog(ctx, p, "etcd", "bind tcp:0 ok"); err != nil {
		t.Fatal(err)
	}

	t.Run("cgroup layout", func(t *testing.T) {
		cg := containerCgroup(t, ctx, b.ctd, id)
		k, ok := cgroups.ParseKube(cg)
		want := cgroups.KubeCgroup{Level: cgroups.KubeContainer, Root: b.ctd.CgroupRel, Kubepods: b.ctd.CgroupRel + "/kubepods",
			QoS: cgroups.QoSBestEffort, PodUID: p.Spec.UID, ContainerID: id}
		if !ok || k != want {
			t.Errorf("ParseKube(%q) = %+v, %v; want %+v", cg, k, ok, want)
		}
		if lvl, _ := cgroups.KubeLevelOf(p.CgroupRel); lvl != cgroups.KubePodLevel {
			t.Errorf("KubeLevelOf(%q) = %v, want the pod level", p.CgroupRel, lvl)
		}
		sb := containerCgroup(t, ctx, b.ctd, p.SandboxID)
		if k, ok := cgroups.ParseKube(sb); !ok || k.ContainerID != p.SandboxID {
			t.Errorf("sandbox cgroup %q parses as %+v, %v", sb, k, ok)
		}
	})

	t.Run("lookup", func(t *testing.T) {
		got, err := b.c.LookupWait(ctx, p.Spec.UID, id)
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

	t.Run("container of another pod", func(t *testing.T) {
		other, err := b.ctd.RunPod(ctx, containerd.PodSpec{Namespace: "default", Name: "other",
			Containers: []containerd.ContainerSpec{{Name: "c", Args: []string{"tcp:0"}}}})
		if err != nil {
			t.Fatal(err)
		}
		// A cgroup path could claim etcd's pod UID with the other pod's container id.
		if _, err := b.c.Lookup(p.Spec.UID, other.Containers["c"]); !errors.Is(err, cri.ErrNotYet) {
			t.Errorf("Lookup(etcd's uid, other pod's container) = %v, want ErrNotYet", err)
		}
		o, err := b.c.Lookup(other.Spec.UID, other.Containers["c"])
		if err != nil || o.Namespace != "default" || o.PortsKnown != true || len(o.Ports) != 0 || len(o.Labels) != 0 {
			t.Errorf("Lookup(other) = %+v, %v", o, err)
		}
	})

	t.Run("restart keeps the pod", func(t *testing.T) {
		newID, err := b.ctd.RestartContainer(ctx, p, "etcd")
		if err != nil {
			t.Fatal(err)
		}
		if newID == id {
			t.Fatal("restart kept the container id")
		}
		got, err := b.c.LookupWait(ctx, p.Spec.UID, newID)
		if err != nil || got.Name != "etcd-node1" || got.Container != "etcd" || got.UID != p.Spec.UID {
			t.Errorf("Lookup(restarted) = %+v, %v", got, err)
		}
		if k, ok := cgroups.ParseKube(containerCgroup(t, ctx, b.ctd, newID)); !ok || k.PodUID != p.Spec.UID || k.ContainerID != newID {
			t.Errorf("restarted container's cgroup: %+v, %v", k, ok)
		}
	})

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

// The time from RunPodSandbox returning to the pod's identity being known,
// over several pod starts: logged, not asserted.
func TestContainerdLookupLatency(t *testing.T) {
	b := newBed(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var sb, ctr []time.Duration
	for i := 0; i < 10; i++ {
		spec := containerd.PodSpec{Namespace: "ns", Name: "p" + strconv.Itoa(i), Labels: map[string]string{"i": strconv.Itoa(i)}}
		p, err := b.ctd.RunPod(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.c.LookupWait(ctx, p.Spec.UID, p.SandboxID); err != nil {
			t.Fatal(err)
		}
		sb = append(sb, time.Since(p.SandboxReturned))
		start := time.Now()
		id, err := b.ctd.StartContainer(ctx, p, containerd.ContainerSpec{Name: "c", Args: []string{"tcp:0"}})
		if err != nil {
			t.Fatal(err)
		}
		created := time.Since(start)
		got, err := b.c.LookupWait(ctx, p.Spec.UID, id)
		if err != nil || got.Labels["i"] != strconv.Itoa(i) {
			t.Fatalf("Lookup = %+v, %v", got, err)
		}
		ctr = append(ctr, time.Since(start)-created)
	}
	t.Logf("RunPodSandbox return → Lookup(sandbox) success: %v", sb)
	t.Logf("StartContainer return → Lookup(container) success: %v", ctr)
}

// containerd killed and restarted mid-test: known identities are answered
// from the cache while it is down, Status says so with one log line, and
// new pods resolve once it is back.
func TestContainerdRestart(t *testing.T) {
	b := newBed(t)
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
	down := time.Now()
	for b.c.Status().Connected {
		if time.Since(down) > time.Minute {
			t.Fatal("Status still connected a minute after containerd was killed")
		}
		time.Sleep(10 * time.Millisecond)
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
	}
	st := b.c.Status()
	if st.Connected || st.LastError == "" || st.PodsKnown < 1 {
		t.Errorf("Status while down = %+v", st)
	}
	downLines := 0
	for _, l := range b.logged() {
		if strings.Contains(l, "unreachable") {
			downLines++
		}
	}
	if downLines != 1 {
		t.Errorf("%d outage log lines, want 1: %q", downLines, b.logged())
	}

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
}
