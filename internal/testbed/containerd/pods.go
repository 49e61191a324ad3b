package containerd

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
)

// PodSpec is what the test bed needs of a pod.
type PodSpec struct {
	Namespace, Name string
	// UID: "" makes a random UUID, as the API server would.
	UID         string
	Labels      map[string]string
	Annotations map[string]string
	Containers  []ContainerSpec
}

// ContainerSpec is one container of a pod.
type ContainerSpec struct {
	Name string
	// Image: BinderImage when "".
	Image string
	// Args are the binder's ports to bind first thing (tcp:8080 …).
	Args []string
	// Ports are the container's declared ports, written as kubelet does
	// into the io.kubernetes.container.ports annotation.
	Ports []corev1.ContainerPort
}

// Pod is a pod the test bed runs.
type Pod struct {
	Spec      PodSpec
	SandboxID string
	// Containers maps each container's name to its current id.
	Containers map[string]string
	// CgroupRel is the pod's cgroup (relative to the cgroup2 root):
	// <test cgroup>/kubepods/besteffort/pod<UID>.
	CgroupRel string
	// SandboxReturned is when RunPodSandbox returned.
	SandboxReturned time.Time
	restarts        map[string]int
	sandboxConfig   *runtimeapi.PodSandboxConfig
	logDir          string
}

// NewUID returns a random pod UID in the API server's form.
func NewUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// RunPod runs a host-network pod as kubelet does: it creates the pod
// cgroup first, then the sandbox, then each container (create, start).
func (c *Containerd) RunPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	if spec.UID == "" {
		spec.UID = NewUID()
	}
	p := &Pod{Spec: spec, Containers: map[string]string{}, restarts: map[string]int{},
		CgroupRel: filepath.Join(c.CgroupRel, "kubepods", "besteffort", "pod"+spec.UID),
		logDir:    filepath.Join(c.Dir, "logs", spec.Namespace+"_"+spec.Name+"_"+spec.UID)}
	// Kubelet makes the pod cgroup before the sandbox.
	if err := os.MkdirAll(filepath.Join(filepath.Dir(c.cgroupAbs), filepath.Base(c.cgroupAbs), "kubepods", "besteffort", "pod"+spec.UID), 0o755); err != nil {
		return nil, fmt.Errorf("testbed: pod cgroup: %w", err)
	}
	p.sandboxConfig = sandboxConfig(spec, p.CgroupRel, p.logDir)
	r, err := c.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: p.sandboxConfig})
	if err != nil {
		return nil, fmt.Errorf("testbed: run pod sandbox %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	p.SandboxReturned, p.SandboxID = time.Now(), r.GetPodSandboxId()
	for _, cs := range spec.Containers {
		if _, err := c.StartContainer(ctx, p, cs); err != nil {
			return p, err
		}
	}
	return p, nil
}

func sandboxConfig(spec PodSpec, cgroupParent, logDir string) *runtimeapi.PodSandboxConfig {
	labels := map[string]string{}
	for k, v := range spec.Labels {
		labels[k] = v
	}
	labels["io.kubernetes.pod.name"] = spec.Name
	labels["io.kubernetes.pod.namespace"] = spec.Namespace
	labels["io.kubernetes.pod.uid"] = spec.UID
	// No Hostname: the pod shares the node's UTS namespace, and runc
	// refuses to set a hostname there (kubelet's is the node's anyway).
	return &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: spec.Name, Namespace: spec.Namespace, Uid: spec.UID},
		LogDirectory: logDir,
		Labels:       labels,
		Annotations:  spec.Annotations,
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}
}

// containerConfig is kubelet's ContainerConfig (kuberuntime_container.go,
// labels.go): the io.kubernetes.* labels, and the annotations with the
// restart count and the ports as the JSON of []v1.ContainerPort.
func containerConfig(p *Pod, cs ContainerSpec, attempt int) (*runtimeapi.ContainerConfig, error) {
	ann := map[string]string{
		"io.kubernetes.container.hash":                     "0",
		"io.kubernetes.container.restartCount":             strconv.Itoa(attempt),
		"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
		"io.kubernetes.container.terminationMessagePolicy": "File",
		"io.kubernetes.pod.terminationGracePeriod":         "30",
		"io.kubernetes.container.type":                     "container",
	}
	if len(cs.Ports) > 0 {
		b, err := json.Marshal(cs.Ports)
		if err != nil {
			return nil, err
		}
		ann["io.kubernetes.container.ports"] = string(b)
	}
	image := cs.Image
	if image == "" {
		image = BinderImage
	}
	return &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: cs.Name, Attempt: uint32(attempt)},
		Image:    &runtimeapi.ImageSpec{Image: image},
		Args:     cs.Args,
		Labels: map[string]string{
			"io.kubernetes.pod.name":       p.Spec.Name,
			"io.kubernetes.pod.namespace":  p.Spec.Namespace,
			"io.kubernetes.pod.uid":        p.Spec.UID,
			"io.kubernetes.container.name": cs.Name,
		},
		Annotations: ann,
		LogPath:     filepath.Join(cs.Name, strconv.Itoa(attempt)+".log"),
		Linux: &runtimeapi.LinuxContainerConfig{
			SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
				NamespaceOptions: &runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Pid: runtimeapi.NamespaceMode_CONTAINER, Ipc: runtimeapi.NamespaceMode_POD},
			},
		},
	}, nil
}

