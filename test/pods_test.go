package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/internal/testbed/containerd"
	"github.com/bindguard/bindguard/internal/testutils"
)

// podEnv is an env with a real containerd whose pods live below the attach
// cgroup, in kubelet's cgroupfs layout (the attach cgroup as --cgroup-root).
type podEnv struct {
	*env
	ctd *containerd.Containerd
}

func newPodEnv(t *testing.T) *podEnv {
	e := newEnv(t)
	// kubelet makes its QoS parents when it starts, before any pod.
	e.child("kubepods/besteffort")
	return &podEnv{env: e, ctd: containerd.Start(t, e.cgAbs, e.cgRel)}
}

func (p *podEnv) start(mode string, extra ...string) *daemon {
	return p.env.start(mode, append([]string{"--cri-socket", p.ctd.Socket}, extra...)...)
}

// run starts a pod and waits for each container's log to show its binds.
func (p *podEnv) run(t *testing.T, spec containerd.PodSpec) *containerd.Pod {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pod, err := p.ctd.RunPod(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	return pod
}

// bound waits for the container's log line about spec ("tcp:44100") and
// returns "ok" or the errno name.
func (p *podEnv) bound(t *testing.T, pod *containerd.Pod, container, spec string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := p.ctd.WaitLog(ctx, pod, container, "bind "+spec+" ")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "bind "+spec+" "); ok {
			return strings.TrimPrefix(rest, "error ")
		}
	}
	return "?"
}

func binderSpec(name string, args []string, ports ...int32) containerd.ContainerSpec {
	cs := containerd.ContainerSpec{Name: name, Args: args}
	for _, port := range ports {
		cs.Ports = append(cs.Ports, corev1.ContainerPort{ContainerPort: port, Protocol: corev1.ProtocolTCP})
	}
	return cs
}

const podRegistry = `entries:
  - port: 44100
    process: etcd
    owners: [{pod: {namespace: kube-system, labels: {component: etcd}}}]
  - port: 44101
    process: etcd-peer
    owners: [{pod: {namespace: kube-system, labels: {component: etcd}, container: etcd}}]
  - port: 44102
    process: anyone
  - port: 44104
    process: etcd-metrics
    owners: [{pod: {namespace: kube-system, labels: {component: etcd}}}]
  - port: "44200-44249"
    process: etcd-fleet
    owners: [{pod: {namespace: kube-system, labels: {component: etcd}}}]
`

// waitIdentity waits until the daemon has put a container's identity in force.
func waitIdentity(d *daemon, pod *containerd.Pod, container string) {
	id := pod.Containers[container]
	d.waitLog("identity of "+container, func(m map[string]any) bool {
		c, _ := m["cgroup"].(string)
		return m["msg"] == "pod identity in force" && strings.HasSuffix(c, id)
	})
}

// signalBind tells a binder waiting on "usr1" to go on binding.
func (p *podEnv) signalBind(t *testing.T, pod *containerd.Pod, container string) {
	t.Helper()
	// Not before the binder is waiting for it: SIGUSR1 kills a process
	// that has not asked for it yet.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.ctd.WaitLog(ctx, pod, container, "waiting usr1"); err != nil {
		t.Fatal(err)
	}
	pid, err := p.ctd.ContainerPid(context.Background(), pod.Containers[container])
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
}

