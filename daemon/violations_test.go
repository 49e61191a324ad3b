package daemon

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// testPolicy has one entry of each shape: owners of two kinds, anyone on
// localhost, a removed port, and an entry in mode: audit.
func testPolicy() *policy.Compiled {
	return &policy.Compiled{
		Origins: []policy.Origin{
			{Pos: policy.Pos{File: "r.yaml", Line: 3}, Process: "etcd"},
			{Pos: policy.Pos{File: "r.yaml", Line: 9}, Process: "exporter"},
			{Pos: policy.Pos{File: "r.yaml", Line: 14}, Process: "sdn", Removed: true},
			{Pos: policy.Pos{File: "r.yaml", Line: 20}, Process: "rpc"},
		},
		Rules: []policy.Rule{
			{Port: 2379, Protocol: policy.TCP, Origin: 0, Owners: policy.Owners{Units: []string{"etcd.service"}, UIDs: []uint32{0}}},
			{Port: 9100, Protocol: policy.TCP, Origin: 1, Localhost: true},
			{Port: 9100, Protocol: policy.UDP, Origin: 1, Localhost: true},
			{Port: 10256, Protocol: policy.TCP, Origin: 2, Removed: true},
			{Port: 111, Protocol: policy.TCP, Origin: 3, Audit: true, Owners: policy.Owners{Pods: []policy.PodOwner{{Namespace: "rpc"}}}},
		},
	}
}

// series renders a vector as sorted "labels value" lines, labels in
// violationLabels order with their values only.
func series(t *testing.T, v *violations) string {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(v.vec)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var vals []string
			for _, lp := range m.GetLabel() {
				vals = append(vals, lp.GetName()+"="+lp.GetValue())
			}
			lines = append(lines, fmt.Sprintf("%s %g", strings.Join(vals, ","), m.GetCounter().GetValue()))
		}
	}
	return strings.Join(lines, "\n")
}

func TestViolationsAppliedAtZero(t *testing.T) {
	for _, tc := range []struct {
		mode policy.Mode
		want []string
	}{
		{policy.ModeAudit, []string{
			"entry=r.yaml:3,namespace=,owner_kind=unit+uid,pod=,port=,process=etcd,protocol=,reason=owner,verdict=audit 0",
			"entry=r.yaml:9,namespace=,owner_kind=none,pod=,port=,process=exporter,protocol=,reason=address,verdict=audit 0",
			"entry=r.yaml:14,namespace=,owner_kind=none,pod=,port=,process=sdn,protocol=,reason=removed,verdict=audit 0",
			"entry=r.yaml:20,namespace=,owner_kind=pod,pod=,port=,process=rpc,protocol=,reason=owner,verdict=audit 0",
			"entry=,namespace=,owner_kind=none,pod=,port=other,process=,protocol=,reason=undeclared,verdict=audit 0",
		}},
		{policy.ModeEnforce, []string{
			"entry=r.yaml:3,namespace=,owner_kind=unit+uid,pod=,port=,process=etcd,protocol=,reason=owner,verdict=deny 0",
			"entry=r.yaml:9,namespace=,owner_kind=none,pod=,port=,process=exporter,protocol=,reason=address,verdict=deny 0",
			"entry=r.yaml:14,namespace=,owner_kind=none,pod=,port=,process=sdn,protocol=,reason=removed,verdict=deny 0",
			// mode: audit on the entry: only ever audited.
			"entry=r.yaml:20,namespace=,owner_kind=pod,pod=,port=,process=rpc,protocol=,reason=owner,verdict=audit 0",
			"entry=,namespace=,owner_kind=none,pod=,port=other,process=,protocol=,reason=undeclared,verdict=deny 0",
		}},
	} {
		t.Run(string(tc.mode), func(t *testing.T) {
			v := newViolations()
			v.applied(testPolicy(), tc.mode)
			got := series(t, v)
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, got)
				}
			}
			if n := testutil.CollectAndCount(v.vec); n != len(tc.want) {
				t.Errorf("%d series, want %d:\n%s", n, len(tc.want), got)
			}
		})
	}
}

