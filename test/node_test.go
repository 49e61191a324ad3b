package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bindguard/bindguard/internal/testbed/apiserver"
	"github.com/bindguard/bindguard/internal/testutils"
)

// The node tests run the daemon with --node-name against a real
// kube-apiserver and etcd (internal/testbed/apiserver).

const (
	cpLabel     = "node-role.kubernetes.io/control-plane"
	workerLabel = "node-role.kubernetes.io/worker"
	modeLabel   = "bindguard.io/mode"
	nodeName    = "e2e-node"
	// nodeWait bounds waits that include API server restarts and the
	// daemon's backoff; a give-up limit, not a measurement.
	nodeWait = 60 * time.Second
)

const nodeRegistry = `entries:
  - port: 44100
    protocol: tcp
    process: control-plane-only
    nodeSelector: {node-role.kubernetes.io/control-plane: ""}
  - port: 44101
    protocol: tcp
    process: worker-only
    nodeSelector: {node-role.kubernetes.io/worker: ""}
  - port: 44102
    protocol: tcp
    process: every-node
`

// nodeEnv is an env plus an API server holding this node's Node object.
type nodeEnv struct {
	*env
	api       *apiserver.Server
	client    kubernetes.Interface
	stateFile string
}

func newNodeEnv(t *testing.T, labels map[string]string) *nodeEnv {
	t.Helper()
	e := newEnv(t)
	e.writeRegistry(nodeRegistry)
	s := apiserver.Start(t, apiserver.Options{})
	ne := &nodeEnv{env: e, api: s, client: s.Client(), stateFile: filepath.Join(t.TempDir(), "node.json")}
	_, err := ne.client.CoreV1().Nodes().Create(context.Background(),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return ne
}

func (ne *nodeEnv) args(extra ...string) []string {
	return append([]string{"--node-name", nodeName, "--kubeconfig", ne.api.Kubeconfig, "--node-state-file", ne.stateFile}, extra...)
}

// relabel changes the Node's labels through c and returns when the API
// server accepted the change.
func relabel(t *testing.T, c kubernetes.Interface, f func(map[string]string)) time.Time {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	f(n.Labels)
	start := time.Now()
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return start
}

// waitNodeApplied waits for the daemon to put a node label change in force
// and logs the time from the update request to the policy in force.
func (d *daemon) waitNodeApplied(t *testing.T, what string, since time.Time) map[string]any {
	t.Helper()
	m := d.waitLogWithin(what, nodeWait, func(m map[string]any) bool {
		return m["msg"] == "node labels changed: policy in force" && logTime(m).After(since)
	})
	t.Logf("%s: generation %v, %.1f ms from the update request to the policy in force (%v ms from the event reaching the daemon); changed %v",
		what, m["generation"], float64(logTime(m).Sub(since).Microseconds())/1000, m["since_update_received_ms"], m["changed"])
	return m
}

func logTime(m map[string]any) time.Time {
	s, _ := m["time"].(string)
	ts, _ := time.Parse(time.RFC3339Nano, s)
	return ts
}

func (d *daemon) count(match func(map[string]any) bool) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, m := range d.lines {
		if match(m) {
			n++
		}
	}
	return n
}

type nodeStatus struct {
	Mode string `json:"mode"`
	Node struct {
		NodeKnown    bool   `json:"nodeKnown"`
		APIReachable bool   `json:"apiServerReachable"`
		Mode         string `json:"mode"`
		ModeSource   string `json:"modeSource"`
		Labels       map[string]struct {
			Value  string `json:"value"`
			Source string `json:"source"`
		} `json:"labels"`
		Entries *struct {
			Selected    []entryRef `json:"selected"`
			NotSelected []entryRef `json:"notSelected"`
		} `json:"entries"`
		Runtime *struct {
			Connected bool `json:"connected"`
			PodsKnown int  `json:"podsKnown"`
		} `json:"runtime"`
	} `json:"node"`
}

type entryRef struct {
	Pos      string `json:"pos"`
	Process  string `json:"process"`
	Selector string `json:"selector"`
}

// checkEntries checks the entries status says this node selected and did
// not, by process, and that each unselected one names its selector.
func checkEntries(t *testing.T, s nodeStatus, selected, not []string) {
	t.Helper()
	if s.Node.Entries == nil {
		t.Fatalf("status has no entries: %+v", s)
	}
	procs := func(rs []entryRef) []string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Process)
			if !strings.Contains(r.Pos, "registry.yaml:") {
				t.Errorf("entry %s: pos %q, want FILE:LINE:COL", r.Process, r.Pos)
			}
		}
		return out
	}
	if got := procs(s.Node.Entries.Selected); !slices.Equal(got, selected) {
		t.Errorf("selected %v, want %v", got, selected)
	}
	if got := procs(s.Node.Entries.NotSelected); !slices.Equal(got, not) {
		t.Errorf("not selected %v, want %v", got, not)
	}
	for _, r := range s.Node.Entries.NotSelected {
		if r.Selector == "" {
			t.Errorf("unselected entry %s has no selector", r.Process)
		}
	}
}