func TestPodOwners(t *testing.T) {
	p := newPodEnv(t)
	p.writeRegistry(podRegistry)
	d := p.start("enforce")

	etcd := p.run(t, containerd.PodSpec{Namespace: "kube-system", Name: "etcd-n1", Labels: map[string]string{"component": "etcd"},
		Containers: []containerd.ContainerSpec{
			binderSpec("etcd", []string{"tcp:44100", "usr1", "tcp:44101"}, 44100, 44101),
			binderSpec("sidecar", []string{"usr1", "tcp:44101"}),
		}})
	if got := p.bound(t, etcd, "etcd", "tcp:44100"); got != "ok" {
		t.Errorf("etcd pod binding its port: %s\n%s", got, d.output())
	}
	// The container-scoped owner: only the container named etcd.
	waitIdentity(d, etcd, "etcd")
	waitIdentity(d, etcd, "sidecar")
	p.signalBind(t, etcd, "etcd")
	p.signalBind(t, etcd, "sidecar")
	if got := p.bound(t, etcd, "etcd", "tcp:44101"); got != "ok" {
		t.Errorf("container etcd binding its container-scoped port: %s", got)
	}
	if got := p.bound(t, etcd, "sidecar", "tcp:44101"); got != "EPERM" {
		t.Errorf("sidecar binding etcd's container-scoped port: %s, want EPERM", got)
	}

	// The same image elsewhere is refused, and the event names the pod.
	for _, spec := range []containerd.PodSpec{
		{Namespace: "default", Name: "etcd-impostor", Labels: map[string]string{"component": "etcd"}},
		{Namespace: "kube-system", Name: "not-etcd", Labels: map[string]string{"component": "other"}},
	} {
		spec.Containers = []containerd.ContainerSpec{binderSpec("etcd", []string{"usr1", "tcp:44100"})}
		pod := p.run(t, spec)
		waitIdentity(d, pod, "etcd")
		p.signalBind(t, pod, "etcd")
		if got := p.bound(t, pod, "etcd", "tcp:44100"); got != "EPERM" {
			t.Errorf("%s/%s binding etcd's port: %s, want EPERM", spec.Namespace, spec.Name, got)
		}
		ev := d.waitLog("event of "+spec.Name, func(m map[string]any) bool { return m["pod"] == spec.Name && m["reason"] != nil })
		if ev["namespace"] != spec.Namespace || ev["container"] != "etcd" || ev["reason"] != "owner" || ev["verdict"] != "deny" {
			t.Errorf("event = %v", ev)
		}
	}

	// A restarted container (a new id) keeps the pod's ownership.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := p.ctd.RestartContainer(ctx, etcd, "etcd"); err != nil {
		t.Fatal(err)
	}
	if got := p.bound(t, etcd, "etcd", "tcp:44100"); got != "ok" {
		t.Errorf("restarted etcd container binding its port: %s", got)
	}

	// A deleted pod's cgroup gets nothing: the same path made again by hand
	// is a pending pod, not the pod that was there.
	if err := p.ctd.RemovePod(ctx, etcd); err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(p.ctd.CgroupRel, "kubepods", "besteffort", "pod"+etcd.Spec.UID)
	// kubelet removes the pod's own cgroup; runc removed the containers'.
	if err := os.Remove(filepath.Join(p.cgroupRoot(), gone)); err != nil {
		t.Fatal(err)
	}
	d.waitLog("pod removal", func(m map[string]any) bool { return m["msg"] == "pod forgotten" && m["cgroup"] == gone })
	again := filepath.Join(p.cgroupRoot(), gone)
	if err := os.Mkdir(again, 0o755); err != nil {
		t.Fatal(err)
	}
	b := testutils.StartBinder(t, again, testutils.BinderOptions{})
	// Pending: the port is not denied (a pod may be starting), but audited.
	expect(t, b, []bindCase{{"etcd's port from its old cgroup path, made again", "tcp", "4", any4, 44100, nil}})
	ev := d.waitLog("pod-pending event", func(m map[string]any) bool { return m["reason"] == "pod-pending" && m["port"] == float64(44100) })
	if ev["pod"] != nil || ev["verdict"] != "audit" {
		t.Errorf("bind from the old pod's path made again: %v, want a pod-pending audit naming no pod", ev)
	}
	b.Stop()
	if err := os.Remove(again); err != nil {
		t.Error(err)
	}
}

