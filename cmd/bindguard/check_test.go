package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy"
)

const policyTestdata = "../../policy/testdata/"

// runCmd runs bindguard in-process and returns stdout, stderr and the exit code.
func runCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	code := 0
	if err != nil {
		code = 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if msg := err.Error(); msg != "" {
			errb.WriteString("bindguard: " + msg + "\n")
		}
	}
	return out.String(), errb.String(), code
}

func TestCheckReportsEveryError(t *testing.T) {
	var out, errb bytes.Buffer
	err := run([]string{"check", policyTestdata + "three-mistakes.yaml"}, &out, &errb)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || ee.msg != "" {
		t.Fatalf("run: %#v, want exit code 1 without a message", err)
	}
	f := policyTestdata + "three-mistakes.yaml"
	want := f + ":8:11: port 70000 is out of range: want 1-65535\n" +
		f + ":11:15: protocol \"sctp\" is not supported: bindguard checks TCP and UDP binds (MPTCP counts as TCP); SCTP sockets are not judged\n" +
		f + ":13:5: port 2379/tcp claimed by \"not-etcd\" conflicts with \"etcd\" at " + f + ":6:5\n"
	if errb.String() != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", errb.String(), want)
	}
	if out.Len() != 0 {
		t.Errorf("stdout: %q", out.String())
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		stdout string
		stderr string
		code   int
	}{
		{
			name:   "all nodes",
			args:   []string{policyTestdata + "valid.yaml"},
			stdout: "ok: 1 files, 4 entries, 1 removed; all nodes: 44 ports covered (tcp 23, udp 21)\n",
		},
		{
			name:   "one node",
			args:   []string{"--node-label", "role=worker", "--node-label=zone=a", policyTestdata + "valid.yaml", policyTestdata + "dir"},
			stdout: "ok: 5 files, 8 entries, 1 removed; node [role=worker,zone=a]: 47 ports covered (tcp 26, udp 21)\n",
		},
		{name: "no paths", args: nil, stderr: "usage: bindguard check [flags] PATH...", code: 2},
		{name: "no paths message", args: nil, stderr: "no registry given", code: 2},
		{name: "bad label", args: []string{"--node-label", "role", policyTestdata + "valid.yaml"}, stderr: `--node-label "role": want key=value`, code: 2},
		{name: "bad flag", args: []string{"--nope", policyTestdata + "valid.yaml"}, stderr: "unknown flag: --nope", code: 2},
		{name: "missing file", args: []string{policyTestdata + "missing.yaml"}, stderr: "no such file or directory", code: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, append([]string{"check"}, tt.args...)...)
			if code != tt.code || stdout != tt.stdout || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("check %q:\nexit %d, stdout %q, stderr %q\nwant exit %d, stdout %q, stderr containing %q",
					tt.args, code, stdout, stderr, tt.code, tt.stdout, tt.stderr)
			}
		})
	}
}