// StartContainer creates and starts one more container in the pod (kubelet
// starts a pod's containers one after the other) and returns its id.
func (c *Containerd) StartContainer(ctx context.Context, p *Pod, cs ContainerSpec) (string, error) {
	if _, ok := p.restarts[cs.Name]; !ok && !hasContainer(p.Spec.Containers, cs.Name) {
		p.Spec.Containers = append(p.Spec.Containers, cs)
	}
	cfg, err := containerConfig(p, cs, p.restarts[cs.Name])
	if err != nil {
		return "", err
	}
	r, err := c.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: p.SandboxID, Config: cfg, SandboxConfig: p.sandboxConfig})
	if err != nil {
		return "", fmt.Errorf("testbed: create container %s of %s/%s: %w", cs.Name, p.Spec.Namespace, p.Spec.Name, err)
	}
	id := r.GetContainerId()
	p.Containers[cs.Name] = id
	if _, err := c.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: id}); err != nil {
		return id, fmt.Errorf("testbed: start container %s of %s/%s: %w", cs.Name, p.Spec.Namespace, p.Spec.Name, err)
	}
	return id, nil
}

// RestartContainer restarts a container as kubelet does after it exits:
// the old one stops, a new one (new id, attempt + 1) is created and
// started, and the exited one is removed afterwards. It returns the new id.
func (c *Containerd) RestartContainer(ctx context.Context, p *Pod, name string) (string, error) {
	old := p.Containers[name]
	var spec *ContainerSpec
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			spec = &p.Spec.Containers[i]
		}
	}
	if spec == nil || old == "" {
		return "", fmt.Errorf("testbed: pod %s/%s has no container %q", p.Spec.Namespace, p.Spec.Name, name)
	}
	if _, err := c.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: old, Timeout: 0}); err != nil {
		return "", fmt.Errorf("testbed: stop container %s: %w", name, err)
	}
	p.restarts[name]++
	id, err := c.StartContainer(ctx, p, *spec)
	if err != nil {
		return id, err
	}
	if _, err := c.Runtime.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: old}); err != nil {
		return id, fmt.Errorf("testbed: remove container %s: %w", name, err)
	}
	return id, nil
}

// RemovePod stops and removes the pod's sandbox and containers and its pod
// cgroup, as kubelet does on deletion.
func (c *Containerd) RemovePod(ctx context.Context, p *Pod) error {
	if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.SandboxID}); err != nil {
		return fmt.Errorf("testbed: stop pod %s/%s: %w", p.Spec.Namespace, p.Spec.Name, err)
	}
	if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.SandboxID}); err != nil {
		return fmt.Errorf("testbed: remove pod %s/%s: %w", p.Spec.Namespace, p.Spec.Name, err)
	}
	return removeV1Cgroups(p.CgroupRel)
}

// removeAllPods removes every sandbox (and with it every container) the
// runtime has.
func (c *Containerd) removeAllPods() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := c.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("testbed: list pods: %w", err)
	}
	var errs []error
	for _, sb := range r.GetItems() {
		if _, err := c.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			errs = append(errs, err)
		}
		if _, err := c.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ContainerPid returns the host pid of a container's (or a sandbox's)
// first process, from the runtime's verbose status.
func (c *Containerd) ContainerPid(ctx context.Context, id string) (int, error) {
	var info map[string]string
	if r, err := c.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: id, Verbose: true}); err == nil {
		info = r.GetInfo()
	} else if r, err2 := c.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: id, Verbose: true}); err2 == nil {
		info = r.GetInfo()
	} else {
		return 0, fmt.Errorf("testbed: status of %s: %w", id, errors.Join(err, err2))
	}
	var v struct {
		Pid int `json:"pid"`
	}
	if err := json.Unmarshal([]byte(info["info"]), &v); err != nil || v.Pid == 0 {
		return 0, fmt.Errorf("testbed: no pid in the status of %s: %v", id, err)
	}
	return v.Pid, nil
}

// Log returns what a container printed so far (CRI log format, the
// timestamp, stream and tag stripped).
func (c *Containerd) Log(p *Pod, name string) (string, error) {
	b, err := os.ReadFile(filepath.Join(p.logDir, name, strconv.Itoa(p.restarts[name])+".log"))
	if err != nil {
		return "", err
	}
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if f := strings.SplitN(sc.Text(), " ", 4); len(f) == 4 {
			out.WriteString(f[3] + "\n")
		}
	}
	return out.String(), nil
}

// WaitLog waits until the container's log has a line containing s.
func (c *Containerd) WaitLog(ctx context.Context, p *Pod, name, s string) (string, error) {
	for {
		out, _ := c.Log(p, name)
		if strings.Contains(out, s) {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, fmt.Errorf("testbed: %q not in the log of %s: %w", s, name, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// removeV1Cgroups removes rel (and all below it) in every cgroup v1
// hierarchy, where runc leaves the pod<UID> parents; the cgroup2 tree
// below the test cgroup is removed by testutils.
func removeV1Cgroups(rel string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	mounts, err := cgroups.Mounts(f, "cgroup")
	if err != nil {
		return err
	}
	var errs []error
	for _, m := range mounts {
		if m.Root != "/" {
			continue
		}
		dir := filepath.Join(m.Dir, rel)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		if err := testutils.RemoveTree(dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func hasContainer(cs []ContainerSpec, name string) bool {
	for _, c := range cs {
		if c.Name == name {
			return true
		}
	}
	return false
}