// TestPodsBeforeDaemon: pods that run before the daemon starts (a restart,
// or a DaemonSet upgrade, on a busy node) are found by its first scan and
// go into the first policy as pending; their identities, looked up once
// that policy is in force, then give them their ports.
func TestPodsBeforeDaemon(t *testing.T) {
	p := newPodEnv(t)
	p.writeRegistry(podRegistry)
	var pods []*containerd.Pod
	for i := range 3 {
		spec := fmt.Sprintf("tcp:%d", 44200+i)
		pods = append(pods, p.run(t, containerd.PodSpec{Namespace: "kube-system", Name: fmt.Sprintf("etcd-early-%d", i),
			Labels:     map[string]string{"component": "etcd"},
			Containers: []containerd.ContainerSpec{binderSpec("etcd", []string{"usr1", spec}, int32(44200+i))}}))
	}
	d := p.start("enforce")
	for i, pod := range pods {
		waitIdentity(d, pod, "etcd")
		p.signalBind(t, pod, "etcd")
		spec := fmt.Sprintf("tcp:%d", 44200+i)
		if got := p.bound(t, pod, "etcd", spec); got != "ok" {
			t.Errorf("pod %s, running before the daemon, binding its port %s: %s", pod.Spec.Name, spec, got)
		}
	}
}

// In audit mode, the refused cases above proceed and are logged with the pod.
func TestPodOwnersAudit(t *testing.T) {
	p := newPodEnv(t)
	p.writeRegistry(podRegistry)
	d := p.start("audit")
	pod := p.run(t, containerd.PodSpec{Namespace: "default", Name: "etcd-impostor", Labels: map[string]string{"component": "etcd"},
		Containers: []containerd.ContainerSpec{binderSpec("etcd", []string{"usr1", "tcp:44100"})}})
	waitIdentity(d, pod, "etcd")
	p.signalBind(t, pod, "etcd")
	if got := p.bound(t, pod, "etcd", "tcp:44100"); got != "ok" {
		t.Errorf("audit mode: %s", got)
	}
	ev := d.waitLog("audited event", func(m map[string]any) bool { return m["pod"] == "etcd-impostor" && m["reason"] != nil })
	if ev["namespace"] != "default" || ev["container"] != "etcd" || ev["verdict"] != "audit" || ev["reason"] != "owner" {
		t.Errorf("event = %v", ev)
	}
}

// 50 pods start at once, each binding its port as its first action: none is
// refused. A bind that comes before the runtime has told the daemon who the
// pod is, is pod-pending (audited, never denied); the log says how often.
func TestPodStartRace(t *testing.T) {
	p := newPodEnv(t)
	p.writeRegistry(podRegistry)
	d := p.start("enforce")
	const n = 50
	pods := make([]*containerd.Pod, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4) // kubelet starts pods a few at a time too
	for i := range pods {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			pods[i], errs[i] = p.ctd.RunPod(ctx, containerd.PodSpec{Namespace: "kube-system", Name: fmt.Sprintf("etcd-%d", i),
				Labels:     map[string]string{"component": "etcd"},
				Containers: []containerd.ContainerSpec{binderSpec("etcd", []string{fmt.Sprintf("tcp:%d", 44200+i)})}})
		}(i)
	}
	wg.Wait()
	refused := 0
	for i, pod := range pods {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if got := p.bound(t, pod, "etcd", fmt.Sprintf("tcp:%d", 44200+i)); got != "ok" {
			refused++
			t.Errorf("pod %d: %s", i, got)
		}
	}
	pending := 0
	for _, ev := range d.events() {
		if ev["reason"] == "pod-pending" {
			pending++
		}
	}
	t.Logf("%d pod starts, %d refused, %d binds before the identity was known (pod-pending)", n, refused, pending)
	logLatencies(t, d, pods)
}

