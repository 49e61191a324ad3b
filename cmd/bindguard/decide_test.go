package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/cgroups"
)

const decideRegistry = `apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - port: 2379
    process: etcd
    owners:
      - cgroup: /bindguard-decide-test/etcd.service
      - uid: 1000
  - port: "9000-9009"
    protocol: [tcp, udp]
    process: ranged
  - port: 9100
    process: local
    bind: localhost
  - port: 9200
    process: audited
    mode: audit
    owners: [{uid: 1}]
  - port: 9300
    process: worker-only
    nodeSelector: {role: worker}
removed:
  - {port: 10256, process: sdn, removed: "4.17"}
---
apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - port: 2380
    process: etcd-peer
    owners: [{pod: {namespace: kube-system, labels: {component: etcd}, container: etcd}}]
  - {port: 9400, process: anyone}
  - {port: 10250, process: kubelet, owners: [{unit: kubelet.service}]}
`

// exitCode runs bindguard in-process and returns stdout, stderr and the exit code.
func decideRun(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(args, &out, &errb)
	if err == nil {
		return out.String(), errb.String(), 0
	}
	errb.WriteString(err.Error())
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.code
	}
	return out.String(), errb.String(), 1
}

func writeDecideRegistry(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "reg.yaml")
	if err := os.WriteFile(p, []byte(decideRegistry), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDecideJSON(t *testing.T) {
	reg := writeDecideRegistry(t)
	tests := []struct {
		name string
		args []string
		want map[string]any // fields checked; a nil value means absent
	}{
		{"declared", []string{"--port", "9005", "--protocol", "udp"},
			map[string]any{"verdict": "allow", "reason": "", "rule": reg + ":9", "process": "ranged", "family": 4.0, "mode": "enforce"}},
		{"undeclared", []string{"--port", "9010"},
			map[string]any{"verdict": "deny", "reason": "undeclared", "rule": nil, "process": nil}},
		{"undeclared audit", []string{"--port", "9010", "--mode", "audit"},
			map[string]any{"verdict": "audit", "reason": "undeclared", "mode": "audit"}},
		{"port 0", []string{"--port", "0"},
			map[string]any{"verdict": "allow", "reason": "", "rule": nil}},
		{"removed", []string{"--port", "10256", "--address", "127.0.0.1"},
			map[string]any{"verdict": "deny", "reason": "removed", "rule": reg + ":23", "process": "sdn"}},
		{"owner mismatch", []string{"--port", "2379", "--cgroup", "/bindguard-decide-test/other", "--assume-owners-exist"},
			map[string]any{"verdict": "deny", "reason": "owner", "rule": reg + ":4", "cgroup": "/bindguard-decide-test/other"}},
		{"owner cgroup", []string{"--port", "2379", "--cgroup", "/bindguard-decide-test/etcd.service/x", "--assume-owners-exist"},
			map[string]any{"verdict": "allow", "reason": ""}},
		{"owner uid", []string{"--port", "2379", "--uid", "1000"},
			map[string]any{"verdict": "allow", "uid": 1000.0}},
		{"audit-only rule", []string{"--port", "9200"},
			map[string]any{"verdict": "audit", "reason": "owner", "process": "audited"}},
		{"localhost on wildcard", []string{"--port", "9100", "--address", "::"},
			map[string]any{"verdict": "deny", "reason": "address", "family": 6.0, "address": "::"}},
		{"localhost on mapped loopback", []string{"--port", "9100", "--address", "::ffff:127.0.0.9"},
			map[string]any{"verdict": "allow", "family": 6.0, "address": "::ffff:127.0.0.9"}},
		{"localhost on mapped wildcard", []string{"--port", "9100", "--address", "::ffff:0.0.0.0"},
			map[string]any{"verdict": "deny", "reason": "address", "family": 6.0}},
		{"other netns", []string{"--port", "9010", "--other-netns"},
			map[string]any{"verdict": "allow", "hostNetns": false}},
		{"other netns, all-netns node", []string{"--port", "9010", "--other-netns", "--all-netns"},
			map[string]any{"verdict": "deny", "reason": "undeclared", "hostNetns": false}},
		{"selector excludes", []string{"--port", "9300"},
			map[string]any{"verdict": "deny", "reason": "undeclared"}},
		{"selector matches", []string{"--port", "9300", "--node-label", "role=worker"},
			map[string]any{"verdict": "allow", "process": "worker-only"}},
		{"pod owner", []string{"--port", "2380", "--pod-namespace", "kube-system", "--pod-label", "component=etcd", "--pod-container", "etcd", "--pod-name", "etcd-cp1"},
			map[string]any{"verdict": "allow", "pod": map[string]any{"namespace": "kube-system", "name": "etcd-cp1", "container": "etcd", "pending": false}}},
		{"pod owner, other container", []string{"--port", "2380", "--pod-namespace", "kube-system", "--pod-label", "component=etcd", "--pod-container", "sidecar"},
			map[string]any{"verdict": "deny", "reason": "owner"}},
		{"pod owner, host process", []string{"--port", "2380"},
			map[string]any{"verdict": "deny", "reason": "owner", "pod": nil}},
		{"pending pod", []string{"--port", "2380", "--pod-pending"},
			map[string]any{"verdict": "audit", "reason": "pod-pending", "mode": "enforce"}},
		{"pod ports ignored", []string{"--port", "9400", "--pod-namespace", "a"},
			map[string]any{"verdict": "allow", "podPorts": "ignore"}},
		{"pod ports required", []string{"--port", "9400", "--pod-namespace", "a", "--pod-port", "9401/tcp", "--pod-ports", "require"},
			map[string]any{"verdict": "deny", "reason": "pod-undeclared", "podPorts": "require"}},
		{"pod ports required, declared", []string{"--port", "9400", "--protocol", "udp", "--pod-namespace", "a", "--pod-port", "9400/UDP", "--pod-ports", "require"},
			map[string]any{"verdict": "deny", "reason": "undeclared"}},
		{"pod ports required, declared tcp", []string{"--port", "9400", "--pod-namespace", "a", "--pod-port", "9400/tcp", "--pod-ports", "require"},
			map[string]any{"verdict": "allow"}},
		{"pod ports not known", []string{"--port", "9400", "--pod-namespace", "a", "--pod-ports-unknown", "--pod-ports", "require"},
			map[string]any{"verdict": "audit", "reason": "pod-pending"}},
		{"unit owner", []string{"--port", "10250", "--cgroup", "/system.slice/kubelet.service", "--assume-owners-exist"},
			map[string]any{"verdict": "allow"}},
		{"unit look-alike in a user's subtree", []string{"--port", "10250", "--cgroup", "/user.slice/user-1000.slice/user@1000.service/app.slice/kubelet.service", "--assume-owners-exist"},
			map[string]any{"verdict": "deny", "reason": "owner"}},
		{"unit below the unit root", []string{"--port", "10250", "--cgroup", "/t/system.slice/kubelet.service/x", "--unit-root", "/t", "--assume-owners-exist"},
			map[string]any{"verdict": "allow"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"decide", "--registry", reg, "-o", "json"}, tt.args...)
			out, errOut, code := decideRun(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(out), &got); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			for k, v := range tt.want {
				g, ok := got[k]
				if v == nil {
					if ok {
						t.Errorf("%s = %v, want it absent", k, g)
					}
					continue
				}
				if !ok || !reflect.DeepEqual(g, v) {
					t.Errorf("%s = %v, want %v (%s)", k, g, v, out)
				}
			}
		})
	}
}

