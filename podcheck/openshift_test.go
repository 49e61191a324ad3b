package podcheck

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/bindguard/bindguard/internal/golden"
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
// like two OpenShift clusters' host-network pods, each a control-plane and a
// worker node with OpenShift's own node labels. The whole table is each
// scenario's expectation (testdata/SCENARIO/want.txt; go test -run OpenShift
// -update rewrites them); what each finds, and why, is asserted as well, so
// that a change in the builtin registry that changes a verdict shows here.
//
//   - openshift: 4.16 with OVN-Kubernetes. etcd, kube-apiserver,
//     kube-controller-manager, kube-scheduler and ovnkube-control-plane on
//     the control plane; node-exporter, ovnkube-node, machine-config-daemon,
//     node-resolver, dns-default and tuned on both; the host-network router
//     on the worker, and its second replica Pending, since the only worker's
//     ports are taken. Every declared port is in the registry; node-resolver
//     and tuned declare none (no-ports), the pending replica is unscheduled,
//     and dns-default (pod network, no hostPort) is not checked.
//   - openshift-sdn: a cluster still on OpenShiftSDN, its nodes labelled
//     bindguard.io/network-type=OpenShiftSDN as the builtin asks. The
//     registry is the 4.17 one, where openshift-sdn's ports are removed:
//     sdn's 10256 and 9101 on every node and sdn-controller's 9106 are all
//     removed, so this registry cannot be enforced on such a cluster before
//     its migration to OVN-Kubernetes.
func TestOpenShiftBuiltin(t *testing.T) {
	reg := loadRegistry(t, "builtin:openshift")
	tests := []struct {
		scenario string
		expect   map[string]Verdict // pod/container port → verdict
		summary  string
	}{
		{"openshift", map[string]Verdict{
			"etcd-master-0/etcd 2379":                          OK,
			"kube-apiserver-master-0/kube-apiserver 6443":      OK,
			"node-exporter-7m2pb/kube-rbac-proxy 9100":         OK,
			"machine-config-daemon-h5r9b/kube-rbac-proxy 9001": OK,
			"ovnkube-node-q8z4b/ovnkube-controller 29105":      OK,
			"router-default-6b9f8d7c5-w7lmz/router 80":         OK,
			"router-default-6b9f8d7c5-pq9zt/router 80":         Unscheduled,
			"node-resolver-t6w2a/ 0":                           NoPorts,
			"tuned-x9c3b/ 0":                                   NoPorts,
		}, "17 pods (17 host-network), 29 host ports: 26 ok, 0 violations (undeclared 0, owner 0, removed 0, address 0), " +
			"7 warnings (no-ports 4, unscheduled 3, unknown-node 0, sctp 0)"},
		{"openshift-sdn", map[string]Verdict{
			"etcd-master-0/etcd 2379":                   OK,
			"node-exporter-7m2pa/kube-rbac-proxy 9100":  OK,
			"sdn-r7k2a/sdn 10256":                       Removed,
			"sdn-r7k2b/kube-rbac-proxy 9101":            Removed,
			"sdn-controller-m4x8z/kube-rbac-proxy 9106": Removed,
		}, "6 pods (6 host-network), 12 host ports: 7 ok, 5 violations (undeclared 0, owner 0, removed 5, address 0), " +
			"0 warnings (no-ports 0, unscheduled 0, unknown-node 0, sctp 0)"},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			dir := filepath.Join("testdata", tt.scenario)
			rep, err := Check(reg, readCluster(t, filepath.Join(dir, "pods.json"), filepath.Join(dir, "nodes.json")), Options{})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := rep.WriteTable(&out); err != nil {
				t.Fatal(err)
			}
			goldenPath := filepath.Join(dir, "want.txt")
			golden.Check(t, goldenPath, out.Bytes(), *update)
			verdicts := map[string]Verdict{}
			for _, f := range rep.Findings {
				verdicts[fmt.Sprintf("%s/%s %d", f.Pod, f.Container, f.Port)] = f.Verdict
				if f.Pod == "dns-default-k4n7a" {
					t.Error("dns-default is on the pod network and has no hostPort: it must not be checked")
				}
			}
			for k, v := range tt.expect {
				if verdicts[k] != v {
					t.Errorf("%s: %q, want %s", k, verdicts[k], v)
				}
			}
			if got := rep.Summary.String(); got != tt.summary {
				t.Errorf("summary:\n%s\nwant:\n%s", got, tt.summary)
			}
		})
	}
}
