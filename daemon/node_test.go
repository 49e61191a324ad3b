package daemon

import (
	"maps"
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/bindguard/bindguard/kube"
	"github.com/bindguard/bindguard/policy"
)

// TestResolve checks how the Node's labels, the --node-label flags and the
// mode label combine into the labels and mode in force.
func TestResolve(t *testing.T) {
	for _, tc := range []struct {
		name       string
		flagMode   policy.Mode
		flags      map[string]string
		known      bool        // a Node was read before this update
		cur        policy.Mode // mode in force before
		curSrc     string
		node       map[string]string
		wantLabels map[string]string
		wantMode   policy.Mode
		wantSrc    string
		wantWarn   bool
	}{
		{name: "no mode label: --mode", flagMode: policy.ModeAudit, node: map[string]string{"a": "1"},
			wantLabels: map[string]string{"a": "1"}, wantMode: policy.ModeAudit, wantSrc: SourceFlag},
		{name: "mode label overrides --mode", flagMode: policy.ModeAudit, node: map[string]string{ModeLabel: "enforce"},
			wantLabels: map[string]string{ModeLabel: "enforce"}, wantMode: policy.ModeEnforce, wantSrc: SourceNodeLabel},
		{name: "mode label audit over --mode enforce", flagMode: policy.ModeEnforce, node: map[string]string{ModeLabel: "audit"},
			wantLabels: map[string]string{ModeLabel: "audit"}, wantMode: policy.ModeAudit, wantSrc: SourceNodeLabel},
		{name: "flags add and override", flagMode: policy.ModeAudit, flags: map[string]string{"a": "flag", "b": "2"},
			node: map[string]string{"a": "node", "c": "3"}, wantLabels: map[string]string{"a": "flag", "b": "2", "c": "3"},
			wantMode: policy.ModeAudit, wantSrc: SourceFlag},
		{name: "mode from a --node-label flag wins over the Node", flagMode: policy.ModeAudit,
			flags: map[string]string{ModeLabel: "audit"}, node: map[string]string{ModeLabel: "enforce"},
			wantLabels: map[string]string{ModeLabel: "audit"}, wantMode: policy.ModeAudit, wantSrc: SourceFlag},
		{name: "invalid at first read: --mode", flagMode: policy.ModeAudit, node: map[string]string{ModeLabel: "Enforce"},
			wantLabels: map[string]string{ModeLabel: "Enforce"}, wantMode: policy.ModeAudit, wantSrc: SourceFlag, wantWarn: true},
		{name: "invalid later: the mode in force stays", flagMode: policy.ModeAudit, known: true,
			cur: policy.ModeEnforce, curSrc: SourceNodeLabel, node: map[string]string{ModeLabel: "on"},
			wantLabels: map[string]string{ModeLabel: "on"}, wantMode: policy.ModeEnforce, wantSrc: SourceNodeLabel, wantWarn: true},
		{name: "no labels at all", flagMode: policy.ModeEnforce, node: nil,
			wantLabels: map[string]string{}, wantMode: policy.ModeEnforce, wantSrc: SourceFlag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			log, hook := logtest.NewNullLogger()
			d := &Daemon{log: log, cfg: Config{Mode: tc.cur}}
			d.node = &nodeState{flagMode: tc.flagMode, flagLabels: tc.flags, modeSource: tc.curSrc}
			d.node.m = newNodeMetrics(prometheus.NewRegistry(), true)
			if tc.known {
				d.node.node = &kube.Node{}
			}
			before := maps.Clone(tc.node)
			labels, mode, src := d.resolve(tc.node)
			if !maps.Equal(before, tc.node) {
				t.Errorf("resolve changed its input: %v, was %v", tc.node, before)
			}
			if !maps.Equal(labels, tc.wantLabels) || mode != tc.wantMode || src != tc.wantSrc {
				t.Errorf("got %v %s %s, want %v %s %s", labels, mode, src, tc.wantLabels, tc.wantMode, tc.wantSrc)
			}
			warned := slices.ContainsFunc(hook.AllEntries(), func(e *logrus.Entry) bool { return e.Level == logrus.WarnLevel })
			if warned != tc.wantWarn {
				t.Errorf("warned %v, want %v", warned, tc.wantWarn)
			}
		})
	}
}

func TestLabelDiff(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b map[string]string
		want []string
	}{
		{"same", map[string]string{"a": "1"}, map[string]string{"a": "1"}, nil},
		{"added", nil, map[string]string{"a": "1"}, []string{"+a=1"}},
		{"removed", map[string]string{"a": "1"}, nil, []string{"-a=1"}},
		{"changed", map[string]string{"a": "1", "b": ""}, map[string]string{"a": "2", "c": ""}, []string{"+c=", "-b=", "~a=1->2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := labelDiff(tc.a, tc.b); !slices.Equal(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
