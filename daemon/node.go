package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"k8s.io/client-go/kubernetes"

	"github.com/bindguard/bindguard/kube"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// ModeLabel on the Node overrides --mode on that node, live.
const ModeLabel = "bindguard.io/mode"

// Where the labels and the mode in force come from.
const (
	SourceFlag      = "flag"       // --mode, --node-label
	SourceNodeLabel = "node-label" // the Node object
)

// NodeConfig makes the daemon follow its own Node object.
type NodeConfig struct {
	// Name of the Node; empty means labels come from --node-label alone.
	Name string
	// Kubeconfig is an explicit kubeconfig path; empty means KUBECONFIG,
	// then the in-cluster service account.
	Kubeconfig string
	// StateFile receives the labels and mode in force and their sources, the
	// entries selected, and the container runtime's connection, as JSON, on
	// every change, when Name is set or pods are tracked; `bindguard status`
	// reads it. Empty writes none.
	StateFile string
	UserAgent string
	// MinBackoff and MaxBackoff bound API retries (defaults 500ms, 30s).
	MinBackoff, MaxBackoff time.Duration
}

// errStopped ends Run cleanly when a signal arrives before anything was
// attached.
var errStopped = errors.New("stopped before attaching")

// nodeState is what the daemon knows of its Node. Guarded by Daemon.mu once
// the watcher runs.
type nodeState struct {
	flagMode   policy.Mode
	flagLabels map[string]string
	node       *kube.Node // nil until read whole from the API server
	modeSource string
	reachable  bool
	watcher    *kube.Watcher
	m          nodeMetrics
	// entries are those the policy in force selected and did not.
	entries *EntriesState
	// runtime is the runtime state last published.
	runtime *RuntimeState
	// writeFailed is set after a failed state file write: the next failure
	// is not logged again.
	writeFailed bool
	// stopped is set at shutdown: the state file then says the runtime is
	// no longer followed (the pins may outlive the daemon).
	stopped   bool
	stoppedAt time.Time
}

// NodeState is the JSON of NodeConfig.StateFile.
type NodeState struct {
	NodeName        string                `json:"nodeName,omitempty"`
	NodeKnown       bool                  `json:"nodeKnown"`
	APIReachable    bool                  `json:"apiServerReachable"`
	ResourceVersion string                `json:"resourceVersion,omitempty"`
	Mode            string                `json:"mode"`
	ModeSource      string                `json:"modeSource"`
	Labels          map[string]LabelState `json:"labels"`
	Generation      uint32                `json:"generation"`
	Updated         time.Time             `json:"updated"`
	// Entries are the registry entries this node selected and did not, as
	// of the policy in force.
	Entries *EntriesState `json:"entries,omitempty"`
	// Runtime is the container runtime connection; nil with pod identity off.
	Runtime *RuntimeState `json:"runtime,omitempty"`
}

// LabelState is one label in force and where it came from.
type LabelState struct {
	Value  string `json:"value"`
	Source string `json:"source"`
}

// ReadNodeState reads a state file written by a running daemon.
func ReadNodeState(path string) (*NodeState, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node state: %w", err)
	}
	var s NodeState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("node state %s: %w", path, err)
	}
	return &s, nil
}

