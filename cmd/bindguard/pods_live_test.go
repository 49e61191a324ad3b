package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bindguard/bindguard/internal/testbed/apiserver"
	"github.com/bindguard/bindguard/podcheck"
)

// livePod is a pod the live test creates, and what the check must say of
// each of its ports ("container port/protocol" → verdict; "" → the pod's
// one no-ports finding).
type livePod struct {
	ns, name, node string
	hostNetwork    bool
	labels         map[string]string
	containers     []corev1.Container
	init           []corev1.Container
	want           map[string]podcheck.Verdict
}

func ctr(name string, ports ...corev1.ContainerPort) corev1.Container {
	return corev1.Container{Name: name, Image: "registry.invalid/none:1", Ports: ports}
}

func tcp(n int32) corev1.ContainerPort { return corev1.ContainerPort{ContainerPort: n} }

func udp(n int32) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: n, Protocol: corev1.ProtocolUDP}
}

func onHost(n int32, hostIP string) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: 8000, HostPort: n, HostIP: hostIP}
}

// livePods are 18 pods on a control-plane and a worker Node (and one on a
// Node that does not exist, one unscheduled), covering every verdict.
func livePods() []livePod {
	etcd := map[string]string{"app": "etcd"}
	exporter := map[string]string{"app.kubernetes.io/name": "node-exporter"}
	type V = map[string]podcheck.Verdict
	return []livePod{
		{"openshift-etcd", "etcd-cp-0", "cp-0", true, etcd, []corev1.Container{ctr("etcd", tcp(2379))}, []corev1.Container{ctr("setup", tcp(2380))},
			V{"etcd 2379/tcp": podcheck.OK, "setup 2380/tcp": podcheck.Undeclared}},
		{"openshift-etcd", "etcd-backup", "cp-0", true, etcd, []corev1.Container{ctr("backup", tcp(2379))}, nil,
			V{"backup 2379/tcp": podcheck.Owner}},
		{"default", "rogue-etcd", "cp-0", true, etcd, []corev1.Container{ctr("etcd", tcp(2379))}, nil,
			V{"etcd 2379/tcp": podcheck.Owner}},
		{"openshift-etcd", "etcd-worker-0", "worker-0", true, etcd, []corev1.Container{ctr("etcd", tcp(2379))}, nil,
			V{"etcd 2379/tcp": podcheck.Undeclared}},
		{"openshift-monitoring", "node-exporter-a", "cp-0", true, exporter, []corev1.Container{ctr("node-exporter"), ctr("kube-rbac-proxy", tcp(9100))}, nil,
			V{"kube-rbac-proxy 9100/tcp": podcheck.OK}},
		{"openshift-monitoring", "node-exporter-b", "worker-0", true, exporter, []corev1.Container{ctr("node-exporter"), ctr("kube-rbac-proxy", tcp(9100))}, nil,
			V{"kube-rbac-proxy 9100/tcp": podcheck.OK}},
		{"default", "metrics-hostport", "worker-0", false, exporter, []corev1.Container{ctr("m", onHost(9100, ""))}, nil,
			V{"m 9100/tcp": podcheck.Owner}},
		{"openshift-ovn-kubernetes", "ovnkube-node-b", "worker-0", true, map[string]string{"app": "ovnkube-node"},
			[]corev1.Container{ctr("ovn-controller", udp(6081)), ctr("ovnkube-controller", tcp(29103), tcp(10256))}, nil,
			V{"ovn-controller 6081/udp": podcheck.OK, "ovnkube-controller 29103/tcp": podcheck.OK, "ovnkube-controller 10256/tcp": podcheck.Removed}},
		{"kube-system", "kubelet-proxy", "worker-0", true, nil, []corev1.Container{ctr("proxy", tcp(10250))}, nil,
			V{"proxy 10250/tcp": podcheck.Owner}},
		{"default", "hostport-any", "worker-0", false, nil, []corev1.Container{ctr("c", onHost(29103, ""))}, nil,
			V{"c 29103/tcp": podcheck.Address}},
		{"default", "hostport-loopback", "worker-0", false, nil, []corev1.Container{ctr("c", onHost(29103, "127.0.0.1"))}, nil,
			V{"c 29103/tcp": podcheck.OK}},
		{"default", "hostport-undeclared", "worker-0", false, nil, []corev1.Container{ctr("c", onHost(4000, ""))}, nil,
			V{"c 4000/tcp": podcheck.Undeclared}},
		{"openshift-dns", "node-resolver-b", "worker-0", true, nil, []corev1.Container{ctr("dns-node-resolver")}, nil,
			V{"": podcheck.NoPorts}},
		{"default", "pending", "", true, nil, []corev1.Container{ctr("c", tcp(9100))}, nil,
			V{"c 9100/tcp": podcheck.Unscheduled}},
		{"default", "lost", "gone", true, nil, []corev1.Container{ctr("c", tcp(9100))}, nil,
			V{"c 9100/tcp": podcheck.UnknownNode}},
		{"default", "sctp", "worker-0", true, nil, []corev1.Container{ctr("c", corev1.ContainerPort{ContainerPort: 9999, Protocol: corev1.ProtocolSCTP})}, nil,
			V{"c 9999/sctp": podcheck.SCTP}},
		{"default", "web", "worker-0", false, nil, []corev1.Container{ctr("c", tcp(8080))}, nil, V{}},
		{"default", "web-cp", "cp-0", false, nil, []corev1.Container{ctr("c", tcp(2379))}, nil, V{}},
	}
}

