package cri

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

var (
	// ErrNotYet: the runtime answers but has no such pod, or the pod has
	// no such container: not yet (kubelet creates the pod cgroup before the
	// sandbox, and a container's cgroup before CreateContainer returns), or
	// no more. Retry with backoff (LookupWait) or treat as unknown.
	ErrNotYet = errors.New("pod or container not known to the runtime")
	// ErrUnavailable: the runtime cannot be reached and the cache does not
	// have the answer.
	ErrUnavailable = errors.New("container runtime unavailable")
	// ErrInvalid: the pod UID or container id is not in the form kubelet
	// and the runtimes make them.
	ErrInvalid = errors.New("invalid pod uid or container id")
	// ErrNotPod: the cgroup is not in kubelet's layout below one of the
	// kubepods cgroups given.
	ErrNotPod = errors.New("not a pod's cgroup")
)

// LookupCgroup resolves the pod of a cgroup path (relative to the cgroup2
// root): the path must be in kubelet's layout (cgroups.ParseKube) below one
// of kubepods, kubelet's place on this node (cgroups.FS.Kubepods), and the
// runtime must confirm it (Lookup). A look-alike tree elsewhere is ErrNotPod.
func (c *Client) LookupCgroup(rel string, kubepods []string) (*policy.Pod, error) {
	k, ok := cgroups.ParseKube(rel)
	if !ok || !k.InKubepods(kubepods) {
		return nil, fmt.Errorf("cri: cgroup %s: %w", rel, ErrNotPod)
	}
	return c.Lookup(k.PodUID, k.ContainerID)
}

// Lookup returns the identity of the pod podUID as seen from containerID:
// one of its containers, its sandbox (Container ""), or "" for the pod
// itself. The answer comes from the cache when it has both; otherwise the
// runtime is asked (ListPodSandbox and ListContainers by the
// io.kubernetes.pod.uid label) and the cache updated. The container must
// belong to the pod in the runtime's view, whatever a cgroup path claims.
// Errors wrap ErrNotYet, ErrUnavailable or ErrInvalid.
func (c *Client) Lookup(podUID, containerID string) (*policy.Pod, error) {
	return c.lookup(context.Background(), podUID, containerID)
}

func (c *Client) lookup(ctx context.Context, podUID, containerID string) (*policy.Pod, error) {
	if !cgroups.ValidPodUID(podUID) || (containerID != "" && !cgroups.ValidContainerID(containerID)) {
		return nil, fmt.Errorf("cri: lookup pod %q container %q: %w", podUID, containerID, ErrInvalid)
	}
	if p := c.cached(podUID, containerID); p != nil {
		return p, nil
	}
	e, err := c.resolve(ctx, podUID)
	if err != nil {
		return nil, fmt.Errorf("cri: lookup pod %s: %w", podUID, err)
	}
	if e == nil || (containerID != "" && !e.has(containerID)) {
		return nil, fmt.Errorf("cri: lookup pod %s container %q: %w", podUID, containerID, ErrNotYet)
	}
	for id, ce := range e.containers {
		if ce.portsErr != nil {
			c.opts.Logf("cri: pod %s/%s (uid %s), container %s (%s): %v: its declared host ports are not known",
				e.namespace, e.name, podUID, ce.name, id, ce.portsErr)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.pods[podUID]; ok {
		old.merge(e)
		e = old
	} else {
		c.pods[podUID] = e
	}
	for _, id := range e.sandboxes {
		c.owner[id] = podUID
	}
	for id := range e.containers {
		c.owner[id] = podUID
	}
	return e.pod(containerID), nil
}

func (c *Client) cached(podUID, containerID string) *policy.Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.pods[podUID]
	if !ok || (containerID != "" && c.owner[containerID] != podUID) {
		return nil
	}
	return e.pod(containerID)
}

// resolve asks the runtime about one pod; nil, nil when it has none.
func (c *Client) resolve(ctx context.Context, podUID string) (*podEntry, error) {
	c.mu.Lock()
	rt, gen := c.rt, c.gen
	c.mu.Unlock()
	if rt == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, c.Status().LastError)
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.Timeout)
	defer cancel()
	sel := map[string]string{LabelPodUID: podUID}
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}})
	if err != nil {
		return nil, c.failed(err)
	}
	if len(sbs.GetItems()) == 0 {
		return nil, nil
	}
	cs, err := rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: sel}})
	if err != nil {
		return nil, c.failed(err)
	}
	e := buildPod(podUID, sbs.GetItems(), cs.GetContainers())
	if e != nil {
		e.refreshed = gen
	}
	return e, nil
}

// failed turns a runtime call's error into ErrUnavailable when the runtime
// is gone, and has the background loop notice at once.
func (c *Client) failed(err error) error {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		c.nudge()
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return err
}

// Forget drops a pod from the cache (its cgroup is gone); a later lookup
// asks the runtime again.
func (c *Client) Forget(podUID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.pods[podUID]
	if !ok {
		return
	}
	delete(c.pods, podUID)
	for _, id := range e.sandboxes {
		delete(c.owner, id)
	}
	for id := range e.containers {
		delete(c.owner, id)
	}
}

// LookupWait is Lookup retried while the answer is ErrNotYet or
// ErrUnavailable, sleeping 1, 2, 4 … ms between tries, until ctx ends; then
// it returns the last error. Each try may ask the runtime, so the sleep
// stops growing at 64 ms only for the first seconds, in which a starting
// pod's sandbox and containers appear; a pod that stays unknown longer (one
// waiting for a volume, say) is asked about once a second.
func (c *Client) LookupWait(ctx context.Context, podUID, containerID string) (*policy.Pod, error) {
	const (
		fastStep  = 64 * time.Millisecond
		slowAfter = 2 * time.Second
		slowStep  = time.Second
	)
	start, step := time.Now(), time.Millisecond
	for {
		p, err := c.lookup(ctx, podUID, containerID)
		if err == nil || !(errors.Is(err, ErrNotYet) || errors.Is(err, ErrUnavailable)) {
			return p, err
		}
		t := time.NewTimer(step)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		maxStep := fastStep
		if time.Since(start) > slowAfter {
			maxStep = slowStep
		}
		step = min(2*step, maxStep)
	}
}
