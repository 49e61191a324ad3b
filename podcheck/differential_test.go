package podcheck

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/policy"
)

// TestAgreesWithDecide checks that the verdict on a host-network pod's port
// is what policy.Decide, the reference for the kernel programs, says of a
// bind to that port from that pod's container on that node: the cluster check
// and the node agent must not disagree. The binder is a container in a pod
// cgroup, with a uid and cgroup that no owner names (the API does not know
// them), binding loopback (the API does not know the address either).
func TestAgreesWithDecide(t *testing.T) {
	nodes := testNodes()
	seen := map[Verdict]int{}
	for _, regPath := range []string{testRegistry, "testdata/live-registry.yaml", "builtin:openshift", "builtin:kubean"} {
		reg := loadRegistry(t, regPath)
		for _, node := range nodes {
			c, err := policy.Compile(reg, node.Labels)
			if err != nil {
				t.Fatal(err)
			}
			ports := []uint16{1, 4000, 65535}
			for _, r := range c.Rules {
				ports = append(ports, r.Port)
			}
			for _, ns := range []string{"openshift-etcd", "openshift-monitoring", "default"} {
				for _, ctrName := range []string{"etcd", "kube-rbac-proxy"} {
					for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
						name := fmt.Sprintf("%s/%s/%s/%s/%s", regPath, node.Name, ns, ctrName, proto)
						compare(t, name, reg, c, node, ns, ctrName, proto, ports, seen)
					}
				}
			}
		}
	}
	for _, v := range []Verdict{OK, Undeclared, Owner, Removed} {
		if seen[v] == 0 {
			t.Errorf("no case reached %s: the comparison would pass vacuously", v)
		}
	}
	t.Logf("verdicts compared: %v", seen)
}

func compare(t *testing.T, name string, reg *policy.Registry, c *policy.Compiled, node corev1.Node, ns, ctrName string,
	proto corev1.Protocol, ports []uint16, seen map[Verdict]int) {
	t.Helper()
	labels := map[string]string{"app": "etcd", "app.kubernetes.io/name": "node-exporter"}
	for _, port := range ports {
		p := testPod(ns, "p", node.Name, true, testCtr(ctrName, cport(int32(port), proto)))
		p.Labels = labels
		rep, err := Check(reg, Cluster{Pods: []corev1.Pod{p}, Nodes: []corev1.Node{node}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		pp := policy.Protocol(policy.TCP)
		if proto == corev1.ProtocolUDP {
			pp = policy.UDP
		}
		d := policy.Decide(c, policy.ModeEnforce, policy.BindAttempt{
			Port: port, Protocol: pp, Family: policy.FamilyIPv4, Address: netip.MustParseAddr("127.0.0.1"),
			Cgroup: "/kubepods/besteffort/podx/" + ctrName, UID: 4242, HostNetns: true,
			Pod: &policy.Pod{Namespace: ns, Name: "p", Labels: labels, Container: ctrName, PortsKnown: true,
				Ports: []policy.PodPort{{Port: port, Protocol: pp}}},
		}, policy.DecideOptions{})
		want := OK
		if d.Violation() {
			want = Verdict(d.Reason)
		}
		seen[want]++
		if got := rep.Findings[0].Verdict; got != want {
			t.Errorf("%s %d: podcheck %s, Decide %s (%s)", name, port, got, want, rep.Findings[0].Detail)
		}
	}
}
