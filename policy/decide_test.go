package policy

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// deepLevels is deeper than any limit: owners match at any depth.
const deepLevels = 20

// decideFixture is a compiled policy with one rule per branch of Decide.
func decideFixture() *Compiled {
	deep := "/d" + strings.Repeat("/d", deepLevels) // deeper than the 16 levels the kernel once looked at
	origins := make([]Origin, 10)
	for i := range origins {
		origins[i] = Origin{Pos: Pos{File: "reg.yaml", Line: 10 + i}, Process: "p" + string(rune('0'+i))}
	}
	origins[4].Removed = true
	return &Compiled{
		Origins: origins,
		Rules: []Rule{ // sorted by protocol, then port
			{Port: 100, Protocol: TCP, Origin: 0},
			{Port: 101, Protocol: TCP, Localhost: true, Origin: 1},
			{Port: 102, Protocol: TCP, Owners: Owners{Cgroups: []string{"/a"}, UIDs: []uint32{1000}}, Origin: 2},
			{Port: 103, Protocol: TCP, Owners: Owners{Units: []string{"x.service"}}, Origin: 3},
			{Port: 104, Protocol: TCP, Removed: true, Origin: 4},
			{Port: 105, Protocol: TCP, Audit: true, Owners: Owners{Cgroups: []string{"/a"}}, Origin: 5},
			{Port: 106, Protocol: TCP, Owners: Owners{Cgroups: []string{deep}}, Origin: 7},
			{Port: 107, Protocol: TCP, Owners: Owners{Cgroups: []string{"/gone", "/a/b"}}, Origin: 8},
			{Port: 65535, Protocol: TCP, Origin: 9},
			{Port: 100, Protocol: UDP, Localhost: true, Owners: Owners{Cgroups: []string{"/a/b"}}, Origin: 6},
		},
	}
}

