package podcheck

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzReadPods feeds arbitrary input to the pods file decoder. Whatever it
// accepts must be safe to check: every pod named and namespaced, every port
// in range, and Check must judge it without error.
func FuzzReadPods(f *testing.F) {
	f.Add([]byte(podList(podJSON("ns", "p", `{"hostNetwork": true, "nodeName": "worker-0", "containers": [{"name": "c", "ports": [{"containerPort": 9100}, {"containerPort": 6081, "protocol": "UDP"}]}]}`))))
	f.Add([]byte(podJSON("ns", "p", `{"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 29103, "hostIP": "::1"}]}], "initContainers": [{"name": "i", "ports": [{"containerPort": 2379}]}]}`)))
	f.Add([]byte(`{"apiVersion": "v1", "kind": "PodList", "items": null}`))
	f.Add([]byte(`{"kind": "List", "items": [{"hostNetwork": true, "hostNetwork": true}]}`))
	reg := loadRegistry(f, testRegistry)
	f.Fuzz(func(t *testing.T, data []byte) {
		pods, err := ReadPods(data, "f.json")
		if err != nil {
			return
		}
		for i := range pods {
			p := &pods[i]
			if p.Name == "" || p.Namespace == "" {
				t.Fatalf("pod %d accepted without a name or namespace", i)
			}
			eachPort(p, func(_ *corev1.Container, _ string, cp corev1.ContainerPort) {
				if cp.ContainerPort < 1 || cp.ContainerPort > 65535 || cp.HostPort < 0 || cp.HostPort > 65535 {
					t.Fatalf("pod %s accepted with port %+v", p.Name, cp)
				}
			})
		}
		if _, err := Check(reg, Cluster{Pods: pods, Nodes: testNodes()}, Options{}); err != nil {
			t.Fatalf("check: %v", err)
		}
	})
}

// FuzzReadNodes feeds arbitrary input to the nodes file decoder: whatever it
// accepts has named, distinct nodes.
func FuzzReadNodes(f *testing.F) {
	f.Add([]byte(`{"apiVersion": "v1", "kind": "List", "items": [{"kind": "Node", "metadata": {"name": "a", "labels": {"x": "1"}}}]}`))
	f.Add([]byte(`{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		nodes, err := ReadNodes(data, "f.json")
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, n := range nodes {
			if n.Name == "" || seen[n.Name] {
				t.Fatalf("node %q accepted empty or twice", n.Name)
			}
			seen[n.Name] = true
		}
	})
}