// initNode runs before the first compile. With a node name it reads the
// Node; when the API server cannot say what the Node's labels are, a pinned
// policy from an earlier daemon stays in force untouched until it can, and
// without pins the daemon starts on the --node-label flags alone.
func (d *Daemon) initNode(ctx context.Context, sigs <-chan os.Signal) error {
	d.node = &nodeState{flagMode: d.cfg.Mode, flagLabels: maps.Clone(d.cfg.NodeLabels), modeSource: SourceFlag}
	d.node.m = newNodeMetrics(d.metrics.reg, d.cfg.Node.Name != "")
	d.node.m.mode(d.cfg.Mode, SourceFlag)
	d.node.m.labels(d.labelSources())
	nc := d.cfg.Node
	if nc.Name == "" {
		return nil
	}
	rc, err := kube.ClientConfig(nc.Kubeconfig, nc.UserAgent)
	if err != nil {
		return err
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("kube client: %w", err)
	}
	w := &kube.Watcher{
		Client: client, Name: nc.Name, Log: d.log.WithField("component", "node-watch"),
		OnNode: d.nodeChanged, OnReachable: d.apiReachable,
		MinBackoff: nc.MinBackoff, MaxBackoff: nc.MaxBackoff,
	}
	d.node.watcher = w
	n, err := w.Get(ctx)
	if err == nil {
		d.adoptNode(n)
		return nil
	}
	w.MarkUnreachable()
	d.node.m.reachable.Set(0)
	if st, serr := loader.ReadStatus(d.cfg.PinPath); d.cfg.PinPath != "" && serr == nil && st.Generation > 0 {
		d.log.WithError(err).WithFields(logrus.Fields{
			"node": nc.Name, "generation": st.Generation, "enforce": st.Enforce, "pin_path": d.cfg.PinPath,
		}).Warn("node labels unknown: the pinned policy stays in force, untouched, until the API server answers")
		return d.waitNode(ctx, sigs, w)
	}
	d.log.WithError(err).WithFields(logrus.Fields{"node": nc.Name, "labels": d.cfg.NodeLabels}).
		Warn("node labels unknown and no pinned policy: starting with the --node-label flags alone; the Node's labels follow when the API server answers")
	return nil
}

// waitNode retries the Node with backoff until it is read, leaving whatever
// is pinned in force meanwhile.
func (d *Daemon) waitNode(ctx context.Context, sigs <-chan os.Signal, w *kube.Watcher) error {
	backoff := max(d.cfg.Node.MinBackoff, 500*time.Millisecond)
	maxBackoff := d.cfg.Node.MaxBackoff
	if maxBackoff == 0 {
		maxBackoff = 30 * time.Second
	}
	for {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return errStopped
		case s := <-sigs:
			t.Stop()
			if s != syscall.SIGHUP {
				d.log.WithField("signal", s.String()).Info("stopping; the pinned policy stays in force")
				return errStopped
			}
			continue
		case <-t.C:
		}
		n, err := w.Get(ctx)
		if err == nil {
			d.log.WithField("node", n.Name).Info("API server reachable: taking over from the pinned policy")
			d.node.m.reachable.Set(1)
			d.adoptNode(n)
			return nil
		}
		d.log.WithError(err).Debug("node still unknown")
		backoff = min(2*backoff, maxBackoff)
	}
}

// ignoreStopped turns errStopped into a clean exit.
func ignoreStopped(err error) error {
	if errors.Is(err, errStopped) {
		return nil
	}
	return err
}

// adoptNode takes the Node's labels and mode before anything is applied.
func (d *Daemon) adoptNode(n kube.Node) {
	d.node.watcher.Seed(n)
	d.node.node = &n
	d.node.reachable = true
	d.node.m.reachable.Set(1)
	d.cfg.NodeLabels, d.cfg.Mode, d.node.modeSource = d.resolve(n.Labels)
	d.node.m.mode(d.cfg.Mode, d.node.modeSource)
	d.node.m.labels(d.labelSources())
	d.log.WithFields(logrus.Fields{
		"node": n.Name, "labels": d.cfg.NodeLabels, "mode": string(d.cfg.Mode), "mode_source": d.node.modeSource,
	}).Info("node labels read from the API server")
}

// resolve merges the Node's labels with the flags (flags win) and picks the
// mode: the mode label when valid, else the mode in force (an invalid value
// changes nothing), else --mode when the label is absent.
func (d *Daemon) resolve(nodeLabels map[string]string) (map[string]string, policy.Mode, string) {
	labels := maps.Clone(nodeLabels)
	if labels == nil {
		labels = map[string]string{}
	}
	maps.Copy(labels, d.node.flagLabels)
	v, ok := labels[ModeLabel]
	if !ok {
		return labels, d.node.flagMode, SourceFlag
	}
	mode, err := policy.ParseMode(v)
	if err != nil {
		cur, src := d.cfg.Mode, d.node.modeSource
		if d.node.node == nil { // first read: nothing from the Node in force yet
			cur, src = d.node.flagMode, SourceFlag
		}
		d.log.WithFields(logrus.Fields{"label": ModeLabel, "value": v, "mode": string(cur)}).
			Warn("invalid mode label ignored: want audit or enforce; the mode in force stays")
		d.node.m.invalidMode.Inc()
		return labels, cur, src
	}
	src := SourceNodeLabel
	if _, fromFlag := d.node.flagLabels[ModeLabel]; fromFlag {
		src = SourceFlag
	}
	return labels, mode, src
}