func TestDecide(t *testing.T) {
	c := decideFixture()
	deep := "/d" + strings.Repeat("/d", deepLevels)
	deepSlices := "/d.slice" + strings.Repeat("/d.slice", deepLevels-1)
	exists := func(p string) bool { return p != "/gone" }
	units := map[string][]string{"x.service": {"/system.slice/x.service", "/user.slice/u/x.service", deepSlices + "/x.service"}}
	findUnit := func(u string) []string { return units[u] }

	type want struct {
		verdict Verdict
		reason  Reason
		origin  int // index into c.Origins, -1 for none
	}
	allow := func(origin int) want { return want{Allow, "", origin} }
	deny := func(reason Reason, origin int) want { return want{Deny, reason, origin} }
	audit := func(reason Reason, origin int) want { return want{Audit, reason, origin} }

	a4 := func(port uint16, proto Protocol, addr string) BindAttempt {
		return BindAttempt{Port: port, Protocol: proto, Family: 4, Address: netip.MustParseAddr(addr), Cgroup: "/z", HostNetns: true}
	}
	a6 := func(port uint16, proto Protocol, addr string) BindAttempt {
		a := a4(port, proto, addr)
		a.Family = 6
		return a
	}
	in := func(a BindAttempt, cg string) BindAttempt { a.Cgroup = cg; return a }
	uid := func(a BindAttempt, u uint32) BindAttempt { a.UID = u; return a }
	netns := func(a BindAttempt) BindAttempt { a.HostNetns = false; return a }

	tests := []struct {
		name string
		mode Mode
		a    BindAttempt
		opts DecideOptions
		want want
	}{
		// 1. port 0
		{"port 0 undeclared", ModeEnforce, a4(0, TCP, "0.0.0.0"), DecideOptions{}, allow(-1)},
		{"port 0 udp v6", ModeEnforce, a6(0, UDP, "::"), DecideOptions{}, allow(-1)},
		// 2. protocol
		{"other protocol", ModeEnforce, a4(9999, Protocol(0), "0.0.0.0"), DecideOptions{}, allow(-1)},
		{"sctp-like protocol", ModeEnforce, a4(9999, Protocol(3), "0.0.0.0"), DecideOptions{}, allow(-1)},
		// 3. network namespace
		{"other netns undeclared", ModeEnforce, netns(a4(9999, TCP, "0.0.0.0")), DecideOptions{}, allow(-1)},
		{"other netns removed", ModeEnforce, netns(a4(104, TCP, "0.0.0.0")), DecideOptions{}, allow(-1)},
		{"other netns judged with all-netns", ModeEnforce, netns(a4(9999, TCP, "0.0.0.0")), DecideOptions{AllNetns: true}, deny(ReasonUndeclared, -1)},
		{"other netns owner with all-netns", ModeEnforce, netns(a4(102, TCP, "0.0.0.0")), DecideOptions{AllNetns: true}, deny(ReasonOwner, 2)},
		// 4. undeclared
		{"undeclared", ModeEnforce, a4(9999, TCP, "0.0.0.0"), DecideOptions{}, deny(ReasonUndeclared, -1)},
		{"undeclared audit mode", ModeAudit, a4(9999, TCP, "0.0.0.0"), DecideOptions{}, audit(ReasonUndeclared, -1)},
		{"undeclared empty mode audits", Mode(""), a4(9999, TCP, "0.0.0.0"), DecideOptions{}, audit(ReasonUndeclared, -1)},
		{"tcp rule does not cover udp", ModeEnforce, a4(101, UDP, "127.0.0.1"), DecideOptions{}, deny(ReasonUndeclared, -1)},
		{"udp rule does not cover tcp", ModeEnforce, a4(99, TCP, "0.0.0.0"), DecideOptions{}, deny(ReasonUndeclared, -1)},
		{"port 65535", ModeEnforce, a6(65535, TCP, "::"), DecideOptions{}, allow(9)},
		{"port 65534", ModeEnforce, a6(65534, TCP, "::"), DecideOptions{}, deny(ReasonUndeclared, -1)},
		// 5. removed
		{"removed", ModeEnforce, a4(104, TCP, "0.0.0.0"), DecideOptions{}, deny(ReasonRemoved, 4)},
		{"removed on loopback as root", ModeEnforce, a4(104, TCP, "127.0.0.1"), DecideOptions{}, deny(ReasonRemoved, 4)},
		{"removed audit mode", ModeAudit, a4(104, TCP, "0.0.0.0"), DecideOptions{}, audit(ReasonRemoved, 4)},
		// 6. owners
		{"owner cgroup itself", ModeEnforce, in(a4(102, TCP, "0.0.0.0"), "/a"), DecideOptions{}, allow(2)},
		{"owner cgroup below", ModeEnforce, in(a4(102, TCP, "0.0.0.0"), "/a/b/c"), DecideOptions{}, allow(2)},
		{"owner cgroup unclean task path", ModeEnforce, in(a4(102, TCP, "0.0.0.0"), "a/b/"), DecideOptions{}, allow(2)},
		{"sibling with owner as prefix", ModeEnforce, in(a4(102, TCP, "0.0.0.0"), "/ab"), DecideOptions{}, deny(ReasonOwner, 2)},
		{"parent of owner", ModeEnforce, in(a4(102, TCP, "0.0.0.0"), "/"), DecideOptions{}, deny(ReasonOwner, 2)},
		{"root as empty path", ModeEnforce, in(a4(102, TCP, "0.0.0.0"), ""), DecideOptions{}, deny(ReasonOwner, 2)},
		{"other cgroup", ModeEnforce, a4(102, TCP, "0.0.0.0"), DecideOptions{}, deny(ReasonOwner, 2)},
		{"owner uid", ModeEnforce, uid(a4(102, TCP, "0.0.0.0"), 1000), DecideOptions{}, allow(2)},
		{"other uid", ModeEnforce, uid(a4(102, TCP, "0.0.0.0"), 1001), DecideOptions{}, deny(ReasonOwner, 2)},
		{"owner violation audit mode", ModeAudit, a4(102, TCP, "0.0.0.0"), DecideOptions{}, audit(ReasonOwner, 2)},
		{"audit-only rule in enforce mode", ModeEnforce, a4(105, TCP, "0.0.0.0"), DecideOptions{}, audit(ReasonOwner, 5)},
		{"audit-only rule, owner", ModeEnforce, in(a4(105, TCP, "0.0.0.0"), "/a"), DecideOptions{}, allow(5)},
		{"owner at any depth", ModeEnforce, in(a4(106, TCP, "0.0.0.0"), deep), DecideOptions{}, allow(7)},
		{"owner at any depth, task below", ModeEnforce, in(a4(106, TCP, "0.0.0.0"), deep+"/e"), DecideOptions{}, allow(7)},
		{"missing owner cgroup never matches", ModeEnforce, in(a4(107, TCP, "0.0.0.0"), "/gone/x"), DecideOptions{Exists: exists}, deny(ReasonOwner, 8)},
		{"missing owner, another one resolves", ModeEnforce, in(a4(107, TCP, "0.0.0.0"), "/a/b"), DecideOptions{Exists: exists}, allow(8)},
		{"nil Exists: every owner exists", ModeEnforce, in(a4(107, TCP, "0.0.0.0"), "/gone/x"), DecideOptions{}, allow(8)},
		// units
		{"unit found", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service"), DecideOptions{FindUnit: findUnit}, allow(3)},
		{"unit found, below", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service/app/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p"), DecideOptions{FindUnit: findUnit}, allow(3)},
		{"unit found in a delegated subtree is not the unit", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/user.slice/u/x.service/app"), DecideOptions{FindUnit: findUnit}, deny(ReasonOwner, 3)},
		{"user manager's look-alike", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/user.slice/user-1000.slice/user@1000.service/app.slice/x.service"), DecideOptions{}, deny(ReasonOwner, 3)},
		{"nested slices", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/system-x.slice/x.service"), DecideOptions{}, allow(3)},
		{"unit at the unit root", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/t/x.service"), DecideOptions{UnitRoot: "/t"}, allow(3)},
		{"unit below the unit root", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/t/system.slice/x.service/c"), DecideOptions{UnitRoot: "/t"}, allow(3)},
		{"unit outside the unit root", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service"), DecideOptions{UnitRoot: "/t"}, deny(ReasonOwner, 3)},
		{"unit not found there", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/other/x.service"), DecideOptions{FindUnit: findUnit}, deny(ReasonOwner, 3)},
		{"unit found deep in slices", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), deepSlices+"/x.service"), DecideOptions{FindUnit: findUnit}, allow(3)},
		{"unit found nowhere", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service"), DecideOptions{FindUnit: func(string) []string { return nil }}, deny(ReasonOwner, 3)},
		{"unit by name without FindUnit", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service/app"), DecideOptions{}, allow(3)},
		{"unit below a plain directory without FindUnit", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/other/x.service/app"), DecideOptions{}, deny(ReasonOwner, 3)},
		{"unit name as prefix without FindUnit", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service2"), DecideOptions{}, deny(ReasonOwner, 3)},
		{"unit without FindUnit, cgroup gone", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), "/system.slice/x.service"), DecideOptions{Exists: func(string) bool { return false }}, deny(ReasonOwner, 3)},
		{"unit without FindUnit deep in slices", ModeEnforce, in(a4(103, TCP, "0.0.0.0"), deepSlices+"/x.service"), DecideOptions{}, allow(3)},
		// 7. localhost
		{"localhost 127.0.0.1", ModeEnforce, a4(101, TCP, "127.0.0.1"), DecideOptions{}, allow(1)},
		{"localhost 127.1.2.3", ModeEnforce, a4(101, TCP, "127.1.2.3"), DecideOptions{}, allow(1)},
		{"localhost 0.0.0.0", ModeEnforce, a4(101, TCP, "0.0.0.0"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost 128.0.0.1", ModeEnforce, a4(101, TCP, "128.0.0.1"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost 126.255.255.255", ModeEnforce, a4(101, TCP, "126.255.255.255"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost ::1", ModeEnforce, a6(101, TCP, "::1"), DecideOptions{}, allow(1)},
		{"localhost ::", ModeEnforce, a6(101, TCP, "::"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost ::2", ModeEnforce, a6(101, TCP, "::2"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost v4-mapped loopback", ModeEnforce, a6(101, TCP, "::ffff:127.0.0.1"), DecideOptions{}, allow(1)},
		{"localhost v4-mapped 127.255.0.9", ModeEnforce, a6(101, TCP, "::ffff:127.255.0.9"), DecideOptions{}, allow(1)},
		{"localhost v4-mapped any", ModeEnforce, a6(101, TCP, "::ffff:0.0.0.0"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost v4-mapped other", ModeEnforce, a6(101, TCP, "::ffff:10.0.0.1"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost v4-compatible is not loopback", ModeEnforce, a6(101, TCP, "::127.0.0.1"), DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost invalid address", ModeEnforce, BindAttempt{Port: 101, Protocol: TCP, HostNetns: true}, DecideOptions{}, deny(ReasonAddress, 1)},
		{"localhost audit mode", ModeAudit, a4(101, TCP, "0.0.0.0"), DecideOptions{}, audit(ReasonAddress, 1)},
		// owners come before the address
		{"owner and address both wrong: owner", ModeEnforce, a4(100, UDP, "0.0.0.0"), DecideOptions{}, deny(ReasonOwner, 6)},
		{"owner right, address wrong", ModeEnforce, in(a4(100, UDP, "0.0.0.0"), "/a/b"), DecideOptions{}, deny(ReasonAddress, 6)},
		{"owner right, loopback", ModeEnforce, in(a6(100, UDP, "::1"), "/a/b/c"), DecideOptions{}, allow(6)},
		{"owner wrong, loopback", ModeEnforce, in(a4(100, UDP, "127.0.0.1"), "/a"), DecideOptions{}, deny(ReasonOwner, 6)},
		// 8. allow
		{"declared any address", ModeEnforce, a4(100, TCP, "0.0.0.0"), DecideOptions{}, allow(0)},
		{"declared v6", ModeEnforce, a6(100, TCP, "::"), DecideOptions{}, allow(0)},
		{"declared audit mode", ModeAudit, a4(100, TCP, "192.0.2.1"), DecideOptions{}, allow(0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Decide(c, tt.mode, tt.a, tt.opts)
			if got.Verdict != tt.want.verdict || got.Reason != tt.want.reason {
				t.Errorf("Decide = %s/%q, want %s/%q", got.Verdict, got.Reason, tt.want.verdict, tt.want.reason)
			}
			if tt.want.origin < 0 {
				if got.Rule != nil {
					t.Errorf("Rule = %+v, want none", *got.Rule)
				}
			} else if got.Rule != &c.Origins[tt.want.origin] {
				t.Errorf("Rule = %v, want origin %d (%v)", got.Rule, tt.want.origin, c.Origins[tt.want.origin])
			}
			if got.Violation() != (tt.want.reason != "") {
				t.Errorf("Violation() = %v", got.Violation())
			}
		})
	}
}

// TestDecideCompiled runs Decide on a registry compiled from YAML: ranges,
// merged entries of one process and a removed port.
func TestDecideCompiled(t *testing.T) {
	const doc = `apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - {port: "9000-9009", protocol: [tcp, udp], process: ranged}
  - {port: 9100, process: merged, bind: localhost, owners: [{cgroup: /a}]}
  - {port: 9100, process: merged, mode: audit, owners: [{uid: 7}]}
removed:
  - {port: 9200, process: old, removed: "1.0"}
`
	reg, err := Parse("r.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	at := func(port uint16, proto Protocol, cg string, uid uint32, addr string) BindAttempt {
		return BindAttempt{Port: port, Protocol: proto, Family: 4, Address: netip.MustParseAddr(addr), Cgroup: cg, UID: uid, HostNetns: true}
	}
	tests := []struct {
		a       BindAttempt
		verdict Verdict
		reason  Reason
		line    int
	}{
		{at(8999, TCP, "/", 0, "0.0.0.0"), Deny, ReasonUndeclared, 0},
		{at(9000, TCP, "/", 0, "0.0.0.0"), Allow, "", 4},
		{at(9009, UDP, "/", 0, "0.0.0.0"), Allow, "", 4},
		{at(9010, UDP, "/", 0, "0.0.0.0"), Deny, ReasonUndeclared, 0},
		// merged: owners are the union, localhost only if both say so (one does not), audit if either
		{at(9100, TCP, "/a/x", 0, "0.0.0.0"), Allow, "", 5},
		{at(9100, TCP, "/b", 7, "0.0.0.0"), Allow, "", 5},
		{at(9100, TCP, "/b", 0, "127.0.0.1"), Audit, ReasonOwner, 5},
		{at(9200, TCP, "/a", 0, "0.0.0.0"), Deny, ReasonRemoved, 8},
		{at(9200, UDP, "/a", 0, "0.0.0.0"), Deny, ReasonUndeclared, 0},
	}
	for _, tt := range tests {
		got := Decide(c, ModeEnforce, tt.a, DecideOptions{})
		line := 0
		if got.Rule != nil {
			line = got.Rule.Pos.Line
		}
		if got.Verdict != tt.verdict || got.Reason != tt.reason || line != tt.line {
			t.Errorf("%d/%s from %s uid %d on %s: got %s/%q line %d, want %s/%q line %d",
				tt.a.Port, tt.a.Protocol, tt.a.Cgroup, tt.a.UID, tt.a.Address, got.Verdict, got.Reason, line, tt.verdict, tt.reason, tt.line)
		}
	}
}

func TestInCgroup(t *testing.T) {
	tests := []struct {
		path, ancestor string
		want           bool
	}{
		{"/a", "/a", true},
		{"/a/b", "/a", true},
		{"/a/b/c", "/a/b", true},
		{"/ab", "/a", false},
		{"/a", "/a/b", false},
		{"/", "/a", false},
		{"/anything", "/", true},
		{"", "", true},
		{"/a/", "/a", true},
		{"a/b", "/a", true},
		{"/a//b", "/a/b", true},
	}
	for _, tt := range tests {
		if got := InCgroup(tt.path, tt.ancestor); got != tt.want {
			t.Errorf("InCgroup(%q, %q) = %v, want %v", tt.path, tt.ancestor, got, tt.want)
		}
	}
}

// TestDecideFixtureSorted guards the fixture: Lookup needs sorted rules.
func TestDecideFixtureSorted(t *testing.T) {
	c := decideFixture()
	if !slices.IsSortedFunc(c.Rules, func(a, b Rule) int {
		if a.Protocol != b.Protocol {
			return int(a.Protocol) - int(b.Protocol)
		}
		return int(a.Port) - int(b.Port)
	}) {
		t.Fatal("fixture rules are not sorted by protocol, then port")
	}
}

func TestDecidePods(t *testing.T) {
	etcd := PodOwner{Namespace: "kube-system", Labels: map[string]string{"component": "etcd"}}
	c := &Compiled{
		Origins: []Origin{{Process: "etcd"}, {Process: "exporter"}, {Process: "agent"}, {Process: "any"}},
		Rules: []Rule{
			{Port: 2379, Protocol: TCP, Owners: Owners{Pods: []PodOwner{etcd}, UIDs: []uint32{7}}, Origin: 0},
			{Port: 9100, Protocol: TCP, Owners: Owners{Pods: []PodOwner{{Namespace: "monitoring", Container: "exporter"}}}, Origin: 1},
			{Port: 9200, Protocol: TCP, Owners: Owners{UIDs: []uint32{7}}, Origin: 2},
			{Port: 9300, Protocol: TCP, Localhost: true, Owners: Owners{Pods: []PodOwner{etcd}}, Origin: 3},
			{Port: 9400, Protocol: TCP, Origin: 3},
			{Port: 9401, Protocol: TCP, Audit: true, Origin: 3},
			{Port: 9402, Protocol: TCP, Localhost: true, Origin: 3},
			{Port: 9400, Protocol: UDP, Origin: 3},
		},
	}
	etcdPod := &Pod{Namespace: "kube-system", Name: "etcd-cp1", Labels: map[string]string{"component": "etcd", "tier": "control-plane"},
		Container: "etcd", Ports: []PodPort{{2379, TCP}, {9400, UDP}, {9402, TCP}}, PortsKnown: true}
	with := func(p Pod, f func(*Pod)) *Pod { f(&p); return &p }
	pending := &Pod{Pending: true}
	exporter := &Pod{Namespace: "monitoring", Name: "ne-1", Container: "exporter", Ports: []PodPort{{9100, TCP}, {9400, TCP}}, PortsKnown: true}
	sidecar := with(*exporter, func(p *Pod) { p.Container = "kube-rbac-proxy" })
	require := DecideOptions{PodPorts: PodPortsRequire}

	tests := []struct {
		name    string
		mode    Mode
		port    uint16
		proto   Protocol
		addr    string
		uid     uint32
		pod     *Pod
		opts    DecideOptions
		verdict Verdict
		reason  Reason
	}{
		{"pod owner", ModeEnforce, 2379, TCP, "0.0.0.0", 0, etcdPod, DecideOptions{}, Allow, ""},
		{"pod of another namespace", ModeEnforce, 2379, TCP, "0.0.0.0", 0, with(*etcdPod, func(p *Pod) { p.Namespace = "default" }), DecideOptions{}, Deny, ReasonOwner},
		{"pod without the label", ModeEnforce, 2379, TCP, "0.0.0.0", 0, with(*etcdPod, func(p *Pod) { p.Labels = map[string]string{"component": "etcd2"} }), DecideOptions{}, Deny, ReasonOwner},
		{"pod owner, audit mode", ModeAudit, 2379, TCP, "0.0.0.0", 0, with(*etcdPod, func(p *Pod) { p.Namespace = "default" }), DecideOptions{}, Audit, ReasonOwner},
		{"host process is no pod owner", ModeEnforce, 2379, TCP, "0.0.0.0", 0, nil, DecideOptions{}, Deny, ReasonOwner},
		{"uid owner beside pod owners", ModeEnforce, 2379, TCP, "0.0.0.0", 7, nil, DecideOptions{}, Allow, ""},
		{"container owner", ModeEnforce, 9100, TCP, "0.0.0.0", 0, exporter, DecideOptions{}, Allow, ""},
		{"other container of the pod", ModeEnforce, 9100, TCP, "0.0.0.0", 0, sidecar, DecideOptions{}, Deny, ReasonOwner},
		{"pending pod, pod owners: audited in enforce", ModeEnforce, 2379, TCP, "0.0.0.0", 0, pending, DecideOptions{}, Audit, ReasonPodPending},
		{"pending pod matching a uid owner", ModeEnforce, 2379, TCP, "0.0.0.0", 7, pending, DecideOptions{}, Allow, ""},
		{"pending pod, no pod owners: owner", ModeEnforce, 9200, TCP, "0.0.0.0", 0, pending, DecideOptions{}, Deny, ReasonOwner},
		{"pending pod, undeclared", ModeEnforce, 9999, TCP, "0.0.0.0", 0, pending, DecideOptions{}, Deny, ReasonUndeclared},
		{"pending pod before the address", ModeEnforce, 9300, TCP, "0.0.0.0", 0, pending, DecideOptions{}, Audit, ReasonPodPending},
		{"pod owner, wrong address", ModeEnforce, 9300, TCP, "0.0.0.0", 0, etcdPod, DecideOptions{}, Deny, ReasonAddress},
		// 8. declared ports
		{"ignore: undeclared port allowed", ModeEnforce, 9400, TCP, "0.0.0.0", 0, etcdPod, DecideOptions{}, Allow, ""},
		{"require: declared", ModeEnforce, 9400, UDP, "0.0.0.0", 0, etcdPod, require, Allow, ""},
		{"require: other protocol", ModeEnforce, 9400, TCP, "0.0.0.0", 0, etcdPod, require, Deny, ReasonPodUndeclared},
		{"require: audit mode", ModeAudit, 9400, TCP, "0.0.0.0", 0, etcdPod, require, Audit, ReasonPodUndeclared},
		{"require: audit-only rule", ModeEnforce, 9401, TCP, "0.0.0.0", 0, etcdPod, require, Audit, ReasonPodUndeclared},
		{"require: sibling's port", ModeEnforce, 9400, TCP, "0.0.0.0", 0, sidecar, require, Allow, ""},
		{"require: host process", ModeEnforce, 9401, TCP, "0.0.0.0", 0, nil, require, Allow, ""},
		{"require: ports not known yet", ModeEnforce, 9401, TCP, "0.0.0.0", 0, with(*etcdPod, func(p *Pod) { p.PortsKnown = false }), require, Audit, ReasonPodPending},
		{"require: ports not known, but declared", ModeEnforce, 9400, UDP, "0.0.0.0", 0, with(*etcdPod, func(p *Pod) { p.PortsKnown = false }), require, Allow, ""},
		{"require: pending pod", ModeEnforce, 9400, TCP, "0.0.0.0", 0, pending, require, Audit, ReasonPodPending},
		{"require: registry first", ModeEnforce, 9999, TCP, "0.0.0.0", 0, etcdPod, require, Deny, ReasonUndeclared},
		{"require: address before declaration", ModeEnforce, 9402, TCP, "0.0.0.0", 0, exporter, require, Deny, ReasonAddress},
		{"require: declared, loopback", ModeEnforce, 9402, TCP, "127.0.0.1", 0, etcdPod, require, Allow, ""},
		{"require: owner before declaration", ModeEnforce, 9100, TCP, "0.0.0.0", 0, with(*sidecar, func(p *Pod) { p.Ports = nil }), require, Deny, ReasonOwner},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := BindAttempt{Port: tt.port, Protocol: tt.proto, Family: FamilyIPv4, Address: netip.MustParseAddr(tt.addr),
				Cgroup: "/kubepods/besteffort/pod1/c", UID: tt.uid, HostNetns: true, Pod: tt.pod}
			got := Decide(c, tt.mode, a, tt.opts)
			if got.Verdict != tt.verdict || got.Reason != tt.reason {
				t.Errorf("Decide = %s/%q, want %s/%q", got.Verdict, got.Reason, tt.verdict, tt.reason)
			}
		})
	}
}

func TestVocabulary(t *testing.T) {
	if got := joinNames(Reasons()); got != "undeclared, removed, owner, pod-pending, address, pod-undeclared" {
		t.Errorf("Reasons() = %s", got)
	}
	for _, r := range Reasons() {
		if got, err := ParseReason(r.String()); err != nil || got != r {
			t.Errorf("ParseReason(%q) = %q, %v", r, got, err)
		}
	}
	if _, err := ParseReason("none"); err == nil {
		t.Error("ParseReason(none): no error")
	}
	for _, tt := range []struct {
		in   string
		want PodPortsMode
		err  bool
	}{{"ignore", PodPortsIgnore, false}, {"require", PodPortsRequire, false}, {"", "", true}, {"Require", "", true}} {
		got, err := ParsePodPortsMode(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParsePodPortsMode(%q) = %q, %v", tt.in, got, err)
		}
	}
	if PodPortsMode("").String() != "ignore" || FamilyIPv6.String() != "ipv6" || Family(9).String() != "family(9)" {
		t.Error("names")
	}
}
