package cri

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/policy"
)

// The labels and annotations kubelet writes (pkg/kubelet/types/labels.go,
// pkg/kubelet/kuberuntime/labels.go).
const (
	LabelPodName       = "io.kubernetes.pod.name"
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodUID        = "io.kubernetes.pod.uid"
	LabelContainerName = "io.kubernetes.container.name"
	// AnnotationContainerPorts holds the container's ports as the JSON of
	// []v1.ContainerPort; kubelet writes it only when there are ports.
	AnnotationContainerPorts = "io.kubernetes.container.ports"
)

// ParsePorts reads kubelet's io.kubernetes.container.ports annotation: the
// JSON of the container's []v1.ContainerPort. Each containerPort and each
// non-zero hostPort is a declared port, with its protocol (TCP when empty,
// as the API defaults it). SCTP ports are skipped: bindguard judges TCP and
// UDP binds. The result is sorted, each port once. An empty string declares
// nothing.
func ParsePorts(annotation string) ([]policy.PodPort, error) {
	if annotation == "" {
		return nil, nil
	}
	var cps []corev1.ContainerPort
	if err := json.Unmarshal([]byte(annotation), &cps); err != nil {
		return nil, fmt.Errorf("container ports annotation: %w", err)
	}
	var out []policy.PodPort
	for i, cp := range cps {
		var proto policy.Protocol
		switch cp.Protocol {
		case corev1.ProtocolTCP, "":
			proto = policy.TCP
		case corev1.ProtocolUDP:
			proto = policy.UDP
		case corev1.ProtocolSCTP:
			continue
		default:
			return nil, fmt.Errorf("container ports annotation: port %d: unknown protocol %q", i, cp.Protocol)
		}
		if cp.ContainerPort < 1 || cp.ContainerPort > 65535 || cp.HostPort < 0 || cp.HostPort > 65535 {
			return nil, fmt.Errorf("container ports annotation: port %d: containerPort %d, hostPort %d out of range", i, cp.ContainerPort, cp.HostPort)
		}
		out = append(out, policy.PodPort{Port: uint16(cp.ContainerPort), Protocol: proto})
		if cp.HostPort != 0 {
			out = append(out, policy.PodPort{Port: uint16(cp.HostPort), Protocol: proto})
		}
	}
	return sortPorts(out), nil
}

func sortPorts(ps []policy.PodPort) []policy.PodPort {
	slices.SortFunc(ps, func(a, b policy.PodPort) int {
		if a.Port != b.Port {
			return int(a.Port) - int(b.Port)
		}
		return int(a.Protocol) - int(b.Protocol)
	})
	return slices.Compact(ps)
}

// PodLabels returns the pod's own labels from a sandbox's labels: kubelet
// adds io.kubernetes.pod.{name,namespace,uid} to the pod's labels, and
// removes exactly those three when it reads them back
// (getPodSandboxInfoFromLabels); so does this. Any other label, even one
// under io.kubernetes., is the pod's.
func PodLabels(sandbox map[string]string) map[string]string {
	out := maps.Clone(sandbox)
	if out == nil {
		out = map[string]string{}
	}
	delete(out, LabelPodName)
	delete(out, LabelPodNamespace)
	delete(out, LabelPodUID)
	return out
}