func TestDecideText(t *testing.T) {
	reg := writeDecideRegistry(t)
	out, _, code := decideRun(t, "decide", "--registry", reg, "--port", "9100", "--address", "0.0.0.0", "--cgroup", "/a", "--uid", "7")
	want := "tcp 0.0.0.0:9100 from cgroup /a uid 7 (host netns): deny (address), rule " + reg + ":12 process local\n"
	if code != 0 || out != want {
		t.Errorf("exit %d, output:\n%s\nwant:\n%s", code, out, want)
	}
	out, _, _ = decideRun(t, "decide", "--registry", reg, "--port", "1", "--protocol", "UDP", "--address", "::1", "--other-netns")
	if want := "udp [::1]:1 from cgroup / uid 0 (other netns): allow\n"; out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	out, _, _ = decideRun(t, "decide", "--registry", reg, "--port", "2380", "--pod-namespace", "kube-system", "--pod-name", "etcd-0", "--pod-container", "etcd")
	if want := "tcp 0.0.0.0:2380 from cgroup / uid 0 pod kube-system/etcd-0 container etcd (host netns): deny (owner), rule " + reg + ":28 process etcd-peer\n"; out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	out, _, _ = decideRun(t, "decide", "--registry", reg, "--port", "2380", "--pod-pending")
	if want := "tcp 0.0.0.0:2380 from cgroup / uid 0 pod (pending) (host netns): audit (pod-pending), rule " + reg + ":28 process etcd-peer\n"; out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
}