func TestViolationsCount(t *testing.T) {
	c := testPolicy()
	etcd, rpc := c.Origins[0], c.Origins[3]
	for _, tc := range []struct {
		name   string
		ev     loader.Event
		origin *policy.Origin
		pod    *policy.Pod
		want   string
	}{
		{"owner with suppressed", loader.Event{Reason: loader.ReasonOwner, Denied: true, Suppressed: 4}, &etcd,
			nil, "entry=r.yaml:3,namespace=,owner_kind=unit+uid,pod=,port=,process=etcd,protocol=,reason=owner,verdict=deny 5"},
		{"undeclared", loader.Event{Reason: loader.ReasonUndeclared, Port: 8123, Protocol: policy.UDP}, nil,
			nil, "entry=,namespace=,owner_kind=none,pod=,port=8123,process=,protocol=udp,reason=undeclared,verdict=audit 1"},
		{"pod binder", loader.Event{Reason: loader.ReasonOwner}, &rpc,
			&policy.Pod{Namespace: "web", Name: "front-1"}, "entry=r.yaml:20,namespace=web,owner_kind=pod,pod=front-1,port=,process=rpc,protocol=,reason=owner,verdict=audit 1"},
		{"pod not known yet", loader.Event{Reason: loader.ReasonOwner}, &rpc,
			&policy.Pod{Pending: true}, "entry=r.yaml:20,namespace=,owner_kind=pod,pod=,port=,process=rpc,protocol=,reason=owner,verdict=audit 1"},
		{"entry of a policy gone", loader.Event{Reason: loader.ReasonAddress, Denied: true}, nil,
			nil, "entry=unknown,namespace=,owner_kind=none,pod=,port=,process=,protocol=,reason=address,verdict=deny 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := newViolations()
			v.applied(c, policy.ModeEnforce)
			v.count(tc.ev, tc.origin, tc.pod)
			if got := series(t, v); !strings.Contains(got, tc.want) {
				t.Errorf("missing %q in\n%s", tc.want, got)
			}
		})
	}
}

// TestViolationsCaps checks the documented cardinality bound: past the
// caps, every further port or pod lands in "other", and no count is lost.
func TestViolationsCaps(t *testing.T) {
	v := newViolations()
	v.applied(&policy.Compiled{}, policy.ModeAudit)
	const extra = 10
	for p := 0; p < MaxUndeclaredPorts+extra; p++ {
		v.count(loader.Event{Reason: loader.ReasonUndeclared, Port: uint16(20000 + p), Protocol: policy.TCP}, nil, nil)
	}
	if n := testutil.CollectAndCount(v.vec); n != MaxUndeclaredPorts+1 {
		t.Errorf("%d series after %d ports, want %d", n, MaxUndeclaredPorts+extra, MaxUndeclaredPorts+1)
	}
	other := v.vec.WithLabelValues("", "", "undeclared", "audit", "none", otherLabel, "", "", "")
	if got := testutil.ToFloat64(other); got != extra {
		t.Errorf("port=other counts %g, want %d", got, extra)
	}
	o := policy.Origin{Pos: policy.Pos{File: "r.yaml", Line: 1}, Process: "p"}
	for i := 0; i < MaxPods+extra; i++ {
		v.count(loader.Event{Reason: loader.ReasonOwner}, &o, &policy.Pod{Namespace: "ns", Name: fmt.Sprint("pod-", i)})
	}
	pods := v.vec.WithLabelValues("r.yaml:1", "p", "owner", "audit", "none", "", "", otherLabel, otherLabel)
	if got := testutil.ToFloat64(pods); got != extra {
		t.Errorf("namespace=other counts %g, want %d", got, extra)
	}
	if n := testutil.CollectAndCount(v.vec); n != MaxUndeclaredPorts+1+MaxPods+1 {
		t.Errorf("%d series, want %d", n, MaxUndeclaredPorts+1+MaxPods+1)
	}
}

// TestViolationsRace feeds events while policies are applied, as the event
// reader and a reload do.
func TestViolationsRace(t *testing.T) {
	v := newViolations()
	c := testPolicy()
	v.applied(c, policy.ModeAudit) // the daemon applies before it reads events
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			v.applied(c, policy.ModeAudit)
		}
	}()
	o := c.Origins[0]
	for i := 0; i < 200; i++ {
		v.count(loader.Event{Reason: loader.ReasonOwner}, &o, nil)
	}
	<-done
	if got := testutil.ToFloat64(v.vec.WithLabelValues("r.yaml:3", "etcd", "owner", "audit", "unit+uid", "", "", "", "")); got != 200 {
		t.Errorf("counted %g, want 200", got)
	}
}