func (ne *nodeEnv) status(t *testing.T) nodeStatus {
	t.Helper()
	out, code := bindguard(t, "status", "--pin-path", ne.pinPath, "--node-state-file", ne.stateFile, "-o", "json")
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, out)
	}
	var s nodeStatus
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status: %v\n%s", err, out)
	}
	return s
}

var (
	cpVerdicts = []bindCase{
		{"control-plane entry", "tcp", "4", any4, 44100, nil},
		{"worker entry", "tcp", "4", any4, 44101, unix.EPERM},
		{"every-node entry", "tcp", "4", any4, 44102, nil},
		{"undeclared", "tcp", "4", any4, 44103, unix.EPERM},
	}
	workerVerdicts = []bindCase{
		{"control-plane entry", "tcp", "4", any4, 44100, unix.EPERM},
		{"worker entry", "tcp", "4", any4, 44101, nil},
		{"every-node entry", "tcp", "4", any4, 44102, nil},
		{"undeclared", "tcp", "4", any4, 44103, unix.EPERM},
	}
	auditVerdicts = []bindCase{
		{"control-plane entry, audited", "tcp", "4", any4, 44100, nil},
		{"worker entry", "tcp", "4", any4, 44101, nil},
		{"undeclared, audited", "tcp", "4", any4, 44103, nil},
	}
)

// TestNodeLabelsLive: the policy and the mode follow the Node object, and an
// API server outage changes nothing until the server is back.
func TestNodeLabelsLive(t *testing.T) {
	ne := newNodeEnv(t, map[string]string{cpLabel: "", modeLabel: "enforce"})
	// --mode audit: the Node's mode label overrides it from the start.
	d := ne.start("audit", ne.args("--metrics-addr", "127.0.0.1:0")...)
	metricsAddr := d.waitLog("metrics address", func(m map[string]any) bool { return m["msg"] == "serving metrics" })["addr"].(string)
	b := testutils.StartBinder(t, ne.child("svc"), testutils.BinderOptions{})
	t.Run("control-plane node, enforce from the node label", func(t *testing.T) {
		expect(t, b, cpVerdicts)
		s := ne.status(t)
		if s.Mode != "enforce" || s.Node.ModeSource != "node-label" || s.Node.Labels[cpLabel].Source != "node-label" || !s.Node.NodeKnown {
			t.Errorf("status: %+v", s)
		}
		checkEntries(t, s, []string{"control-plane-only", "every-node"}, []string{"worker-only"})
		if s.Node.Runtime == nil {
			t.Errorf("status has no runtime section although pods are tracked")
		}
	})
	t.Run("relabelled to worker", func(t *testing.T) {
		since := relabel(t, ne.client, func(l map[string]string) { delete(l, cpLabel); l[workerLabel] = "" })
		d.waitNodeApplied(t, "relabel to worker", since)
		expect(t, b, workerVerdicts)
		checkEntries(t, ne.status(t), []string{"worker-only", "every-node"}, []string{"control-plane-only"})
	})
	t.Run("mode label removed: back to --mode audit", func(t *testing.T) {
		since := relabel(t, ne.client, func(l map[string]string) { delete(l, modeLabel) })
		m := d.waitNodeApplied(t, "mode label removed", since)
		expect(t, b, auditVerdicts)
		d.waitLog("an audit event for 44100", func(m map[string]any) bool {
			p, _ := m["port"].(float64)
			return p == 44100 && m["verdict"] == "audit"
		})
		ch := d.waitLog("mode change", func(l map[string]any) bool { return l["msg"] == "mode changed" && l["generation"] == m["generation"] })
		if ch["from"] != "enforce" || ch["to"] != "audit" || ch["source"] != "flag" {
			t.Errorf("mode change record: %v", ch)
		}
		if s := ne.status(t); s.Mode != "audit" || s.Node.ModeSource != "flag" {
			t.Errorf("status after removal: mode %s from %s", s.Mode, s.Node.ModeSource)
		}
		checkMetrics(t, metricsAddr, map[string]float64{
			`bindguard_mode_source{mode="audit",source="flag"}`:                                       1,
			`bindguard_mode_source{mode="enforce",source="node-label"}`:                               -1, // absent
			`bindguard_mode_changes_total{mode="audit",source="flag"}`:                                1,
			`bindguard_mode_changes_total{mode="enforce",source="node-label"}`:                        0,
			`bindguard_node_label{key="node-role.kubernetes.io/worker",source="node-label",value=""}`: 1,
			`bindguard_node_updates_total{result="applied"}`:                                          2,
			`bindguard_kube_api_reachable`:                                                            1,
		})
	})
	t.Run("invalid mode label ignored", func(t *testing.T) {
		since := relabel(t, ne.client, func(l map[string]string) { l[modeLabel] = "block" })
		d.waitLogWithin("invalid mode warning", nodeWait, func(m map[string]any) bool {
			return strings.HasPrefix(m["msg"].(string), "invalid mode label ignored") && m["value"] == "block"
		})
		// The label set changed, so the policy is swapped, in the same mode.
		if m := d.waitNodeApplied(t, "invalid mode label", since); m["mode"] != nil && m["mode"] != "audit" {
			t.Errorf("mode after an invalid label: %v", m["mode"])
		}
		expect(t, b, auditVerdicts)
		if s := ne.status(t); s.Mode != "audit" || s.Node.ModeSource != "flag" {
			t.Errorf("status after an invalid label: mode %s from %s", s.Mode, s.Node.ModeSource)
		}
	})
	t.Run("mode label enforce", func(t *testing.T) {
		since := relabel(t, ne.client, func(l map[string]string) { l[modeLabel] = "enforce" })
		d.waitNodeApplied(t, "mode label enforce", since)
		expect(t, b, workerVerdicts)
	})
	t.Run("API server down: the policy stays; the change made meanwhile follows", func(t *testing.T) {
		checkNodeOutage(t, ne, d, b)
	})
	d.stop(syscall.SIGTERM)
	assertNothingAttached(t, ne.cgAbs)
}

