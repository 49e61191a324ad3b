package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/bindguard/bindguard/policy"
)

const selectionRegistry = `apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - {port: 2379, process: etcd, nodeSelector: {node-role.kubernetes.io/control-plane: ""}}
  - {port: 9100, process: node-exporter}
  - {port: 10250-10255, process: kubelet, nodeSelector: {matchExpressions: [{key: zone, operator: In, values: [a, b]}]}}
removed:
  - {port: 10256, process: openshift-sdn, removed: "4.17", nodeSelector: {role: sdn}}
`

// TestCompileSelection checks that the one compile says which entries the
// node's labels select and which they do not, with where each is.
func TestCompileSelection(t *testing.T) {
	reg := filepath.Join(t.TempDir(), "r.yaml")
	if err := os.WriteFile(reg, []byte(selectionRegistry), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := func(line int, process, ports, sel string, removed bool) EntryRef {
		return EntryRef{Pos: reg + ":" + string(rune('0'+line)) + ":5", Process: process, Ports: ports, Selector: sel, Removed: removed}
	}
	etcd := ref(4, "etcd", "2379", "node-role.kubernetes.io/control-plane=", false)
	exporter := ref(5, "node-exporter", "9100", "", false)
	kubelet := ref(6, "kubelet", "10250-10255", "zone in (a,b)", false)
	sdn := ref(8, "openshift-sdn", "10256", "role=sdn", true)
	for _, tc := range []struct {
		name          string
		labels        map[string]string
		selected, not []EntryRef
	}{
		{"no labels", nil, []EntryRef{exporter}, []EntryRef{etcd, kubelet, sdn}},
		{"control plane in zone a", map[string]string{"node-role.kubernetes.io/control-plane": "", "zone": "a"},
			[]EntryRef{etcd, exporter, kubelet}, []EntryRef{sdn}},
		{"sdn worker in zone c", map[string]string{"role": "sdn", "zone": "c"}, []EntryRef{exporter, sdn}, []EntryRef{etcd, kubelet}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &Daemon{cfg: Config{Registry: []string{reg}, NodeLabels: tc.labels}}
			c, sel, err := d.compile()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(sel.Selected, tc.selected) || !slices.Equal(sel.NotSelected, tc.not) {
				t.Errorf("selected %+v\nnot %+v\nwant %+v\nand %+v", sel.Selected, sel.NotSelected, tc.selected, tc.not)
			}
			if len(c.Origins) != len(sel.Selected) {
				t.Errorf("compiled %d origins, selected %d entries", len(c.Origins), len(sel.Selected))
			}
		})
	}
	d := &Daemon{cfg: Config{Registry: []string{filepath.Join(t.TempDir(), "missing.yaml")}}}
	if _, sel, err := d.compile(); err == nil || sel != nil {
		t.Errorf("missing registry: %v %v, want an error and no selection", sel, err)
	}
}

// TestPublishNode checks when the state file is written (with a node name
// or pods tracked, and a path) and that it round-trips through
// ReadNodeState with the entries.
func TestPublishNode(t *testing.T) {
	for _, tc := range []struct {
		name, node, file string
		want             bool
	}{
		{"node name", "n1", "node.json", true},
		{"neither node nor pods", "", "node.json", false},
		{"no path", "n1", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := ""
			if tc.file != "" {
				path = filepath.Join(dir, "sub", tc.file)
			}
			log, hook := logtest.NewNullLogger()
			d := &Daemon{log: log, cfg: Config{Mode: policy.ModeEnforce, NodeLabels: map[string]string{"a": "1"},
				Node: NodeConfig{Name: tc.node, StateFile: path}}}
			d.node = &nodeState{flagLabels: map[string]string{"a": "1"}, modeSource: SourceFlag}
			d.node.m = newNodeMetrics(prometheus.NewRegistry(), true)
			d.node.entries = &EntriesState{Selected: []EntryRef{{Pos: "r:4:5", Process: "etcd", Ports: "2379"}}, NotSelected: []EntryRef{}}
			d.publishNode()
			if len(hook.AllEntries()) != 0 {
				t.Errorf("logged %v", hook.LastEntry())
			}
			s, err := ReadNodeState(path)
			if !tc.want {
				if err == nil {
					t.Fatalf("state file written: %+v", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.NodeName != tc.node || s.Mode != "enforce" || s.Runtime != nil || s.Entries == nil ||
				!slices.Equal(s.Entries.Selected, d.node.entries.Selected) || s.Labels["a"].Source != SourceFlag {
				t.Errorf("read back %+v", s)
			}
			ents, _ := os.ReadDir(filepath.Dir(path))
			if len(ents) != 1 {
				t.Errorf("left behind: %v", ents)
			}
		})
	}
}

// TestPublishNodeFailure checks that a state file that cannot be written is
// logged once, not at every refresh, and again when it works.
func TestPublishNodeFailure(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	log, hook := logtest.NewNullLogger()
	d := &Daemon{log: log, cfg: Config{Node: NodeConfig{Name: "n1", StateFile: filepath.Join(blocker, "node.json")}}}
	d.node = &nodeState{modeSource: SourceFlag}
	d.node.m = newNodeMetrics(prometheus.NewRegistry(), true)
	d.publishNode()
	d.publishNode()
	if n := len(hook.AllEntries()); n != 1 || !strings.Contains(hook.LastEntry().Message, "write node state file") {
		t.Fatalf("%d log entries, want one warning", n)
	}
	d.cfg.Node.StateFile = filepath.Join(dir, "node.json")
	d.publishNode()
	if n := len(hook.AllEntries()); n != 2 || !strings.Contains(hook.LastEntry().Message, "written again") {
		t.Fatalf("%d log entries, want a recovery line", n)
	}
}

// TestFollowRuntime checks that with pods tracked and no node name the
// state file gets the runtime section, refreshed from the tracker, and that
// stopping says the runtime is no longer followed.
func TestFollowRuntime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "node.json")
	log, _ := logtest.NewNullLogger()
	d := &Daemon{log: log, cfg: Config{Mode: policy.ModeAudit, Cgroup: "/", CRISocket: filepath.Join(t.TempDir(), "no-runtime.sock"),
		Node: NodeConfig{StateFile: path}}}
	d.node = &nodeState{modeSource: SourceFlag}
	d.node.m = newNodeMetrics(prometheus.NewRegistry(), false)
	var err error
	if d.pods, err = newPodTracker(d); err != nil {
		t.Fatal(err)
	}
	defer d.pods.close()
	stop := d.followRuntime(context.Background())
	var s *NodeState
	for i := 0; i < 100; i++ { // a give-up limit: the first refresh is due after statePublishInterval
		if s, err = ReadNodeState(path); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		stop()
		t.Fatalf("no state file: %v", err)
	}
	if s.NodeName != "" || s.Runtime == nil || s.Runtime.Connected || s.Runtime.LastError == "" {
		t.Errorf("runtime before stopping: %+v", s.Runtime)
	}
	stop()
	if s, err = ReadNodeState(path); err != nil || s.Runtime == nil || s.Runtime.Connected || s.Runtime.LastError != stoppedError {
		t.Errorf("runtime after stopping: %+v %v", s, err)
	}
}
