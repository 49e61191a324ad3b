package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/bindguard/bindguard/daemon"
)

func TestNodeStateStatus(t *testing.T) {
	dir := t.TempDir()
	if s, err := readNodeState(filepath.Join(dir, "none.json")); s != nil || err != nil {
		t.Fatalf("missing state file: %v %v, want nothing and no error", s, err)
	}
	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readNodeState(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("corrupt state file: %v, want an error naming it", err)
	}
	for _, tc := range []struct {
		name  string
		state daemon.NodeState
		want  []string
	}{
		{"known and reachable", daemon.NodeState{
			NodeName: "n1", NodeKnown: true, APIReachable: true, ResourceVersion: "42", Mode: "enforce", ModeSource: "node-label",
			Labels: map[string]daemon.LabelState{"b": {Value: "2", Source: "flag"}, "a": {Value: "", Source: "node-label"}},
		}, []string{"n1 (resourceVersion 42); API server reachable; labels read", "enforce (node-label)", "2 in force", `(?m)^\s+a=\s+node-label$`, `(?m)^\s+b=2\s+flag$`}},
		{"unknown, unreachable", daemon.NodeState{NodeName: "n1", Mode: "audit", ModeSource: "flag"},
			[]string{"UNREACHABLE (the policy in force stays)", "NOT yet read", "audit (flag)", "0 in force"}},
		{"pods, no node: runtime connected, entries listed", daemon.NodeState{Mode: "audit", ModeSource: "flag",
			Runtime: &daemon.RuntimeState{Connected: true, Socket: "/run/containerd/containerd.sock", RuntimeName: "containerd",
				RuntimeVersion: "1.7.24", PodsKnown: 3, PodCgroupsPending: 1, Since: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
			Entries: &daemon.EntriesState{
				Selected:    []daemon.EntryRef{{Pos: "r.yaml:4:5", Process: "etcd", Ports: "2379", Selector: "role=cp"}},
				NotSelected: []daemon.EntryRef{{Pos: "r.yaml:9:5", Process: "sdn", Ports: "10256", Selector: "role=sdn", Removed: true}, {Pos: "r.yaml:7:5", Process: "x", Ports: "1-2", Selector: "zone in (a,b)"}},
			}},
			[]string{`(?m)^runtime\s+connected to containerd 1.7.24 \(/run/containerd/containerd.sock\) since 2026-12-01T00:00:00Z; 3 pods known, 1 pod cgroups pending$`,
				`(?m)^entries\s+1 selected on this node, 2 not selected$`,
				`(?m)^\s+selected\s+r.yaml:4:5 etcd port 2379 nodeSelector role=cp$`,
				`(?m)^\s+not selected\s+r.yaml:9:5 sdn port 10256 \(removed\) nodeSelector role=sdn$`,
				`(?m)^\s+not selected\s+r.yaml:7:5 x port 1-2 nodeSelector zone in \(a,b\)$`}},
		{"runtime away", daemon.NodeState{Mode: "audit", ModeSource: "flag",
			Runtime: &daemon.RuntimeState{LastError: "dial unix /run/containerd/containerd.sock: connect: no such file or directory\nmore"}},
			[]string{`(?m)^runtime\s+NOT CONNECTED \(pod identities known are kept; new pods stay pending\): dial unix /run/containerd/containerd.sock: connect: no such file or directory … \(no socket found\); 0 pods known, 0 pod cgroups pending$`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
			printNodeState(tw, &tc.state, true)
			tw.Flush()
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) && !regexp.MustCompile(w).MatchString(b.String()) {
					t.Errorf("no %q in\n%s", w, b.String())
				}
			}
			if i, j := strings.Index(b.String(), "  a="), strings.Index(b.String(), "  b="); i < 0 || j < i {
				if len(tc.state.Labels) > 0 {
					t.Errorf("labels not sorted:\n%s", b.String())
				}
			}
		})
	}
}

// TestEntriesCountsOnly checks that without --entries the table has the
// counts and not the lists.
func TestEntriesCountsOnly(t *testing.T) {
	var b bytes.Buffer
	printEntries(&b, &daemon.EntriesState{Selected: []daemon.EntryRef{{Pos: "r:1:1", Process: "a", Ports: "1"}}, NotSelected: []daemon.EntryRef{}}, false)
	if got, want := b.String(), "entries\t1 selected on this node, 0 not selected\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
