package podcheck

import (
	"strings"
	"testing"
)

// podList wraps items as kubectl get -o json prints them.
func podList(items ...string) string {
	return `{"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": [` + strings.Join(items, ",") + `]}`
}

func podJSON(ns, name, spec string) string {
	return `{"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "` + ns + `", "name": "` + name + `"}, "spec": ` + spec + `}`
}

func TestReadPods(t *testing.T) {
	good := podJSON("ns", "p", `{"hostNetwork": true, "nodeName": "n", "containers": [{"name": "c", "ports": [{"containerPort": 9100}]}]}`)
	tests := []struct {
		name  string
		input string
		pods  int
		err   string
	}{
		{"list", podList(good, podJSON("ns", "q", `{"containers": []}`)), 2, ""},
		{"pod list from the API", `{"apiVersion": "v1", "kind": "PodList", "items": [` + podJSON("ns", "p", `{}`) + `]}`, 1, ""},
		{"one pod", good, 1, ""},
		{"empty list", podList(), 0, ""},
		{"unknown fields are ignored", podJSON("ns", "p", `{"futureField": 1, "containers": [{"name": "c", "newThing": {}}]}`), 1, ""},
		{"bad JSON", "{\n  \"kind\": \"List\",\n  \"items\": [}\n", 0, "f.json:3:13: invalid JSON: invalid character '}'"},
		{"items not an array", `{"kind": "List", "items": {}}`, 0, "f.json: field items: got a JSON object, want an array"},
		{"no kind", `{"items": []}`, 0, "f.json: kind is not set: want List, PodList or Pod"},
		{"another kind", `{"apiVersion": "v1", "kind": "NodeList", "items": []}`, 0, `f.json: kind "NodeList": want List, PodList or Pod`},
		{"an item of another kind", podList(`{"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "ns", "name": "svc"}}`), 0,
			`f.json: items[0] (pod ns/svc): kind "Service": want Pod`},
		{"a wrong type names the field", podList(good, podJSON("ns", "bad", `{"hostNetwork": "yes"}`)), 0,
			"f.json: items[1] (pod ns/bad): field spec.hostNetwork: got a JSON string, want bool"},
		{"a wrong type deep down", podList(podJSON("ns", "bad", `{"containers": [{"name": "c", "ports": [{"containerPort": "9100"}]}]}`)), 0,
			"f.json: items[0] (pod ns/bad): field spec.containers.ports.containerPort: got a JSON string, want int32"},
		{"a field given twice", podList(podJSON("ns", "twice", `{"hostNetwork": true, "hostNetwork": false}`)), 0,
			`f.json: items[0] (pod ns/twice): field spec.hostNetwork: given more than once`},
		{"field names are case-sensitive, as in the API server", podJSON("ns", "p", `{"HostNetwork": "not a bool"}`), 1, ""},
		{"no name", podList(`{"metadata": {"namespace": "ns"}}`), 0, "f.json: items[0]: field metadata.name: empty"},
		{"no namespace", podList(`{"metadata": {"name": "p"}}`), 0, "f.json: items[0] (pod p): field metadata.namespace: empty"},
		{"the same pod twice", podList(good, good), 0, "f.json: items[1] (pod ns/p): pod ns/p is also items[0]"},
		{"port out of range", podList(podJSON("ns", "p", `{"containers": [{"name": "c", "ports": [{"containerPort": 80}, {"containerPort": 70000}]}]}`)), 0,
			"f.json: items[0] (pod ns/p): spec.containers[0].ports[1].containerPort: 70000: want 1-65535"},
		{"hostPort out of range", podList(podJSON("ns", "p", `{"initContainers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": -1}]}]}`)), 0,
			"f.json: items[0] (pod ns/p): spec.initContainers[0].ports[0].hostPort: -1: want 0-65535"},
		{"hostPort other than containerPort on the host network", podList(podJSON("ns", "p", `{"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 81}]}]}`)), 0,
			"spec.containers[0].ports[0].hostPort: 81 differs from containerPort 80 in a host-network pod"},
		{"protocol", podList(podJSON("ns", "p", `{"containers": [{"name": "c", "ports": [{"containerPort": 80, "protocol": "tcp"}]}]}`)), 0,
			`spec.containers[0].ports[0].protocol: "tcp": want TCP, UDP or SCTP`},
		{"hostIP", podList(podJSON("ns", "p", `{"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 80, "hostIP": "localhost"}]}]}`)), 0,
			`spec.containers[0].ports[0].hostIP: "localhost" is not an IP address`},
		{"a workload", `{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"namespace": "ns", "name": "ds"}, "spec": {"template": {"spec": {"hostNetwork": true, "nodeName": "x"}}}}`, 1, ""},
		{"workloads in a list", podList(good,
			`{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "ns", "name": "p"}, "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {}}}}`,
			`{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "ns", "name": "p"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {}}}}}}`,
			`{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"namespace": "ns", "name": "p"}, "template": {"spec": {}}}`), 4, ""},
		{"a workload of the wrong apiVersion", podList(`{"apiVersion": "extensions/v1beta1", "kind": "DaemonSet", "metadata": {"namespace": "ns", "name": "ds"}, "spec": {"template": {}}}`), 0,
			`f.json: items[0] (daemonset ns/ds): apiVersion "extensions/v1beta1": want apps/v1 for a DaemonSet`},
		{"a workload without a template", `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "ns", "name": "d"}, "spec": {}}`, 0,
			"f.json: items[0] (deployment ns/d): no pod template (spec.template)"},
		{"a workload's template of the wrong type", `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "ns", "name": "d"}, "spec": {"template": {"spec": {"hostNetwork": 1}}}}`, 0,
			"f.json: items[0] (deployment ns/d): field spec.template.spec.hostNetwork: got a JSON number, want bool"},
		{"a workload's bad port", `{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"namespace": "ns", "name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [{"containerPort": 0}]}]}}}}`, 0,
			"f.json: items[0] (daemonset ns/d): spec.containers[0].ports[0].containerPort: 0: want 1-65535"},
		{"a ReplicationController", `{"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"namespace": "ns", "name": "rc"}, "spec": {"template": {"spec": {}}}}`, 1, ""},
		// The server makes a DaemonSet's pods from spec.template and ignores a
		// top-level template: a decoy there must not stand for the pods.
		{"a decoy template beside a workload's", `{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"namespace": "ns", "name": "ds"},
			"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 9100}]}]}},
			"spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 22}]}]}}}}`, 0,
			"f.json: items[0] (daemonset ns/ds): field template: a DaemonSet's pods are made from spec.template only: the server would ignore it"},
		{"a decoy template alone", `{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "ns", "name": "d"}, "template": {"spec": {}}}`, 0,
			"f.json: items[0] (deployment ns/d): field template: a Deployment's pods are made from spec.template only"},
		{"a decoy jobTemplate in a Job", `{"apiVersion": "batch/v1", "kind": "Job", "metadata": {"namespace": "ns", "name": "j"}, "spec": {"template": {"spec": {}}, "jobTemplate": {"spec": {"template": {"spec": {}}}}}}`, 0,
			"f.json: items[0] (job ns/j): field spec.jobTemplate.spec.template: a Job's pods are made from spec.template only"},
		{"a decoy spec.template in a CronJob", `{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "ns", "name": "cj"}, "spec": {"template": {"spec": {"hostNetwork": true}}, "jobTemplate": {"spec": {"template": {"spec": {}}}}}}`, 0,
			"f.json: items[0] (cronjob ns/cj): field spec.template: a CronJob's pods are made from spec.jobTemplate.spec.template only"},
		{"a CronJob with only a decoy", `{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "ns", "name": "cj"}, "spec": {"template": {"spec": {}}}}`, 0,
			"f.json: items[0] (cronjob ns/cj): field spec.template: a CronJob's pods are made from spec.jobTemplate.spec.template only"},
		{"a CronJob without its template", `{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "ns", "name": "cj"}, "spec": {"jobTemplate": {"spec": {}}}}`, 0,
			"f.json: items[0] (cronjob ns/cj): no pod template (spec.jobTemplate.spec.template)"},
		{"a decoy spec.template in a PodTemplate", `{"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"namespace": "ns", "name": "pt"}, "template": {"spec": {}}, "spec": {"template": {"spec": {}}}}`, 0,
			"f.json: items[0] (podtemplate ns/pt): field spec.template: a PodTemplate's pods are made from template only"},
		{"a null template is no template", `{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"namespace": "ns", "name": "ds"}, "template": null, "spec": {"template": {"spec": {}}}}`, 1, ""},
		{"a pod template in a Pod", podList(podJSON("ns", "p", `{"template": {"spec": {"hostNetwork": true}}}`)), 0,
			"f.json: items[0] (pod ns/p): field spec.template: a Pod has no pod template: the server would ignore it"},
		{"a top-level template in a Pod", `{"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ns", "name": "p"}, "template": {}, "spec": {}}`, 0,
			"f.json: items[0] (pod ns/p): field template: a Pod has no pod template"},
		{"a name that would forge a report line", podList(podJSON("ns", `p\n`, `{}`)), 0, `f.json: items[0] (pod "ns/p\n"): field metadata.name: "p\n": a lowercase RFC 1123 subdomain`},
		{"a bad node name", podList(podJSON("ns", "p", `{"nodeName": "a b"}`)), 0, `field spec.nodeName: "a b": a lowercase RFC 1123 subdomain`},
		{"a bad namespace", podList(podJSON("Ns", "p", `{}`)), 0, `field metadata.namespace: "Ns": a lowercase RFC 1123 label`},
		{"a bad container name", podList(podJSON("ns", "p", `{"containers": [{"name": "c\tok"}]}`)), 0, `spec.containers[0].name: "c\tok": a lowercase RFC 1123 label`},
		{"ephemeral containers are checked", podList(podJSON("ns", "p", `{"ephemeralContainers": [{"name": "d", "ports": [{"containerPort": 0}]}]}`)), 0,
			"spec.ephemeralContainers[0].ports[0].containerPort: 0: want 1-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pods, err := ReadPods([]byte(tt.input), "f.json")
			for _, p := range pods {
				if p.Spec.NodeName != "" && strings.Contains(p.Name, "/") {
					t.Errorf("workload pod %s has node %q", p.Name, p.Spec.NodeName)
				}
			}
			if !decoded(t, err, tt.err) {
				return
			}
			if len(pods) != tt.pods {
				t.Errorf("%d pods, want %d", len(pods), tt.pods)
			}
		})
	}
}