// logLatencies logs, per pod, the time from RunPodSandbox returning to the
// pod's identity being in force, from the daemon's log.
func logLatencies(t *testing.T, d *daemon, pods []*containerd.Pod) {
	var lat []time.Duration
	for _, pod := range pods {
		for _, m := range d.logs() {
			c, _ := m["cgroup"].(string)
			if m["msg"] != "pod identity in force" || !strings.HasSuffix(c, "pod"+pod.Spec.UID) {
				continue
			}
			if at, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"])); err == nil {
				lat = append(lat, at.Sub(pod.SandboxReturned))
			}
			break
		}
	}
	t.Logf("RunPodSandbox returned -> pod identity in force, %d pods: %s", len(lat), durations(lat))
}

// The runtime killed and restarted mid-test: known pods keep their verdicts
// while it is gone, and pods started after it is back are resolved.
func TestPodRuntimeRestart(t *testing.T) {
	p := newPodEnv(t)
	p.writeRegistry(podRegistry)
	stateFile := filepath.Join(t.TempDir(), "node.json")
	d := p.start("enforce", "--node-state-file", stateFile)
	etcd := p.run(t, containerd.PodSpec{Namespace: "kube-system", Name: "etcd-a", Labels: map[string]string{"component": "etcd"},
		Containers: []containerd.ContainerSpec{binderSpec("etcd", []string{"tcp:44100"})}})
	if got := p.bound(t, etcd, "etcd", "tcp:44100"); got != "ok" {
		t.Fatalf("before the restart: %s", got)
	}
	waitIdentity(d, etcd, "etcd")
	p.waitRuntime(t, stateFile, "connected, the pod known", func(r runtimeStatus) bool {
		return r.Connected && r.RuntimeName == "containerd" && r.Socket == p.ctd.Socket && r.PodsKnown >= 1
	})
	if out, _ := bindguard(t, "status", "--pin-path", p.pinPath, "--node-state-file", stateFile); !strings.Contains(out, "connected to containerd") {
		t.Errorf("status has no runtime line:\n%s", out)
	}
	p.ctd.Kill()
	p.waitRuntime(t, stateFile, "not connected, the pod still known", func(r runtimeStatus) bool {
		return !r.Connected && r.LastError != "" && r.PodsKnown >= 1
	})
	// A process placed in the known pod's cgroup while the runtime is gone.
	b := testutils.StartBinder(t, filepath.Join(p.cgroupRoot(), etcd.CgroupRel, etcd.Containers["etcd"]), testutils.BinderOptions{})
	if err := b.Bind("tcp", "4", any4, 44104); err != nil {
		t.Errorf("the known pod's port while the runtime is gone: %v", err)
	}
	if err := b.Bind("tcp", "4", any4, 44103); err == nil {
		t.Error("undeclared port while the runtime is gone: allowed")
	}
	host := testutils.StartBinder(t, p.child("host"), testutils.BinderOptions{})
	if err := host.Bind("tcp", "4", any4, 44104); err == nil {
		t.Error("a host process binding the pod's port while the runtime is gone: allowed")
	}
	p.ctd.Restart()
	late := p.run(t, containerd.PodSpec{Namespace: "kube-system", Name: "etcd-b", Labels: map[string]string{"component": "etcd"},
		Containers: []containerd.ContainerSpec{binderSpec("etcd", []string{"usr1", "tcp:44104"})}})
	waitIdentity(d, late, "etcd")
	p.waitRuntime(t, stateFile, "connected again, both pods known", func(r runtimeStatus) bool { return r.Connected && r.PodsKnown >= 2 })
	p.signalBind(t, late, "etcd")
	if got := p.bound(t, late, "etcd", "tcp:44104"); got != "ok" {
		t.Errorf("a pod started after the runtime came back: %s", got)
	}
	// The outage is logged once, not once per bind or per lookup.
	if n := strings.Count(d.output(), "unreachable"); n != 1 {
		t.Errorf("the runtime outage was logged %d times, want once:\n%s", n, d.output())
	}
}