// nodeChanged is the watcher's callback: it recompiles for the new labels
// and swaps the policy like a reload. On failure everything stays as it was.
func (d *Daemon) nodeChanged(n kube.Node) {
	d.mu.Lock()
	defer d.mu.Unlock()
	labels, mode, src := d.resolve(n.Labels)
	d.node.node = &n
	log := d.log.WithFields(logrus.Fields{"trigger": "node labels", "node": n.Name, "resource_version": n.ResourceVersion})
	if maps.Equal(labels, d.cfg.NodeLabels) && mode == d.cfg.Mode {
		d.node.modeSource = src
		d.node.m.mode(mode, src)
		d.node.m.updates.WithLabelValues("unchanged").Inc()
		d.publishNode()
		return
	}
	prev, res, err := d.swapPolicy(log, nodeView{labels, mode, src})
	if err != nil {
		d.node.m.updates.WithLabelValues("rejected").Inc()
		log.WithError(err).WithField("generation", d.ld.Generation()).
			Error("policy for the new node labels rejected; the previous policy and mode stay in force")
		d.publishNode()
		return
	}
	took := time.Since(n.Received)
	d.node.m.updates.WithLabelValues("applied").Inc()
	d.node.m.latency.Observe(took.Seconds())
	d.nodeApplied(log.WithField("since_update_received_ms", float64(took.Microseconds())/1000), prev, res.Generation)
	d.publishNode()
}

// nodeApplied records a policy in force for labels or a mode other than the
// previous policy's (d.cfg holds the new ones): by a label update, or by the
// reload that applied one rejected before.
func (d *Daemon) nodeApplied(log *logrus.Entry, prev nodeView, generation uint32) {
	mode, src := d.cfg.Mode, d.node.modeSource
	log.WithFields(logrus.Fields{"generation": generation, "changed": labelDiff(prev.labels, d.cfg.NodeLabels)}).
		Info("node labels changed: policy in force")
	if mode != prev.mode {
		d.node.m.changes.WithLabelValues(string(mode), src).Inc()
		log.WithFields(logrus.Fields{"from": string(prev.mode), "to": string(mode), "source": src, "generation": generation}).
			Warn("mode changed")
	}
	d.node.m.mode(mode, src)
	d.node.m.labels(d.labelSources())
}

// apiReachable records the API server being lost or found again.
func (d *Daemon) apiReachable(up bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.node.reachable = up
	d.node.m.reachable.Set(boolGauge(up))
	d.publishNode()
}

// followNode starts the watcher once the policy is in force; the returned
// function stops it and waits for it.
func (d *Daemon) followNode(ctx context.Context) (stop func()) {
	d.mu.Lock()
	d.publishNode()
	d.mu.Unlock()
	if d.node.watcher == nil {
		return func() {}
	}
	return goUntilStopped(ctx, d.node.watcher.Run)
}

// labelSources says where each label in force comes from.
func (d *Daemon) labelSources() map[string]LabelState {
	out := make(map[string]LabelState, len(d.cfg.NodeLabels))
	for k, v := range d.cfg.NodeLabels {
		src := SourceNodeLabel
		if _, ok := d.node.flagLabels[k]; ok {
			src = SourceFlag
		}
		out[k] = LabelState{Value: v, Source: src}
	}
	return out
}

