package policy

import (
	"maps"
	"slices"
)

// PodOwner is a `pod:` owner of a registry entry: the containers of the
// pods of one namespace whose labels include Labels.
type PodOwner struct {
	// Namespace is required.
	Namespace string
	// Labels must all be present on the pod with these values; empty: every
	// pod of the namespace.
	Labels map[string]string
	// Container names the one container of the pod that owns the port; "":
	// every container of the pod.
	Container string
}

// Matches reports whether the pod, and the container it names, is this owner.
func (o PodOwner) Matches(p *Pod) bool {
	if p == nil || !p.Known() || p.Namespace != o.Namespace {
		return false
	}
	if o.Container != "" && p.Container != o.Container {
		return false
	}
	for k, v := range o.Labels {
		if got, ok := p.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// PodLevel reports whether the owner admits every container of a pod, so
// that the pod's own cgroup (and all below it) can be a member.
func (o PodOwner) PodLevel() bool { return o.Container == "" }

// Equal reports whether two pod owners are the same owner.
func (o PodOwner) Equal(b PodOwner) bool {
	return o.Namespace == b.Namespace && o.Container == b.Container && maps.Equal(o.Labels, b.Labels)
}

// Pod is the identity of a binder that runs in a Kubernetes pod, as the
// node's container runtime reports it (CRI), or as the API server has it.
type Pod struct {
	Namespace string
	Name      string
	// UID is the pod's UID as the runtime reports it: for a static pod it
	// is kubelet's config hash, not the API's mirror-pod UID.
	UID    string
	Labels map[string]string
	// Container is the name of the container the binder runs in; "" for
	// the sandbox (pause) or when only the pod is known.
	Container string
	// Ports are the ports that the pod's containers declare (containerPort
	// and hostPort), each once.
	Ports []PodPort
	// PortsKnown is false while the pod's declared ports are not known
	// (the runtime has not reported every container yet).
	PortsKnown bool
	// Pending is set for a binder in a pod's cgroup whose identity the
	// runtime has not reported yet: only the fact that it is a pod is known.
	Pending bool
}

// PodPort is one declared port of a pod.
type PodPort struct {
	Port     uint16
	Protocol Protocol
}

// Known reports whether the pod's identity is known.
func (p *Pod) Known() bool { return p != nil && !p.Pending }

// Declares reports whether one of the pod's containers declares (port, protocol).
func (p *Pod) Declares(port uint16, proto Protocol) bool {
	return p != nil && slices.Contains(p.Ports, PodPort{Port: port, Protocol: proto})
}
