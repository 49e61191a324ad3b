package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"text/tabwriter"

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