// TestCheckWarnsOfWidening: a stricter entry merged with a wider one of the
// same process is valid (the merge is a union) but does not hold: check
// says so, and still passes.
func TestCheckWarnsOfWidening(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.yaml")
	body := "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: t}\nentries:\n" +
		"  - {port: 9100, process: node-exporter, bind: localhost}\n" +
		"  - {port: \"9000-9999\", process: node-exporter}\n"
	if err := os.WriteFile(reg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runCmd(t, "check", reg)
	want := reg + ":5:5: warning: node-exporter 9100/tcp is merged with the entry at " + reg + ":6:5 of the same process, which has no bind: localhost: 9100 is bound on any address"
	if code != 0 || !strings.HasPrefix(stdout, "ok: ") || !strings.Contains(stderr, want) {
		t.Errorf("check: exit %d, stdout %q, stderr %q; want ok and %q", code, stdout, stderr, want)
	}
}

func TestCompileTable(t *testing.T) {
	stdout, stderr, code := runCmd(t, "compile", "--node-label", "role=control-plane", policyTestdata+"valid.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	f := policyTestdata + "valid.yaml"
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	want := [][]string{
		{"PORT", "PROTO", "BIND", "MODE", "OWNERS", "RULE", "PROCESS"},
		{"2379", "tcp", "any", "enforce", "cgroup:/system.slice/etcd.service,unit:etcd.service,uid:0", f + ":8", "etcd"},
		{"9200-9219", "tcp", "localhost", "audit", "any", f + ":22", "node-exporter"},
		{"10250", "tcp", "any", "enforce", "any", f + ":20", "kubelet"},
		{"10256", "tcp", "-", "enforce", "none", "(removed)", f + ":32", "openshift-sdn"},
		{"9200-9219", "udp", "localhost", "audit", "any", f + ":22", "node-exporter"},
	}
	if len(lines) != len(want)+1 {
		t.Fatalf("got %d lines:\n%s", len(lines), stdout)
	}
	for i, w := range want {
		if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("line %d: %q, want %q", i, got, w)
		}
	}
	if !strings.HasPrefix(lines[len(want)], "43 rules (1 removed ports), digest ") {
		t.Errorf("summary %q", lines[len(want)])
	}
}

func TestCompileJSON(t *testing.T) {
	stdout, stderr, code := runCmd(t, "compile", "-o", "json", policyTestdata+"valid.json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got policy.CompiledJSON
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Rules) != 1+1+11*2 || got.NodeLabels == nil || len(got.Digest) != 64 {
		t.Fatalf("got %d rules, labels %v, digest %q", len(got.Rules), got.NodeLabels, got.Digest)
	}
	first := got.Rules[0]
	want := policy.RuleJSON{
		Port: 22, Protocol: "tcp", Bind: "any", Mode: "enforce",
		Owners: policy.OwnersJSON{Cgroups: []string{}, Units: []string{"sshd.service"}, UIDs: []uint32{}, Pods: []policy.PodOwnerJSON{}},
		Rule:   policyTestdata + "valid.json:6", Process: "sshd",
	}
	if b, w := compactJSON(t, first), compactJSON(t, want); b != w {
		t.Errorf("first rule %s, want %s", b, w)
	}
	if !strings.Contains(stdout, `"cgroups": []`) || strings.Contains(stdout, "null") {
		t.Errorf("lists must be [] never null:\n%s", stdout)
	}
	if r := got.Rules[1]; r.Port != 9101 || !r.Removed {
		t.Errorf("second rule %+v, want removed 9101", r)
	}
}

func TestCompileErrors(t *testing.T) {
	_, stderr, code := runCmd(t, "compile", "-o", "yaml", policyTestdata+"valid.yaml")
	if code != 2 || !strings.Contains(stderr, `--output "yaml": want table or json`) {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = runCmd(t, "compile", policyTestdata+"three-mistakes.yaml")
	if code != 1 || strings.Count(stderr, "three-mistakes.yaml:") != 4 { // 3 lines, one naming two places
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func compactJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestCompilePodOwners(t *testing.T) {
	f := policyTestdata + "pods.yaml"
	stdout, stderr, code := runCmd(t, "compile", "--node-label", "node-role.kubernetes.io/control-plane=", f)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{
		"2379   tcp    any   enforce  pod:kube-system[component=etcd,tier=control-plane],pod:openshift-etcd[app=etcd]/etcd  " + f + ":7",
		"9100   tcp    any   enforce  uid:65534,pod:monitoring[app.kubernetes.io/name=node-exporter]",
		"10250  tcp    any   enforce  unit:kubelet.service",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	stdout, stderr, code = runCmd(t, "compile", "-o", "json", "--node-label", "node-role.kubernetes.io/control-plane=", f)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var got policy.CompiledJSON
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	want := []policy.PodOwnerJSON{
		{Namespace: "kube-system", Labels: map[string]string{"component": "etcd", "tier": "control-plane"}},
		{Namespace: "openshift-etcd", Labels: map[string]string{"app": "etcd"}, Container: "etcd"},
	}
	if len(got.Rules) != 3 || !reflect.DeepEqual(got.Rules[0].Owners.Pods, want) {
		t.Errorf("rules %+v, want 2379 owned by %+v", got.Rules, want)
	}
	if p := got.Rules[2].Owners.Pods; p == nil || len(p) != 0 {
		t.Errorf("pods of a rule without pod owners = %#v, want []", p)
	}
}

// nodesJSON is a kubectl nodes list of the named nodes, each with labels.
func nodesJSON(t *testing.T, nodes map[string]map[string]string) string {
	t.Helper()
	var items []map[string]any
	for _, name := range slices.Sorted(maps.Keys(nodes)) {
		items = append(items, map[string]any{"apiVersion": "v1", "kind": "Node",
			"metadata": map[string]any{"name": name, "labels": nodes[name]}, "status": map[string]any{}})
	}
	data, err := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items, "metadata": map[string]any{"resourceVersion": ""}})
	if err != nil {
		t.Fatal(err)
	}
	return writeTemp(t, "nodes.json", string(data))
}

func writeTemp(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckNodes(t *testing.T) {
	reg := policyTestdata + "pods.yaml"
	cp := map[string]string{"kubernetes.io/hostname": "cp-1", "node-role.kubernetes.io/control-plane": ""}
	worker := map[string]string{"kubernetes.io/hostname": "w-1", "node-role.kubernetes.io/worker": ""}
	both := map[string]string{"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": ""}
	conflict := writeTemp(t, "conflict.yaml", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nentries:\n"+
		"  - {port: 1, process: a, nodeSelector: {node-role.kubernetes.io/control-plane: \"\"}}\n"+
		"  - {port: 1, process: b, nodeSelector: {node-role.kubernetes.io/worker: \"\"}}\n")
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string
		stderr   []string
		noStderr bool
	}{
		{name: "every entry selects a node", args: []string{"--nodes", nodesJSON(t, map[string]map[string]string{"cp-1": cp, "w-1": worker}), reg},
			stdout:   []string{"node cp-1: ok: 3 entries, 0 removed; 3 ports covered (tcp 3, udp 0)\n", "node w-1: ok: 2 entries, 0 removed; 2 ports covered (tcp 2, udp 0)\n", "ok: 1 files, 4 entries, 0 removed; 2 nodes\n"},
			noStderr: true},
		{name: "an entry selects no node", args: []string{"--nodes", nodesJSON(t, map[string]map[string]string{"cp-1": cp}), reg},
			stdout: []string{"node cp-1: ok"},
			stderr: []string{reg + `:26:5: warning: entry "kubelet" (port 10250/tcp) selects none of the 1 nodes in `, "nodeSelector node-role.kubernetes.io/worker=\n"}},
		{name: "strict", args: []string{"--strict", "--nodes", nodesJSON(t, map[string]map[string]string{"cp-1": cp}), reg},
			code: 1, stderr: []string{"warning: entry \"kubelet\"", "check: 1 entries select no node (--strict)"}},
		{name: "a conflict on one node", args: []string{"--nodes", nodesJSON(t, map[string]map[string]string{"cp-1": cp, "odd": both, "w-1": worker}), conflict},
			code: 1, stdout: []string{"node cp-1: ok", "node odd: 1 errors\n", "node w-1: ok"},
			stderr: []string{conflict + `:5:5: port 1/tcp claimed by "b" conflicts with "a" at ` + conflict + ":4:5 (node odd)\n", "errors on 1 of 3 nodes"}},
		{name: "an error on every node", args: []string{"--nodes", nodesJSON(t, map[string]map[string]string{"a": cp, "b": cp}), policyTestdata + "three-mistakes.yaml"},
			code: 1, stderr: []string{"(every node)\n"}},
		{name: "with node labels", args: []string{"--nodes", "x.json", "--node-label", "a=b", reg}, code: 2, stderr: []string{"exclude each other"}},
		{name: "strict alone", args: []string{"--strict", reg}, code: 2, stderr: []string{"--strict needs --nodes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, append([]string{"check"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, w := range tt.stdout {
				if !strings.Contains(stdout, w) {
					t.Errorf("stdout lacks %q:\n%s", w, stdout)
				}
			}
			for _, w := range tt.stderr {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			if tt.noStderr && stderr != "" {
				t.Errorf("stderr: %s", stderr)
			}
		})
	}
}

func TestCheckNodesBadFile(t *testing.T) {
	reg := policyTestdata + "pods.yaml"
	tests := []struct {
		name, data, want string
	}{
		{"label not a string", `{"apiVersion": "v1", "kind": "List", "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "w-2", "labels": {"x": 1}}}]}`,
			`items[1] (node w-2): field metadata.labels: got a JSON number, want string`},
		{"no name", `{"apiVersion": "v1", "kind": "NodeList", "items": [{"metadata": {"labels": {"x": "y"}}}]}`, `items[0]: field metadata.name: empty`},
		{"a pod", `{"apiVersion": "v1", "kind": "List", "items": [{"kind": "Pod", "metadata": {"name": "p"}}]}`, `items[0] (node p): kind "Pod": want Node`},
		{"duplicate", `{"kind": "List", "items": [{"metadata": {"name": "a"}}, {"metadata": {"name": "a"}}]}`, `items[1] (node a): node a is also items[0]`},
		{"syntax", `{"kind": "List", "items": [}`, `nodes.json:1:28: invalid JSON: invalid character '}'`},
		{"kind", `{"kind": "PodList", "items": []}`, `kind "PodList": want List, NodeList or Node`},
		{"empty", `{"kind": "List", "items": []}`, `lists no nodes: nothing to check`},
		{"items not a list", `{"kind": "List", "items": {}}`, `field items: got a JSON object`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeTemp(t, "nodes.json", tt.data)
			_, stderr, code := runCmd(t, "check", "--nodes", f, reg)
			if code != 1 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and %q", code, stderr, tt.want)
			}
		})
	}
	t.Run("single node", func(t *testing.T) {
		f := writeTemp(t, "node.json", `{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp", "labels": {"node-role.kubernetes.io/control-plane": ""}}}`)
		if stdout, stderr, code := runCmd(t, "check", "--nodes", f, reg); code != 0 || !strings.Contains(stdout, "node cp: ok: 3 entries") {
			t.Errorf("exit %d: %s %s", code, stdout, stderr)
		}
	})
	t.Run("not a regular file", func(t *testing.T) {
		_, stderr, code := runCmd(t, "check", "--nodes", t.TempDir(), reg)
		if code != 1 || !strings.Contains(stderr, "not a regular file") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

// TestCheckBuiltinsOnTheirNodes runs check --nodes for each builtin registry
// on a kubectl nodes list shaped like its platform's nodes
// (policy/builtin/testdata/nodes-<name>.json): no node may have an error, and
// the entries that select no node are exactly those the platform's nodes
// cannot hold at once.
func TestCheckBuiltinsOnTheirNodes(t *testing.T) {
	unselected := map[string][]string{
		// One cluster has one network type: 4.17 and later are OVNKubernetes.
		"openshift": {`removed entry "openshift-sdn" (port 10256/tcp)`},
		// The bootstrap host has no Node object (its daemon takes
		// --node-label bindguard.io/role=bootstrap), and a cluster runs one
		// CNI: this one Calico, the document's default.
		"kubean": append(append(
			[]string{`"docker-registry" (port 443/tcp)`, `"chartmuseum" (port 8081/tcp)`, `"minio" (port 9000/tcp)`, `"minio" (port 9001/tcp)`},
			`"cilium-agent" (port 4240/tcp)`, `"cilium-agent" (port 4244/tcp)`, `"hubble-relay" (port 4245/tcp)`, `"cilium-agent" (port 8472/udp)`,
			`"cilium-agent" (port 9962/tcp)`, `"cilium-operator" (port 9963/tcp)`, `"cilium-envoy" (port 9964/tcp)`, `"cilium-agent" (port 51871/udp)`),
			`"spiderpool-agent" (port 5710/tcp)`, `"spiderpool-agent" (port 5711/tcp)`, `"spiderpool-agent" (port 5712/tcp)`, `"spiderpool-controller" (port 5720/tcp)`,
			`"spiderpool-controller" (port 5721/tcp)`, `"spiderpool-controller" (port 5722/tcp)`, `"spiderpool-cli" (port 5723/tcp)`, `"spiderpool-controller" (port 5724/tcp)`),
		"acos":     nil,
		"avi":      nil,
		"ack-edge": nil,
	}
	for name, want := range unselected {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, "check", "--nodes", "../../policy/builtin/testdata/nodes-"+name+".json", "builtin:"+name)
			if code != 0 {
				t.Fatalf("exit %d:\n%s\n%s", code, stdout, stderr)
			}
			if !strings.Contains(stdout, "\nok: ") || strings.Contains(stdout, " errors\n") {
				t.Errorf("stdout:\n%s", stdout)
			}
			var warnings []string
			for _, line := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if line != "" {
					warnings = append(warnings, line)
				}
			}
			if len(warnings) != len(want) {
				t.Fatalf("%d warnings, want %d:\n%s", len(warnings), len(want), stderr)
			}
			for i, w := range want {
				if !strings.Contains(warnings[i], ": warning: ") || !strings.Contains(warnings[i], w) {
					t.Errorf("warning %d: %q, want it to name %s", i, warnings[i], w)
				}
			}
		})
	}
}
