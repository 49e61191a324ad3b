package podcheck

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/bindguard/bindguard/policy"
)

const testRegistry = "testdata/registry.yaml"

func loadRegistry(t testing.TB, paths ...string) *policy.Registry {
	t.Helper()
	reg, err := policy.Load(paths...)
	if err != nil {
		t.Fatalf("load %v: %v", paths, err)
	}
	return reg
}

func testPod(ns, name, node string, hostNetwork bool, ctrs ...corev1.Container) corev1.Pod {
	return corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: node, HostNetwork: hostNetwork, Containers: ctrs},
	}
}

func testCtr(name string, ports ...corev1.ContainerPort) corev1.Container {
	return corev1.Container{Name: name, Ports: ports}
}

// cport is a containerPort; hport a hostPort (on containerPort+10000).
func cport(n int32, proto corev1.Protocol) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: n, Protocol: proto}
}

func hport(n int32, hostIP string) corev1.ContainerPort {
	return corev1.ContainerPort{ContainerPort: n + 10000, HostPort: n, HostIP: hostIP, Protocol: corev1.ProtocolTCP}
}

func testNodes() []corev1.Node {
	return []corev1.Node{
		{ObjectMeta: metav1.ObjectMeta{Name: "cp-0", Labels: map[string]string{"node-role.kubernetes.io/control-plane": ""}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "worker-0", Labels: map[string]string{"node-role.kubernetes.io/worker": ""}}},
	}
}

// brief is what a test compares: one finding without its detail.
type brief struct {
	pod, node, container string
	port                 uint16
	proto                string
	verdict              Verdict
	rule                 string
}

func briefs(fs []Finding) []brief {
	out := make([]brief, len(fs))
	for i, f := range fs {
		b := brief{f.Namespace + "/" + f.Pod, f.Node, f.Container, f.Port, f.Protocol, f.Verdict, ""}
		if f.Rule != nil {
			b.rule = f.Rule.Pos.FileLine()
		}
		out[i] = b
	}
	return out
}

