package cri

import (
	"maps"
	"slices"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bindguard/bindguard/policy"
)

// podEntry is what the cache knows of one pod.
type podEntry struct {
	namespace, name, uid string
	labels               map[string]string
	// sandboxes are the ids of the pod's sandboxes (a pod whose sandbox was
	// recreated has more than one until kubelet removes the old one).
	sandboxes []string
	// containers by id: the name and the declared ports.
	containers map[string]containerEntry
	// refreshed is the sync generation that last saw the pod.
	refreshed uint64
}

type containerEntry struct {
	name     string
	ports    []policy.PodPort
	portsErr error
}

// buildPod assembles a pod's identity from the runtime's sandboxes and
// containers. Only sandboxes whose metadata UID is uid count, and only
// containers labelled with that UID that run in one of those sandboxes: a
// container cannot claim a pod it does not belong to. The identity comes
// from the newest ready sandbox (the newest of any state when none is
// ready). It returns nil when the runtime has no sandbox for uid.
func buildPod(uid string, sandboxes []*runtimeapi.PodSandbox, containers []*runtimeapi.Container) *podEntry {
	var best *runtimeapi.PodSandbox
	e := &podEntry{uid: uid, containers: map[string]containerEntry{}}
	for _, sb := range sandboxes {
		md := sb.GetMetadata()
		if md.GetUid() != uid || sb.GetLabels()[LabelPodUID] != uid {
			continue
		}
		e.sandboxes = append(e.sandboxes, sb.GetId())
		if best == nil || newer(sb, best) {
			best = sb
		}
	}
	if best == nil {
		return nil
	}
	e.namespace, e.name = best.GetMetadata().GetNamespace(), best.GetMetadata().GetName()
	e.labels = PodLabels(best.GetLabels())
	for _, c := range containers {
		if c.GetLabels()[LabelPodUID] != uid || !slices.Contains(e.sandboxes, c.GetPodSandboxId()) {
			continue
		}
		name := c.GetLabels()[LabelContainerName]
		if name == "" {
			name = c.GetMetadata().GetName()
		}
		ports, err := ParsePorts(c.GetAnnotations()[AnnotationContainerPorts])
		e.containers[c.GetId()] = containerEntry{name: name, ports: ports, portsErr: err}
	}
	return e
}

// newer: ready before not ready, then the later creation.
func newer(a, b *runtimeapi.PodSandbox) bool {
	ar, br := a.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY, b.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY
	if ar != br {
		return ar
	}
	return a.GetCreatedAt() > b.GetCreatedAt()
}

// has reports whether id is one of the pod's sandboxes or containers.
func (e *podEntry) has(id string) bool {
	_, ok := e.containers[id]
	return ok || slices.Contains(e.sandboxes, id)
}

// pod returns the identity of the pod, as seen from the container (or
// sandbox) id; "" for the pod itself. Ports are the union over the pod's
// containers; PortsKnown when there is at least one container and every
// container's ports annotation was read. A container that kubelet has not
// created yet cannot be known: its ports are missing until it exists.
func (e *podEntry) pod(id string) *policy.Pod {
	p := &policy.Pod{
		Namespace:  e.namespace,
		Name:       e.name,
		UID:        e.uid,
		Labels:     maps.Clone(e.labels),
		Container:  e.containers[id].name,
		PortsKnown: len(e.containers) > 0,
	}
	for _, c := range e.containers {
		if c.portsErr != nil {
			p.PortsKnown = false
			continue
		}
		p.Ports = append(p.Ports, c.ports...)
	}
	p.Ports = sortPorts(p.Ports)
	return p
}

// merge adds what o knows to e (a lookup's view of one pod): containers
// seen before stay until a full sync no longer lists them.
func (e *podEntry) merge(o *podEntry) {
	e.namespace, e.name, e.labels = o.namespace, o.name, o.labels
	for _, id := range o.sandboxes {
		if !slices.Contains(e.sandboxes, id) {
			e.sandboxes = append(e.sandboxes, id)
		}
	}
	maps.Copy(e.containers, o.containers)
	e.refreshed = max(e.refreshed, o.refreshed)
}