func (p livePod) object() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: p.ns, Name: p.name, Labels: p.labels},
		Spec: corev1.PodSpec{NodeName: p.node, HostNetwork: p.hostNetwork, Containers: p.containers, InitContainers: p.init,
			RestartPolicy: corev1.RestartPolicyAlways},
	}
}

// createCluster makes the Nodes, namespaces and pods of the live test.
func createCluster(t *testing.T, cs kubernetes.Interface, pods []livePod) {
	t.Helper()
	ctx := t.Context()
	for name, labels := range map[string]map[string]string{
		"cp-0":     {"kubernetes.io/hostname": "cp-0", "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": ""},
		"worker-0": {"kubernetes.io/hostname": "worker-0", "node-role.kubernetes.io/worker": ""},
	} {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create node %s: %v", name, err)
		}
	}
	for _, p := range pods {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.ns}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create namespace %s: %v", p.ns, err)
		}
		if _, err := cs.CoreV1().Pods(p.ns).Create(ctx, p.object(), metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod %s/%s: %v", p.ns, p.name, err)
		}
	}
}

// writeKubectlJSON writes the pods and nodes read back through the API as
// `kubectl get pods -A -o json` and `kubectl get nodes -o json` print them:
// a v1 List whose items carry apiVersion and kind.
func writeKubectlJSON(t *testing.T, cs kubernetes.Interface) (podsFile, nodesFile string) {
	t.Helper()
	ctx := t.Context()
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var podItems, nodeItems []any
	for i := range pods.Items {
		pods.Items[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		podItems = append(podItems, &pods.Items[i])
	}
	for i := range nodes.Items {
		nodes.Items[i].TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Node"}
		nodeItems = append(nodeItems, &nodes.Items[i])
	}
	dir := t.TempDir()
	write := func(name string, items []any) string {
		list := map[string]any{"apiVersion": "v1", "kind": "List", "metadata": map[string]any{"resourceVersion": ""}, "items": items}
		data, err := json.MarshalIndent(list, "", "    ")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, append(data, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("pods.json", podItems), write("nodes.json", nodeItems)
}

// TestPodsLiveAPIServer runs bindguard pods against a real kube-apiserver
// and etcd, then against the JSON files of the same objects read back
// through the API: both give the same document, and every verdict is what
// livePods says.
func TestPodsLiveAPIServer(t *testing.T) {
	srv := apiserver.Start(t, apiserver.Options{})
	pods := livePods()
	createCluster(t, srv.Client(), pods)
	reg := podcheckTestdata + "live-registry.yaml"

	live, stderr, code := runCmd(t, "pods", "--registry", reg, "--kubeconfig", srv.Kubeconfig, "-o", "json")
	if code != 3 {
		t.Fatalf("live: exit %d, want 3 (violations); stderr:\n%s", code, stderr)
	}
	podsFile, nodesFile := writeKubectlJSON(t, srv.Client())
	files, stderr, code := runCmd(t, "pods", "--registry", reg, "--pods", podsFile, "--nodes", nodesFile, "-o", "json")
	if code != 3 {
		t.Fatalf("files: exit %d, want 3; stderr:\n%s", code, stderr)
	}
	if live != files {
		t.Errorf("the live API and the kubectl JSON files differ:\nlive:\n%s\nfiles:\n%s", live, files)
	}

	var doc podcheck.Document
	if err := json.Unmarshal([]byte(live), &doc); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, f := range doc.Findings {
		key := f.Namespace + "/" + f.Pod + " "
		if f.Port != 0 {
			key += fmt.Sprintf("%s %d/%s", f.Container, f.Port, f.Protocol)
		}
		got[strings.TrimSpace(key)] = f.Verdict
	}
	want := map[string]string{}
	seen := map[podcheck.Verdict]bool{}
	for _, p := range pods {
		for k, v := range p.want {
			want[strings.TrimSpace(p.ns+"/"+p.name+" "+k)] = string(v)
			seen[v] = true
		}
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q, want %q", k, got[k], v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected finding %s: %s", k, v)
		}
	}
	for _, v := range append(append([]podcheck.Verdict{podcheck.OK}, podcheck.Violations...), podcheck.Warnings...) {
		if !seen[v] {
			t.Errorf("no pod covers verdict %s", v)
		}
	}
	t.Logf("%d pods, %d findings; summary %+v", len(pods), len(doc.Findings), doc.Summary)
}