func TestCheck(t *testing.T) {
	reg := loadRegistry(t, testRegistry)
	rule := func(line string) string { return testRegistry + ":" + line }
	initPod := testPod("ns", "init", "worker-0", true, testCtr("main", cport(9100, "")))
	initPod.Spec.InitContainers = []corev1.Container{testCtr("setup", cport(2379, corev1.ProtocolTCP))}
	tests := []struct {
		name   string
		pods   []corev1.Pod
		labels map[string]string
		want   []brief
	}{
		{"declared on its node", []corev1.Pod{testPod("ns", "etcd", "cp-0", true, testCtr("etcd", cport(2379, "")))},
			nil, []brief{{"ns/etcd", "cp-0", "etcd", 2379, "tcp", OK, rule("6")}}},
		{"selector keeps the port off workers", []corev1.Pod{testPod("ns", "etcd", "worker-0", true, testCtr("etcd", cport(2379, "")))},
			nil, []brief{{"ns/etcd", "worker-0", "etcd", 2379, "tcp", Undeclared, ""}}},
		{"udp is its own port", []corev1.Pod{testPod("ns", "ovn", "worker-0", true, testCtr("ovn", cport(6081, corev1.ProtocolUDP), cport(6081, "")))},
			nil, []brief{{"ns/ovn", "worker-0", "ovn", 6081, "udp", OK, rule("8")}, {"ns/ovn", "worker-0", "ovn", 6081, "tcp", Undeclared, ""}}},
		{"owners without a pod admit no pod", []corev1.Pod{testPod("ns", "kubelet", "worker-0", true, testCtr("k", cport(10250, "")))},
			nil, []brief{{"ns/kubelet", "worker-0", "k", 10250, "tcp", Owner, rule("9")}}},
		{"removed", []corev1.Pod{testPod("ns", "sdn", "worker-0", true, testCtr("sdn", cport(10256, "")))},
			nil, []brief{{"ns/sdn", "worker-0", "sdn", 10256, "tcp", Removed, rule("14")}}},
		{"hostPort on every address of a localhost-only port", []corev1.Pod{testPod("ns", "hp", "worker-0", false, testCtr("c", hport(29103, "")))},
			nil, []brief{{"ns/hp", "worker-0", "c", 29103, "tcp", Address, rule("12")}}},
		{"hostPort on loopback of a localhost-only port", []corev1.Pod{testPod("ns", "hp", "worker-0", false, testCtr("c", hport(29103, "127.0.0.1")))},
			nil, []brief{{"ns/hp", "worker-0", "c", 29103, "tcp", OK, rule("12")}}},
		{"host-network pod on a localhost-only port: its address is the node's to judge", []corev1.Pod{testPod("ns", "m", "worker-0", true, testCtr("c", cport(29103, "")))},
			nil, []brief{{"ns/m", "worker-0", "c", 29103, "tcp", OK, rule("12")}}},
		{"hostPort judged, its containerPort not", []corev1.Pod{testPod("ns", "hp", "worker-0", false, testCtr("c", hport(9100, ""), cport(2379, "")))},
			nil, []brief{{"ns/hp", "worker-0", "c", 9100, "tcp", OK, rule("7")}}},
		{"pod network without hostPort is not checked", []corev1.Pod{testPod("ns", "web", "worker-0", false, testCtr("c", cport(8080, "")))},
			nil, []brief{}},
		{"host network without ports", []corev1.Pod{testPod("ns", "resolver", "worker-0", true, testCtr("c"))},
			nil, []brief{{"ns/resolver", "worker-0", "", 0, "", NoPorts, ""}}},
		{"init container ports are host ports", []corev1.Pod{initPod},
			nil, []brief{{"ns/init", "worker-0", "main", 9100, "tcp", OK, rule("7")}, {"ns/init", "worker-0", "setup", 2379, "tcp", Undeclared, ""}}},
		{"unscheduled", []corev1.Pod{testPod("ns", "p", "", true, testCtr("c", cport(9100, "")))},
			nil, []brief{{"ns/p", "", "c", 9100, "tcp", Unscheduled, ""}}},
		{"unscheduled judged with --node-label", []corev1.Pod{testPod("ns", "p", "", true, testCtr("c", cport(2379, "")))},
			map[string]string{"node-role.kubernetes.io/control-plane": ""}, []brief{{"ns/p", "", "c", 2379, "tcp", OK, rule("6")}}},
		{"unknown node", []corev1.Pod{testPod("ns", "p", "gone", true, testCtr("c", cport(9100, "")))},
			nil, []brief{{"ns/p", "gone", "c", 9100, "tcp", UnknownNode, ""}}},
		{"sctp", []corev1.Pod{testPod("ns", "p", "worker-0", true, testCtr("c", cport(9100, corev1.ProtocolSCTP)))},
			nil, []brief{{"ns/p", "worker-0", "c", 9100, "sctp", SCTP, ""}}},
		{"sorted by namespace and name", []corev1.Pod{
			testPod("b", "a", "worker-0", true, testCtr("c", cport(9100, ""))),
			testPod("a", "z", "worker-0", true, testCtr("c", cport(9100, ""))),
			testPod("a", "b", "worker-0", true, testCtr("c", cport(9100, "")))},
			nil, []brief{{"a/b", "worker-0", "c", 9100, "tcp", OK, rule("7")}, {"a/z", "worker-0", "c", 9100, "tcp", OK, rule("7")}, {"b/a", "worker-0", "c", 9100, "tcp", OK, rule("7")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := Check(reg, Cluster{Pods: tt.pods, Nodes: testNodes()}, Options{Labels: tt.labels})
			if err != nil {
				t.Fatal(err)
			}
			got := briefs(rep.Findings)
			if len(got) != len(tt.want) {
				t.Fatalf("findings:\n%+v\nwant:\n%+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("finding %d: %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			for _, f := range rep.Findings {
				if f.Verdict != OK && f.Detail == "" {
					t.Errorf("%+v: no detail", f)
				}
			}
		})
	}
}

func TestSummary(t *testing.T) {
	reg := loadRegistry(t, testRegistry)
	pods := []corev1.Pod{
		testPod("ns", "a", "cp-0", true, testCtr("c", cport(2379, ""), cport(9100, ""), cport(10256, ""))),
		testPod("ns", "b", "worker-0", true),
		testPod("ns", "c", "worker-0", false, testCtr("c", hport(4000, ""))),
		testPod("ns", "d", "", false, testCtr("c", hport(9100, ""))),
		testPod("ns", "web", "worker-0", false, testCtr("c", cport(80, ""))),
	}
	rep, err := Check(reg, Cluster{Pods: pods, Nodes: testNodes()}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Summary
	if s.Pods != 4 || s.HostNetwork != 2 || s.Ports != 5 || s.OK != 2 || s.ViolationCount() != 2 || s.WarningCount() != 2 {
		t.Errorf("summary %+v", s)
	}
	want := "4 pods (2 host-network), 5 host ports: 2 ok, 2 violations (undeclared 1, owner 0, removed 1, address 0), " +
		"2 warnings (no-ports 1, unscheduled 1, unknown-node 0, sctp 0)"
	if got := s.String(); got != want {
		t.Errorf("summary line:\n%s\nwant:\n%s", got, want)
	}
}

// TestJudgePodOwners covers pod: owners on a compiled rule built by hand, so
// that it does not depend on the registry syntax for them.
func TestJudgePodOwners(t *testing.T) {
	etcd := policy.PodOwner{Namespace: "openshift-etcd", Labels: map[string]string{"app": "etcd"}}
	metrics := policy.PodOwner{Namespace: "openshift-etcd", Labels: map[string]string{"app": "etcd"}, Container: "etcd-metrics"}
	tests := []struct {
		name      string
		owners    policy.Owners
		ns        string
		labels    map[string]string
		container string
		want      Verdict
	}{
		{"namespace and labels", policy.Owners{Pods: []policy.PodOwner{etcd}}, "openshift-etcd", map[string]string{"app": "etcd", "revision": "7"}, "etcd", OK},
		{"another namespace", policy.Owners{Pods: []policy.PodOwner{etcd}}, "default", map[string]string{"app": "etcd"}, "etcd", Owner},
		{"a label missing", policy.Owners{Pods: []policy.PodOwner{etcd}}, "openshift-etcd", map[string]string{"k8s-app": "etcd"}, "etcd", Owner},
		{"the owner's container", policy.Owners{Pods: []policy.PodOwner{metrics}}, "openshift-etcd", map[string]string{"app": "etcd"}, "etcd-metrics", OK},
		{"a sibling container", policy.Owners{Pods: []policy.PodOwner{metrics}}, "openshift-etcd", map[string]string{"app": "etcd"}, "etcd", Owner},
		{"one of several owners", policy.Owners{Units: []string{"etcd.service"}, Pods: []policy.PodOwner{metrics, etcd}}, "openshift-etcd", map[string]string{"app": "etcd"}, "etcd", OK},
		{"uid owners only", policy.Owners{UIDs: []uint32{0}}, "openshift-etcd", map[string]string{"app": "etcd"}, "etcd", Owner},
		{"no owners", policy.Owners{}, "default", nil, "x", OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &policy.Compiled{
				Rules:   []policy.Rule{{Port: 2379, Protocol: policy.TCP, Owners: tt.owners}},
				Origins: []policy.Origin{{Pos: policy.Pos{File: "r.yaml", Line: 3}, Process: "etcd"}},
			}
			p := testPod(tt.ns, "etcd-0", "cp-0", true)
			p.Labels = tt.labels
			f := Finding{Port: 2379, Protocol: "tcp", HostNetwork: true}
			judge(c, &p, tt.container, "", &f)
			if f.Verdict != tt.want {
				t.Fatalf("verdict %s (%s), want %s", f.Verdict, f.Detail, tt.want)
			}
			if f.Rule == nil || f.Rule.Pos.FileLine() != "r.yaml:3" {
				t.Errorf("rule %+v, want r.yaml:3", f.Rule)
			}
		})
	}
}

func TestCheckCompilesOncePerLabelSet(t *testing.T) {
	reg := loadRegistry(t, testRegistry)
	nodes := append(testNodes(), corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1", Labels: map[string]string{"node-role.kubernetes.io/worker": ""}}})
	var pods []corev1.Pod
	for _, n := range []string{"cp-0", "worker-0", "worker-1"} {
		pods = append(pods, testPod("ns", "p-"+n, n, true, testCtr("c", cport(9100, ""))))
	}
	ck := checker{reg: reg, nodes: map[string]map[string]string{}, compiled: map[string]*policy.Compiled{}}
	for _, n := range nodes {
		ck.nodes[n.Name] = n.Labels
	}
	for i := range pods {
		if _, err := ck.pod(&pods[i]); err != nil {
			t.Fatal(err)
		}
	}
	if len(ck.compiled) != 2 {
		t.Errorf("compiled %d policies for 2 label sets", len(ck.compiled))
	}
}

func TestUndeclaredNamesTheEntryOfOtherNodes(t *testing.T) {
	reg := loadRegistry(t, testRegistry)
	pods := []corev1.Pod{
		testPod("ns", "etcd", "worker-0", true, testCtr("etcd", cport(2379, ""))),
		testPod("ns", "x", "worker-0", true, testCtr("x", cport(4000, ""))),
	}
	rep, err := Check(reg, Cluster{Pods: pods, Nodes: testNodes()}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"no registry entry for 2379/tcp on this node; " + testRegistry + ":6 (etcd) declares it for other nodes: its nodeSelector does not match this node's labels",
		"no registry entry for 4000/tcp on this node",
	}
	for i, f := range rep.Findings {
		if f.Detail != want[i] {
			t.Errorf("detail %q, want %q", f.Detail, want[i])
		}
	}
}