// TestNodeLabelsRejectedThenFixed: a label update whose policy does not
// compile (two entries claim a port on the relabelled node) changes
// nothing; once the registry is fixed, the reload applies the Node's
// current labels, not the ones in force before the update.
func TestNodeLabelsRejectedThenFixed(t *testing.T) {
	ne := newNodeEnv(t, map[string]string{cpLabel: ""})
	ne.writeRegistry(nodeRegistry + `  - port: 44102
    protocol: tcp
    process: worker-claims-44102
    nodeSelector: {node-role.kubernetes.io/worker: ""}
`)
	d := ne.start("enforce", ne.args()...)
	b := testutils.StartBinder(t, ne.child("svc"), testutils.BinderOptions{})
	expect(t, b, cpVerdicts)

	since := relabel(t, ne.client, func(l map[string]string) { delete(l, cpLabel); l[workerLabel] = "" })
	rej := d.waitLogWithin("rejected label update", nodeWait, func(m map[string]any) bool {
		return strings.HasPrefix(m["msg"].(string), "policy for the new node labels rejected") && logTime(m).After(since)
	})
	if e, _ := rej["error"].(string); !strings.Contains(e, "conflicts with") {
		t.Errorf("rejection: %v, want the conflict named", rej["error"])
	}
	expect(t, b, cpVerdicts)

	ne.writeRegistry(nodeRegistry)
	fixed := time.Now()
	d.cmd.Process.Signal(syscall.SIGHUP)
	m := d.waitNodeApplied(t, "the reload after the fix", fixed)
	if m["trigger"] == "node labels" {
		t.Errorf("applied by %v, want the reload", m["trigger"])
	}
	expect(t, b, workerVerdicts)
	checkEntries(t, ne.status(t), []string{"worker-only", "every-node"}, []string{"control-plane-only"})
	d.stop(syscall.SIGTERM)
}

// checkNodeOutage stops the API server the daemon talks to: verdicts stay;
// the Node is relabelled through a second API server meanwhile, and the
// daemon applies that once its server is back.
func checkNodeOutage(t *testing.T, ne *nodeEnv, d *daemon, b *testutils.Binder) {
	peer, err := kubernetes.NewForConfig(ne.api.AddAPIServer())
	if err != nil {
		t.Fatal(err)
	}
	ne.api.StopAPIServer()
	d.waitLogWithin("outage", nodeWait, func(m map[string]any) bool {
		return strings.HasPrefix(m["msg"].(string), "API server unreachable")
	})
	expect(t, b, workerVerdicts)
	relabel(t, peer, func(l map[string]string) { delete(l, workerLabel); l[cpLabel] = "" })
	expect(t, b, workerVerdicts)
	if s := ne.status(t); s.Node.APIReachable {
		t.Errorf("status says the API server is reachable during the outage")
	}
	restarted := time.Now()
	ne.api.RestartAPIServer()
	d.waitNodeApplied(t, "catch-up after the outage", restarted)
	expect(t, b, cpVerdicts)
	if n := d.count(func(m map[string]any) bool { return strings.HasPrefix(m["msg"].(string), "API server unreachable") }); n != 1 {
		t.Errorf("outage logged %d times, want once", n)
	}
	d.waitLog("recovery", func(m map[string]any) bool { return m["msg"] == "API server reachable again" })
}

