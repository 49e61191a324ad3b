package test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"sigs.k8s.io/yaml"

	"github.com/bindguard/bindguard/internal/testbed/containerd"
	"github.com/bindguard/bindguard/internal/testutils"
)

const imageRef = "bindguard.test/bindguard:e2e"

// TestImageUnderCRI runs the image make image-oci writes under containerd
// through CRI, as kubelet would run the worker DaemonSet's pod: its args,
// securityContext (capabilities, no privileged, read-only root, no new
// privileges, RuntimeDefault seccomp, uid 0) and volume mounts. It must
// enforce on the host. Then, started from scratch (pins removed) with each
// capability of the DaemonSet removed in turn, it must fail to start with a
// message that names the capability.
//
// Two things differ from a node, for the test's isolation: --cgroup is the
// test's cgroup and the bpffs volume is a private bpffs, never the host's
// root cgroup or /sys/fs/bpf; --metrics-addr is a loopback ephemeral port;
// and the mode is enforce, as docs/rollout.md switches it.
func TestImageUnderCRI(t *testing.T) {
	e := newEnv(t)
	if _, err := exec.LookPath("containerd"); err != nil {
		testutils.Need(t, "containerd not installed (scripts/ci-setup.sh installs it)")
	}
	e.writeRegistry("entries:\n  - port: 43300\n    process: declared\n")
	// mountPropagation: HostToContainer needs a shared (or slave) host
	// mount, as /sys/fs/bpf is on a systemd host; the test's bpffs is private.
	if err := unix.Mount("", filepath.Dir(e.pinPath), "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make the test bpffs shared: %v", err)
	}
	cgroupHost := sharedCgroupView(t)
	ds := workerDaemonSet(t)
	img := buildImage(t)
	c := containerd.Start(t, e.cgAbs, e.cgRel)
	if out, err := exec.Command("ctr", "-a", c.Socket, "-n", "k8s.io", "images", "import", "--base-name", "bindguard.test/bindguard", img).CombinedOutput(); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, out)
	}
	ctx := context.Background()
	pod, err := c.RunPod(ctx, containerd.PodSpec{Namespace: "bindguard", Name: "bindguard-worker-e2e"})
	if err != nil {
		t.Fatal(err)
	}
	ctr := ds.Spec.Template.Spec.Containers[0]
	caps := ctr.SecurityContext.Capabilities.Add
	runDir := t.TempDir()
	pd := &podDaemon{c: c, pod: pod, env: e, ctr: ctr, runDir: runDir, cgroupHost: cgroupHost}

	b := e.binder("svc")
	t.Run("enforces", func(t *testing.T) {
		id := pd.start(t, caps, 0)
		defer pd.stop(t, id)
		if err := pd.waitReady(ctx, id); err != nil {
			t.Fatalf("%v; log:\n%s", err, pd.log(0))
		}
		expect(t, b, []bindCase{{"declared", "tcp", "4", any4, 43300, nil}, {"undeclared", "tcp", "4", any4, 43301, unix.EPERM}})
		if ev := pd.waitEvent(ctx, 43301); !strings.Contains(ev, `"cgroup":"`+e.cgRel+`/svc"`) {
			t.Errorf("the event does not name the binder's cgroup: %s", ev)
		}
	})
	for i, cp := range caps {
		t.Run("without "+string(cp), func(t *testing.T) {
			var fewer []corev1.Capability
			for _, o := range caps {
				if o != cp {
					fewer = append(fewer, o)
				}
			}
			id := pd.start(t, fewer, i+1)
			defer pd.stop(t, id)
			err := pd.waitReady(ctx, id)
			log := pd.log(i + 1)
			if cp == "DAC_READ_SEARCH" {
				// It runs and enforces, but cannot say who bound: the
				// cgroup id in an event no longer opens to a path.
				if err != nil {
					t.Fatalf("without %s: %v; log:\n%s", cp, err, log)
				}
				expect(t, b, []bindCase{{"undeclared", "tcp", "4", any4, 43302, unix.EPERM}})
				ev := pd.waitEvent(ctx, 43302)
				t.Logf("without %s: runs; event: %s", cp, ev)
				if strings.Contains(ev, e.cgRel+"/svc") {
					t.Errorf("without %s the event still names the cgroup: the DaemonSet need not grant it", cp)
				}
				return
			}
			if err == nil {
				t.Fatalf("started without %s: the DaemonSet need not grant it", cp)
			}
			t.Logf("without %s: %v; log: %s", cp, err, lastLine(log))
			if !strings.Contains(log, "CAP_"+string(cp)) {
				t.Errorf("without %s: the log does not name CAP_%s:\n%s", cp, cp, log)
			}
			for _, o := range fewer {
				if o != "DAC_READ_SEARCH" && strings.Contains(log, "CAP_"+string(o)) {
					t.Errorf("without %s: the log names CAP_%s too, which it has:\n%s", cp, o, log)
				}
			}
		})
	}
}

