package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/podcheck"
)

const podcheckTestdata = "../../podcheck/testdata/"

// writeFile writes content to name in a temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func podsList(items ...string) string {
	return `{"apiVersion": "v1", "kind": "List", "items": [` + strings.Join(items, ",") + `]}`
}

func hostPod(ns, name, node string, ports ...string) string {
	var ps []string
	for _, p := range ports {
		ps = append(ps, `{"containerPort": `+p+`}`)
	}
	return `{"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "` + ns + `", "name": "` + name + `"},
	  "spec": {"hostNetwork": true, "nodeName": "` + node + `", "containers": [{"name": "c", "ports": [` + strings.Join(ps, ",") + `]}]}}`
}

func TestPods(t *testing.T) {
	reg := podcheckTestdata + "registry.yaml"
	nodes := writeFile(t, "nodes.json", podsList(
		`{"kind": "Node", "metadata": {"name": "cp-0", "labels": {"node-role.kubernetes.io/control-plane": ""}}}`,
		`{"kind": "Node", "metadata": {"name": "w-0", "labels": {}}}`))
	declared := writeFile(t, "declared.json", podsList(hostPod("a", "etcd", "cp-0", "2379"), hostPod("a", "exp", "w-0", "9100")))
	violation := writeFile(t, "violation.json", podsList(hostPod("a", "etcd", "w-0", "2379")))
	warnings := writeFile(t, "warnings.json", podsList(hostPod("a", "quiet", "w-0"), hostPod("a", "pending", "", "2379")))
	rendered := writeFile(t, "ds.json", `{"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"namespace": "a", "name": "etcd"},
	  "spec": {"template": {"spec": {"hostNetwork": true, "containers": [{"name": "c", "ports": [{"containerPort": 2379}]}]}}}}`)
	bad := writeFile(t, "bad.json", podsList(hostPod("a", "p", "w-0", `"x"`)))
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // a line of stdout
		stderr string // a part of stderr
	}{
		{"all declared", []string{"--pods", declared, "--nodes", nodes}, 0, "2 pods (2 host-network), 2 host ports: 2 ok, 0 violations", ""},
		{"a violation", []string{"--pods", violation, "--nodes", nodes}, 3, "1 pod (1 host-network), 1 host port: 0 ok, 1 violation (undeclared 1,", ""},
		{"warnings pass", []string{"--pods", warnings, "--nodes", nodes}, 0, "2 warnings (no-ports 1, unscheduled 1,", ""},
		{"warnings fail with --strict", []string{"--pods", warnings, "--nodes", nodes, "--strict"}, 3, "2 warnings", "bindguard: pods: --strict: 2 warnings\n"},
		{"unscheduled judged as a node", []string{"--pods", warnings, "--nodes", nodes, "--node-label", "node-role.kubernetes.io/control-plane="}, 0, "1 ok", ""},
		{"a rendered DaemonSet is unscheduled", []string{"--pods", rendered}, 0, "a          daemonset/etcd  -     c          2379/tcp  unscheduled", ""},
		{"a rendered DaemonSet judged as a worker", []string{"--pods", rendered, "--node-label", "node-role.kubernetes.io/worker="}, 3, "1 violation (undeclared 1,", ""},
		{"a rendered DaemonSet judged as control plane", []string{"--pods", rendered, "--node-label", "node-role.kubernetes.io/control-plane="}, 0, "1 ok, 0 violations", ""},
		{"nodes unknown without --nodes", []string{"--pods", declared}, 0, "2 warnings (no-ports 0, unscheduled 0, unknown-node 2,", ""},
		{"a malformed pods file", []string{"--pods", bad}, 1, "", "bad.json: items[0] (pod a/p): field spec.containers.ports.containerPort: got a JSON string, want int32"},
		{"a missing pods file", []string{"--pods", "/nonexistent.json"}, 1, "", "pods: open /nonexistent.json"},
		{"a directory for a pods file", []string{"--pods", t.TempDir()}, 1, "", "not a regular file: want the output of kubectl get pods -A -o json"},
		{"both from stdin", []string{"--pods", "-", "--nodes", "-"}, 2, "", "--pods and --nodes cannot both read stdin"},
		{"a bad registry", []string{"--pods", declared}, 1, "", "three-mistakes.yaml:8:11: port 70000 is out of range"},
		{"an unreadable kubeconfig", []string{"--kubeconfig", "/nonexistent/kubeconfig"}, 1, "", "bindguard: pods: kubeconfig:"},
		{"no registry", []string{"--pods", declared}, 2, "", "pods: no --registry given"},
		{"--nodes without --pods", []string{"--nodes", nodes}, 2, "", "--nodes needs --pods"},
		{"--pods with --kubeconfig", []string{"--pods", declared, "--kubeconfig", "k"}, 2, "", "--kubeconfig and --context are for the API server"},
		{"bad output", []string{"--pods", declared, "-o", "yaml"}, 2, "", `--output "yaml": want table or json`},
		{"bad label", []string{"--pods", declared, "--node-label", "x"}, 2, "", `--node-label "x": want key=value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"pods"}
			switch tt.name {
			case "a bad registry":
				args = append(args, "--registry", policyTestdata+"three-mistakes.yaml")
			case "no registry":
			default:
				args = append(args, "--registry", reg)
			}
			args = append(args, tt.args...)
			stdout, stderr, code := runCmd(t, args...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout does not contain %q:\n%s", tt.stdout, stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.stderr, stderr)
			}
		})
	}
}

func TestPodsJSON(t *testing.T) {
	stdout, stderr, code := runCmd(t, "pods", "--registry", "builtin:openshift", "-o", "json",
		"--pods", podcheckTestdata+"openshift/pods.json", "--nodes", podcheckTestdata+"openshift/nodes.json")
	if code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, stderr)
	}
	var doc podcheck.Document
	dec := json.NewDecoder(strings.NewReader(stdout))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("not one JSON document: %v\n%s", err, stdout)
	}
	if dec.More() {
		t.Error("more than one JSON document")
	}
	s := doc.Summary
	if s.Pods != 17 || s.Ports != 29 || s.OK != 26 || s.Violations["undeclared"] != 0 || s.Warnings["no-ports"] != 4 {
		t.Errorf("summary %+v", s)
	}
	if len(s.Violations) != 4 || len(s.Warnings) != 4 {
		t.Errorf("summary does not count every verdict: %+v", s)
	}
	f := doc.Findings[len(doc.Findings)-1]
	want := podcheck.FindingJSON{Namespace: "openshift-ovn-kubernetes", Pod: "ovnkube-node-q8z4b", Node: "worker-0", HostNetwork: true,
		Container: "ovnkube-controller", ContainerKind: "container", Port: 29105, Protocol: "tcp", Verdict: "ok",
		Rule: "builtin:openshift/30-localhost.yaml:24", Process: "ovn-kubernetes"}
	if f != want {
		t.Errorf("last finding %+v, want %+v", f, want)
	}
}