// checkMetrics scrapes the daemon and compares; a want of -1 means absent.
func checkMetrics(t *testing.T, addr string, want map[string]float64) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for metric, w := range want {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`).FindStringSubmatch(string(body))
		switch {
		case m == nil && w >= 0:
			t.Errorf("no %s in\n%s", metric, body)
		case m != nil && w < 0:
			t.Errorf("%s present, want absent", metric)
		case m != nil:
			if got, _ := strconv.ParseFloat(m[1], 64); got != w {
				t.Errorf("%s = %v, want %v", metric, got, w)
			}
		}
	}
}

// TestNodeAPIDownAtStartNoPins: with no pinned policy and no API server, the
// daemon starts on the --node-label flags alone and takes the Node's labels
// when the server answers.
func TestNodeAPIDownAtStartNoPins(t *testing.T) {
	ne := newNodeEnv(t, map[string]string{cpLabel: ""})
	ne.api.StopAPIServer()
	d := ne.start("enforce", ne.args("--node-label", workerLabel+"=")...)
	d.waitLog("start on flags", func(m map[string]any) bool {
		return strings.HasPrefix(m["msg"].(string), "node labels unknown and no pinned policy")
	})
	b := testutils.StartBinder(t, ne.child("svc"), testutils.BinderOptions{})
	expect(t, b, workerVerdicts)
	if s := ne.status(t); s.Node.NodeKnown || s.Node.Labels[workerLabel].Source != "flag" {
		t.Errorf("status before the API server answers: %+v", s.Node)
	}
	restarted := time.Now()
	ne.api.RestartAPIServer()
	d.waitNodeApplied(t, "catch-up", restarted)
	// The flags add to the Node's labels: both roles' entries now.
	expect(t, b, []bindCase{
		{"control-plane entry from the Node", "tcp", "4", any4, 44100, nil},
		{"worker entry from the flag", "tcp", "4", any4, 44101, nil},
		{"undeclared", "tcp", "4", any4, 44103, unix.EPERM},
	})
	if s := ne.status(t); !s.Node.NodeKnown || s.Node.Labels[cpLabel].Source != "node-label" || s.Node.Labels[workerLabel].Source != "flag" {
		t.Errorf("status after catch-up: %+v", s.Node)
	}
}

// TestNodeAPIDownAtStartKeepsPins: a restarted daemon that cannot read its
// Node leaves the pinned policy in force, untouched, and takes over only
// once the Node is known.
func TestNodeAPIDownAtStartKeepsPins(t *testing.T) {
	ne := newNodeEnv(t, map[string]string{cpLabel: ""})
	d := ne.start("enforce", ne.args("--keep-on-exit")...)
	b := testutils.StartBinder(t, ne.child("svc"), testutils.BinderOptions{})
	expect(t, b, cpVerdicts)
	d.stop(syscall.SIGTERM)
	t.Cleanup(func() { bindguard(t, "detach", "--pin-path", ne.pinPath) })

	ne.api.StopAPIServer()
	ready := filepath.Join(t.TempDir(), "ready")
	// The worker flag would change the policy if it were applied from
	// incomplete labels; it must not be.
	args := append([]string{"run", "--registry", ne.registry, "--mode", "enforce", "--cgroup", ne.cgRel,
		"--pin-path", ne.pinPath, "--ready-file", ready, "--log-format", "json", "--event-interval", "0"},
		ne.args("--node-label", workerLabel+"=")...)
	d2 := startDaemon(t, args...)
	d2.waitLog("pinned policy kept", func(m map[string]any) bool {
		return strings.HasPrefix(m["msg"].(string), "node labels unknown: the pinned policy stays in force")
	})
	expect(t, b, cpVerdicts)
	ne.api.RestartAPIServer()
	d2.waitFile(ready, nodeWait)
	d2.waitLog("takeover", func(m map[string]any) bool { return m["msg"] == "bind programs attached" && m["took_over"] == true })
	expect(t, b, []bindCase{
		{"control-plane entry from the Node", "tcp", "4", any4, 44100, nil},
		{"worker entry from the flag", "tcp", "4", any4, 44101, nil},
		{"undeclared", "tcp", "4", any4, 44103, unix.EPERM},
	})
	d2.stop(syscall.SIGTERM)
	assertNothingAttached(t, ne.cgAbs)
}
