package podcheck

import (
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// benchCluster is a 1,000-node OpenShift-like cluster: 3 control-plane
// nodes, 997 workers in 3 zones (4 distinct label sets), 10 host-network
// pods of 2 ports each on every node: 10,000 pods, 20,000 ports.
func benchCluster() Cluster {
	var cl Cluster
	for i := range 1000 {
		labels := map[string]string{"kubernetes.io/os": "linux", "topology.kubernetes.io/zone": fmt.Sprintf("z%d", i%3)}
		if i < 3 {
			labels = map[string]string{"node-role.kubernetes.io/master": "", "node-role.kubernetes.io/control-plane": ""}
		} else {
			labels["node-role.kubernetes.io/worker"] = ""
		}
		name := fmt.Sprintf("node-%d", i)
		cl.Nodes = append(cl.Nodes, corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
		for j, ports := range [][2]int32{{9100, 9101}, {9103, 9105}, {9001, 8797}, {2379, 2380}, {6443, 6080}, {10250, 10256}, {9537, 10010}, {80, 443}, {1936, 10443}, {29103, 29105}} {
			cl.Pods = append(cl.Pods, testPod("ns", fmt.Sprintf("p-%d-%d", i, j), name, true, testCtr("c", cport(ports[0], ""), cport(ports[1], ""))))
		}
	}
	return cl
}

// BenchmarkCheck measures a whole check of benchCluster with builtin:openshift.
func BenchmarkCheck(b *testing.B) {
	reg := loadRegistry(b, "builtin:openshift")
	cl := benchCluster()
	b.ReportAllocs()
	for b.Loop() {
		rep, err := Check(reg, cl, Options{})
		if err != nil || rep.Summary.Ports != 20000 {
			b.Fatalf("%v %+v", err, rep.Summary)
		}
	}
}

// BenchmarkReadPods measures decoding benchCluster's pods as kubectl prints them.
func BenchmarkReadPods(b *testing.B) {
	cl := benchCluster()
	items := make([]any, len(cl.Pods))
	for i := range cl.Pods {
		cl.Pods[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		items[i] = &cl.Pods[i]
	}
	data, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ReadPods(data, "pods.json"); err != nil {
			b.Fatal(err)
		}
	}
}