// publishNode writes the state file atomically. Called with d.mu held (or
// before any goroutine runs).
func (d *Daemon) publishNode() {
	path := d.cfg.Node.StateFile
	if path == "" || (d.cfg.Node.Name == "" && d.pods == nil) {
		return // without a Node or pods, --mode and --node-label say it all
	}
	s := NodeState{
		NodeName: d.cfg.Node.Name, NodeKnown: d.node.node != nil, APIReachable: d.node.reachable,
		Mode: string(d.cfg.Mode), ModeSource: d.node.modeSource, Labels: d.labelSources(), Updated: time.Now(),
		Entries: d.node.entries, Runtime: d.runtimeState(),
	}
	if d.node.node != nil {
		s.ResourceVersion = d.node.node.ResourceVersion
	}
	if d.ld != nil {
		s.Generation = d.ld.Generation()
	}
	d.node.runtime = s.Runtime
	b, _ := json.MarshalIndent(s, "", "  ")
	err := writeAtomic(path, append(b, '\n'))
	switch {
	case err != nil && !d.node.writeFailed:
		d.log.WithError(err).WithField("path", path).Warn("write node state file; status will not show the node labels, entries and runtime")
	case err == nil && d.node.writeFailed:
		d.log.WithField("path", path).Info("node state file written again")
	}
	d.node.writeFailed = err != nil
}

// writeAtomic replaces path with b through a temporary file of its own in
// the same directory, so that a reader never sees half a file.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// labelDiff lists what changed between two label sets, for the log.
func labelDiff(a, b map[string]string) []string {
	var out []string
	for k, v := range b {
		if old, ok := a[k]; !ok {
			out = append(out, "+"+k+"="+v)
		} else if old != v {
			out = append(out, "~"+k+"="+old+"->"+v)
		}
	}
	for k, v := range a {
		if _, ok := b[k]; !ok {
			out = append(out, "-"+k+"="+v)
		}
	}
	slices.Sort(out)
	return out
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

type nodeMetrics struct {
	modeInfo    *prometheus.GaugeVec
	changes     *prometheus.CounterVec
	invalidMode prometheus.Counter
	labelInfo   *prometheus.GaugeVec
	updates     *prometheus.CounterVec
	latency     prometheus.Histogram
	reachable   prometheus.Gauge
}

// newNodeMetrics registers the mode and label metrics, and with follow the
// Node watch's too.
func newNodeMetrics(reg *prometheus.Registry, follow bool) nodeMetrics {
	m := nodeMetrics{
		modeInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bindguard_mode_source", Help: "1 for the mode in force (audit or enforce) and where it came from (flag or node-label); bindguard_mode has 0 and 1 for both modes.",
		}, []string{"mode", "source"}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindguard_mode_changes_total", Help: "Mode changes while running, by new mode and source.",
		}, []string{"mode", "source"}),
		invalidMode: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "bindguard_mode_label_invalid_total", Help: "Node updates whose bindguard.io/mode label was neither audit nor enforce (ignored).",
		}),
		labelInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "bindguard_node_label", Help: "1 for each node label in force, by key, value and source (node-label or flag).",
		}, []string{"key", "value", "source"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindguard_node_updates_total", Help: "Node label updates from the API server, by result (applied, unchanged, rejected).",
		}, []string{"result"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "bindguard_node_update_apply_seconds", Help: "From a Node update reaching the daemon to its policy in force.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 8),
		}),
		reachable: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "bindguard_kube_api_reachable", Help: "1 while the API server answers the Node watch, 0 during an outage.",
		}),
	}
	for _, r := range []string{"applied", "unchanged", "rejected"} {
		m.updates.WithLabelValues(r)
	}
	for _, mode := range []policy.Mode{policy.ModeAudit, policy.ModeEnforce} {
		for _, s := range []string{SourceFlag, SourceNodeLabel} {
			m.changes.WithLabelValues(string(mode), s)
		}
	}
	m.reachable.Set(1)
	reg.MustRegister(m.modeInfo, m.changes, m.labelInfo)
	if follow {
		reg.MustRegister(m.invalidMode, m.updates, m.latency, m.reachable)
	}
	return m
}

func (m nodeMetrics) mode(mode policy.Mode, src string) {
	m.modeInfo.Reset()
	m.modeInfo.WithLabelValues(string(mode), src).Set(1)
}

func (m nodeMetrics) labels(ls map[string]LabelState) {
	m.labelInfo.Reset()
	for k, l := range ls {
		m.labelInfo.WithLabelValues(k, l.Value, l.Source).Set(1)
	}
}
