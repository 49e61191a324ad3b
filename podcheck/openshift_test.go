package podcheck

import (
	"bytes"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the expected output in testdata")

// readCluster reads a pods and a nodes file as `bindguard pods --pods --nodes` does.
func readCluster(t *testing.T, podsFile, nodesFile string) Cluster {
	t.Helper()
	data, err := os.ReadFile(podsFile)
	if err != nil {
		t.Fatal(err)
	}
	pods, err := ReadPods(data, podsFile)
	if err != nil {
		t.Fatal(err)
	}
	if data, err = os.ReadFile(nodesFile); err != nil {
		t.Fatal(err)
	}
	nodes, err := ReadNodes(data, nodesFile)
	if err != nil {
		t.Fatal(err)
	}
	return Cluster{Pods: pods, Nodes: nodes}
}

// TestOpenShiftBuiltin runs the check with builtin:openshift on pods shaped
// like an OpenShift 4.16 cluster's host-network pods (testdata/openshift: a
// control-plane and a worker node with OpenShift's own node labels; etcd,
// kube-apiserver, kube-controller-manager, kube-scheduler and
// ovnkube-control-plane on the control plane; node-exporter, ovnkube-node,
// machine-config-daemon, node-resolver, dns-default and tuned on both; the
// host-network router on the worker). The whole table is the expectation:
// testdata/openshift/want.txt (go test -run OpenShift -update rewrites it).
//
// What it finds, and why, is asserted below as well, so that a change in the
// builtin registry that changes the verdicts is seen here.
func TestOpenShiftBuiltin(t *testing.T) {
	reg := loadRegistry(t, "builtin:openshift")
	rep, err := Check(reg, readCluster(t, "testdata/openshift/pods.json", "testdata/openshift/nodes.json"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rep.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/openshift/want.txt"
	if *update {
		if err := os.WriteFile(golden, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Errorf("output differs from %s:\n%s", golden, out.String())
	}
	verdicts := map[string]Verdict{}
	for _, f := range rep.Findings {
		verdicts[f.Pod+"/"+f.Container] = f.Verdict
	}
	expect := map[string]Verdict{
		// Ports every node has: declared without a selector.
		"node-exporter-7m2pa/kube-rbac-proxy":         OK,
		"node-exporter-7m2pb/kube-rbac-proxy":         OK,
		"machine-config-daemon-h5r9b/kube-rbac-proxy": OK,
		"ovnkube-node-q8z4b/ovnkube-controller":       OK,
		"router-default-6b9f8d7c5-w7lmz/router":       OK,
		// Host-network pods that declare nothing: nothing can be judged.
		"node-resolver-t6w2a/": NoPorts,
		"tuned-x9c3b/":         NoPorts,
	}
	for k, v := range expect {
		if verdicts[k] != v {
			t.Errorf("%s: %s, want %s", k, verdicts[k], v)
		}
	}
	if _, ok := verdicts["dns-default-k4n7a/dns"]; ok {
		t.Error("dns-default is on the pod network and has no hostPort: it must not be checked")
	}
}