func TestReadPodsReportsEveryItem(t *testing.T) {
	var items []string
	for i := range 25 {
		items = append(items, podJSON("ns", "p"+string(rune('a'+i)), `{"hostNetwork": 1}`))
	}
	_, err := ReadPods([]byte(podList(items...)), "f.json")
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 || lines[maxErrors] != "and 5 more errors" {
		t.Errorf("%d lines, last %q", len(lines), lines[len(lines)-1])
	}
	for _, l := range lines[:maxErrors] {
		if !strings.HasPrefix(l, "f.json: items[") {
			t.Errorf("line %q does not name the item", l)
		}
	}
}

func TestReadNodes(t *testing.T) {
	node := func(name, labels string) string {
		return `{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "` + name + `", "labels": ` + labels + `}}`
	}
	tests := []struct {
		name  string
		input string
		nodes int
		err   string
	}{
		{"list", podList(node("a", `{"x": "1"}`), node("b", `{}`)), 2, ""},
		{"one node", node("a", `{}`), 1, ""},
		{"pods are not nodes", podList(podJSON("ns", "p", `{}`)), 0, `f.json: items[0] (node ns/p): kind "Pod": want Node`},
		{"labels of the wrong type", podList(node("a", `["x"]`)), 0, "f.json: items[0] (node a): field metadata.labels: got a JSON array"},
		{"the same node twice", podList(node("a", `{}`), node("a", `{}`)), 0, "f.json: items[1] (node a): node a is also items[0]"},
		{"no name", podList(`{"metadata": {}}`), 0, "f.json: items[0]: field metadata.name: empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes, err := ReadNodes([]byte(tt.input), "f.json")
			if !decoded(t, err, tt.err) {
				return
			}
			if len(nodes) != tt.nodes {
				t.Errorf("%d nodes, want %d", len(nodes), tt.nodes)
			}
		})
	}
}

// decoded reports whether a decode that returned err is to be checked
// further: it fails t unless err contains wantErr, or is nil where wantErr
// is "", and returns false once a wanted error is seen.
func decoded(t *testing.T, err error, wantErr string) bool {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error %v, want one containing %q", err, wantErr)
		}
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}