// runtimeStatus is the runtime section of status -o json.
type runtimeStatus struct {
	Connected         bool   `json:"connected"`
	Socket            string `json:"socket"`
	RuntimeName       string `json:"runtimeName"`
	PodsKnown         int    `json:"podsKnown"`
	PodCgroupsPending int    `json:"podCgroupsPending"`
	LastError         string `json:"lastError"`
}

// waitRuntime waits until status shows a runtime section for which ok
// holds; the daemon rewrites it at most once a second.
func (p *podEnv) waitRuntime(t *testing.T, stateFile, what string, ok func(runtimeStatus) bool) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		out, code := bindguard(t, "status", "-o", "json", "--pin-path", p.pinPath, "--node-state-file", stateFile)
		last = out
		var s struct {
			Node *struct {
				Runtime *runtimeStatus `json:"runtime"`
			} `json:"node"`
		}
		if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s.Node == nil || s.Node.Runtime == nil {
			continue
		}
		if ok(*s.Node.Runtime) {
			t.Logf("status runtime %s: %+v", what, *s.Node.Runtime)
			return
		}
	}
	t.Fatalf("status never showed the runtime %s; last:\n%s", what, last)
}

func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "none"
	}
	lo, hi, sum := ds[0], ds[0], time.Duration(0)
	for _, d := range ds {
		lo, hi, sum = min(lo, d), max(hi, d), sum+d
	}
	return fmt.Sprintf("min %v, mean %v, max %v", lo.Round(time.Microsecond), (sum / time.Duration(len(ds))).Round(time.Microsecond), hi.Round(time.Microsecond))
}

// cgroupRoot is the cgroup2 mount.
func (p *podEnv) cgroupRoot() string {
	return strings.TrimSuffix(p.cgAbs, p.cgRel)
}

const podPortsRegistry = `entries:
  - {port: 44300, process: web}
  - {port: 44301, process: web-metrics}
  - {port: 44302, process: other}
`

// OpenShift's first check at bind() time: with --pod-ports=require a pod
// binds only ports that one of its containers declares.
func TestPodPortsRequire(t *testing.T) {
	for _, mode := range []string{"enforce", "audit"} {
		t.Run(mode, func(t *testing.T) {
			p := newPodEnv(t)
			p.writeRegistry(podPortsRegistry)
			d := p.start(mode, "--pod-ports", "require")
			web := p.run(t, containerd.PodSpec{Namespace: "web", Name: "web-0", Labels: map[string]string{"app": "web"},
				Containers: []containerd.ContainerSpec{
					binderSpec("app", []string{"usr1", "tcp:44300", "tcp:44301", "tcp:44302"}, 44300),
					binderSpec("metrics", nil, 44301),
				}})
			waitIdentity(d, web, "app")
			waitIdentity(d, web, "metrics")
			p.signalBind(t, web, "app")
			undeclared := "EPERM"
			if mode == "audit" {
				undeclared = "ok"
			}
			for spec, want := range map[string]string{"tcp:44300": "ok", "tcp:44301": "ok", "tcp:44302": undeclared} {
				if got := p.bound(t, web, "app", spec); got != want {
					t.Errorf("app binding %s: %s, want %s", spec, got, want)
				}
			}
			ev := d.waitLog("pod-undeclared event", func(m map[string]any) bool { return m["reason"] == "pod-undeclared" })
			wantVerdict := map[string]string{"enforce": "deny", "audit": "audit"}[mode]
			if ev["port"] != float64(44302) || ev["namespace"] != "web" || ev["pod"] != "web-0" || ev["container"] != "app" || ev["verdict"] != wantVerdict {
				t.Errorf("event = %v", ev)
			}
			// A host process is not a pod: the registry alone judges it.
			host := testutils.StartBinder(t, p.child("host"), testutils.BinderOptions{})
			// (In audit mode the pod holds the port: EADDRINUSE is the hook's allow.)
			if err := host.Bind("tcp", "4", any4, 44302); err != nil && !errors.Is(err, unix.EADDRINUSE) {
				t.Errorf("host process binding a declared port: %v", err)
			}
		})
	}
}