// TestDecideResolvesOwners checks that owners are resolved in this host's
// cgroup tree unless --assume-owners-exist: a missing owner cgroup never matches.
func TestDecideResolvesOwners(t *testing.T) {
	if _, err := cgroups.Mount2(); err != nil {
		t.Skip(err)
	}
	reg := writeDecideRegistry(t)
	args := []string{"decide", "--registry", reg, "-o", "json", "--port", "2379", "--cgroup", "/bindguard-decide-test/etcd.service"}
	for _, tt := range []struct {
		extra   []string
		verdict string
	}{{nil, "deny"}, {[]string{"--assume-owners-exist"}, "allow"}} {
		out, errOut, code := decideRun(t, append(args, tt.extra...)...)
		var got decisionJSON
		if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 {
			t.Fatalf("exit %d, %v: %s %s", code, err, out, errOut)
		}
		if got.Verdict != tt.verdict {
			t.Errorf("%v: verdict %s, want %s", tt.extra, got.Verdict, tt.verdict)
		}
	}
}

func TestDecideErrors(t *testing.T) {
	reg := writeDecideRegistry(t)
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("apiVersion: bindguard.io/v1\nkind: PortRegistry\nentries:\n  - {port: 70000, process: x}\n"), 0o644)
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"no registry", []string{"--port", "1"}, 2, "no --registry"},
		{"no port", []string{"--registry", reg}, 2, "no --port"},
		{"port out of range", []string{"--registry", reg, "--port", "65536"}, 2, "port"},
		{"bad protocol", []string{"--registry", reg, "--port", "1", "--protocol", "sctp"}, 2, "want tcp or udp"},
		{"bad address", []string{"--registry", reg, "--port", "1", "--address", "localhost"}, 2, "--address"},
		{"bad mode", []string{"--registry", reg, "--port", "1", "--mode", "strict"}, 2, "audit or enforce"},
		{"relative cgroup", []string{"--registry", reg, "--port", "1", "--cgroup", "a/b"}, 2, "--cgroup"},
		{"bad output", []string{"--registry", reg, "--port", "1", "-o", "yaml"}, 2, "want text or json"},
		{"bad label", []string{"--registry", reg, "--port", "1", "--node-label", "x"}, 2, "key=value"},
		{"positional", []string{"--registry", reg, "--port", "1", reg}, 2, "unexpected arguments"},
		{"missing file", []string{"--registry", reg + ".nope", "--port", "1"}, 1, "no such file"},
		{"registry errors", []string{"--registry", bad, "--port", "1"}, 1, bad + ":4:12: port 70000 is out of range"},
		{"bad pod ports", []string{"--registry", reg, "--port", "1", "--pod-ports", "strict"}, 2, "want ignore or require"},
		{"pending with identity", []string{"--registry", reg, "--port", "1", "--pod-pending", "--pod-namespace", "a"}, 2, "give no other --pod-* flag"},
		{"pod flags without namespace", []string{"--registry", reg, "--port", "1", "--pod-container", "a"}, 2, "need --pod-namespace"},
		{"bad pod port", []string{"--registry", reg, "--port", "1", "--pod-namespace", "a", "--pod-port", "80"}, 2, "want PORT/PROTOCOL"},
		{"bad pod label", []string{"--registry", reg, "--port", "1", "--pod-namespace", "a", "--pod-label", "x"}, 2, "--pod-label \"x\": want key=value"},
		{"relative unit root", []string{"--registry", reg, "--port", "1", "--unit-root", "t"}, 2, "--unit-root"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := decideRun(t, append([]string{"decide"}, tt.args...)...)
			if code != tt.code || !strings.Contains(errOut, tt.stderr) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, errOut, tt.code, tt.stderr)
			}
			if out != "" {
				t.Errorf("stdout: %q", out)
			}
		})
	}
}