// sharedCgroupView returns a recursive bind mount of /sys/fs/cgroup made
// shared, for the cgroup volume's HostToContainer propagation: on a systemd
// node /sys/fs/cgroup is shared already; here it is private, and the host's
// own mount is left as it is.
func sharedCgroupView(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("/sys/fs/cgroup", dir, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("bind /sys/fs/cgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if err := unix.Mount("", dir, "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		t.Fatalf("make %s shared: %v", dir, err)
	}
	return dir
}

// podDaemon is bindguard's container in the test pod.
type podDaemon struct {
	c      *containerd.Containerd
	pod    *containerd.Pod
	env    *env
	ctr    corev1.Container
	runDir string
	// cgroupHost is the host path mounted for the cgroup volume.
	cgroupHost string
	attempt    int
}

// start removes the pins a previous run left (a fresh start, not a take
// over), then creates and starts the container with these capabilities.
func (pd *podDaemon) start(t *testing.T, caps []corev1.Capability, attempt int) string {
	t.Helper()
	if out, code := bindguard(t, "detach", "--pin-path", pd.env.pinPath); code != 0 {
		t.Fatalf("detach: %s", out)
	}
	os.Remove(filepath.Join(pd.runDir, "ready"))
	pd.attempt = attempt
	cfg := containerConfig(pd.ctr, caps, attempt, pd.env, map[string]string{
		"bpffs": filepath.Dir(pd.env.pinPath), "cgroup": pd.cgroupHost,
		"registry": filepath.Dir(pd.env.registry), "run": pd.runDir,
	})
	ctx := context.Background()
	r, err := pd.c.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{
		PodSandboxId: pd.pod.SandboxID, Config: cfg, SandboxConfig: sandboxConfigOf(pd.c, pd.pod)})
	if err != nil {
		t.Fatalf("create container: %v", err)
	}
	id := r.GetContainerId()
	if _, err := pd.c.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("start container: %v", err)
	}
	return id
}

// waitReady waits for the ready file, or returns an error when the
// container exits first or after a minute.
func (pd *podDaemon) waitReady(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if _, err := os.Stat(filepath.Join(pd.runDir, "ready")); err == nil {
			return nil
		}
		s, err := pd.c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return err
		}
		if st := s.GetStatus(); st.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
			return fmt.Errorf("exited with %d (%s)", st.GetExitCode(), st.GetReason())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// log is what the container of this attempt printed (CRI log format).
func (pd *podDaemon) log(attempt int) string {
	matches, _ := filepath.Glob(filepath.Join(pd.c.Dir, "logs", "*", pd.ctr.Name, fmt.Sprintf("%d.log", attempt)))
	if len(matches) != 1 {
		return fmt.Sprintf("(no log file: %v)", matches)
	}
	b, _ := os.ReadFile(matches[0])
	return string(b)
}

// waitEvent waits for the container's log record of a violation on port.
func (pd *podDaemon) waitEvent(ctx context.Context, port int) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out string
	for !strings.Contains(out, fmt.Sprintf(`"port":%d`, port)) {
		out = pd.log(pd.attempt)
		select {
		case <-ctx.Done():
			return fmt.Sprintf("no event in the log (%v):\n%s", ctx.Err(), out)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, fmt.Sprintf(`"port":%d`, port)) {
			return l
		}
	}
	return ""
}

func (pd *podDaemon) stop(t *testing.T, id string) {
	ctx := context.Background()
	if _, err := pd.c.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: 30}); err != nil {
		t.Errorf("stop container: %v", err)
	}
	if _, err := pd.c.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("remove container: %v", err)
	}
}

// workerDaemonSet reads the one DaemonSet from deploy/kubernetes.
func workerDaemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	raw, err := os.ReadFile("../deploy/kubernetes/daemonset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(string(raw), "\n---\n") {
		var ds appsv1.DaemonSet
		if err := yaml.UnmarshalStrict([]byte(doc), &ds); err != nil {
			t.Fatal(err)
		}
		if ds.Name == "bindguard" {
			return &ds
		}
	}
	t.Fatal("no bindguard DaemonSet in deploy/kubernetes/daemonset.yaml")
	return nil
}

// buildImage writes the image as make image-oci does: a static build of
// this tree, then scripts/image-oci.
func buildImage(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin, out := filepath.Join(dir, "bindguard"), filepath.Join(dir, "image.tar")
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "../cmd/bindguard")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	for _, cmd := range []*exec.Cmd{build, exec.Command("go", "run", "../scripts/image-oci", "--binary", bin, "--output", out, "--tag", imageRef)} {
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, b)
		}
	}
	return out
}

// args are the container's args as kubelet passes them: $(VAR) expanded
// from env, then the test's overrides (a later flag wins).
func args(ctr corev1.Container, e *env) []string {
	vars := map[string]string{}
	for _, v := range ctr.Env {
		vars[v.Name] = v.Value
	}
	var out []string
	for _, a := range ctr.Args {
		for k, v := range vars {
			a = strings.ReplaceAll(a, "$("+k+")", v)
		}
		out = append(out, a)
	}
	return append(out, "--cgroup", e.cgRel, "--metrics-addr", "127.0.0.1:0", "--mode", "enforce")
}

// kubelet's default masked and read-only paths for an unprivileged container
// (k8s.io/kubernetes pkg/securitycontext, ProcMount Default).
var (
	maskedPaths   = []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	readonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// containerConfig is kubelet's CRI config for the DaemonSet's container,
// with the volumes bound to the test's private paths.
func containerConfig(ctr corev1.Container, caps []corev1.Capability, attempt int, e *env, host map[string]string) *runtimeapi.ContainerConfig {
	sc := ctr.SecurityContext
	var mounts []*runtimeapi.Mount
	for _, m := range ctr.VolumeMounts {
		prop := runtimeapi.MountPropagation_PROPAGATION_PRIVATE
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer {
			prop = runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER
		}
		mounts = append(mounts, &runtimeapi.Mount{ContainerPath: m.MountPath, HostPath: host[m.Name], Readonly: m.ReadOnly, Propagation: prop})
	}
	var add, drop []string
	for _, c := range caps {
		add = append(add, string(c))
	}
	for _, c := range sc.Capabilities.Drop {
		drop = append(drop, string(c))
	}
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: ctr.Name, Attempt: uint32(attempt)},
		Image:    &runtimeapi.ImageSpec{Image: imageRef},
		Args:     args(ctr, e),
		Labels:   map[string]string{"io.kubernetes.container.name": ctr.Name},
		LogPath:  filepath.Join(ctr.Name, fmt.Sprintf("%d.log", attempt)),
		Mounts:   mounts,
		Linux: &runtimeapi.LinuxContainerConfig{
			Resources: &runtimeapi.LinuxContainerResources{MemoryLimitInBytes: ctr.Resources.Limits.Memory().Value()},
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				Capabilities:     &runtimeapi.Capability{AddCapabilities: add, DropCapabilities: drop},
				Privileged:       *sc.Privileged,
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
				RunAsUser:        &runtimeapi.Int64Value{Value: *sc.RunAsUser},
				ReadonlyRootfs:   *sc.ReadOnlyRootFilesystem,
				NoNewPrivs:       !*sc.AllowPrivilegeEscalation,
				Seccomp:          &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault},
				MaskedPaths:      maskedPaths,
				ReadonlyPaths:    readonlyPaths,
			},
		},
	}
}

// sandboxConfigOf is the sandbox config containerd needs again at
// CreateContainer (it takes the cgroup parent and the log directory from
// it), as the test bed made it.
func sandboxConfigOf(c *containerd.Containerd, p *containerd.Pod) *runtimeapi.PodSandboxConfig {
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: p.Spec.Name, Namespace: p.Spec.Namespace, Uid: p.Spec.UID},
		LogDirectory: filepath.Join(c.Dir, "logs", p.Spec.Namespace+"_"+p.Spec.Name+"_"+p.Spec.UID),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: p.CgroupRel,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
