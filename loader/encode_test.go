package loader

import (
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/bindguard/bindguard/policy"
)

// podPortsNode is --pod-ports=require in bg_value.node.
const podPortsNode = uint8(bindguardBgMetaFlagsBG_META_POD_PORTS)

func ruleOf(e *encoded, p policy.Protocol, port uint16) (bindguardBgValue, bool) {
	idx := ruleIndex(protoOf(p), port)
	for i := range e.ruleIdx {
		if e.ruleIdx[i] == idx {
			return e.ruleVals[i], true
		}
	}
	return bindguardBgValue{}, false
}

func TestEncode(t *testing.T) {
	etcd := policy.Owners{Cgroups: []string{"/system.slice/etcd.service"}, UIDs: []uint32{0}}
	pods := policy.Owners{Pods: []policy.PodOwner{{Namespace: "kube-system", Labels: map[string]string{"component": "etcd"}}}}
	c := &policy.Compiled{
		Rules: []policy.Rule{
			{Port: 2379, Protocol: policy.TCP, Owners: etcd, Origin: 0},
			{Port: 2380, Protocol: policy.TCP, Owners: policy.Owners{UIDs: []uint32{0}, Cgroups: []string{"system.slice/etcd.service/"}}, Origin: 0},
			{Port: 9100, Protocol: policy.TCP, Localhost: true, Origin: 1},
			{Port: 10256, Protocol: policy.TCP, Removed: true, Audit: true, Origin: 2},
			{Port: 6443, Protocol: policy.UDP, Owners: pods, Origin: 3},
		},
	}
	e, err := encode(c, 9, encodeOptions{mode: policy.ModeEnforce, podPorts: true})
	if err != nil {
		t.Fatal(err)
	}
	if e.ruleIdx[0] != metaIndex || e.ruleVals[0].Generation != 9 {
		t.Errorf("meta entry = %d:%+v, want index 0 with the generation", e.ruleIdx[0], e.ruleVals[0])
	}
	if f := e.ruleVals[0].Node; f&uint8(bindguardBgMetaFlagsBG_META_AUDIT) != 0 || f&uint8(bindguardBgMetaFlagsBG_META_POD_PORTS) == 0 {
		t.Errorf("meta flags = %#x, want enforce with pod ports", f)
	}
	if m := e.ruleVals[0]; m.Origin != 0 || m.Flags != 0 || m != e.undeclared() {
		t.Errorf("meta entry = %+v, want an undeclared port's entry: generation and node flags alone", m)
	}
	a, _ := ruleOf(e, policy.TCP, 2379)
	b, _ := ruleOf(e, policy.TCP, 2380)
	if a.Set != b.Set || a.Flags != ruleDeclared|ruleOwners|ruleUIDOwners || a.Node&podPortsNode == 0 || a.Origin != 1 || a.Generation != 9 {
		t.Errorf("2379 = %+v, 2380 = %+v: equal owner lists (written differently) must share one set", a, b)
	}
	for i, v := range e.ruleVals {
		if v.Generation != 9 || v.Node != podPortsNode {
			t.Errorf("entry %d = %+v: every entry carries the generation and the node flags %#x", e.ruleIdx[i], v, podPortsNode)
		}
	}
	if u := e.undeclared(); u != (bindguardBgValue{Generation: 9, Node: podPortsNode}) {
		t.Errorf("undeclared entry = %+v, want the generation and node flags alone", u)
	}
	if len(e.pairKeys) != 0 || a.Uid != 0+1 {
		t.Errorf("uid pairs = %+v, rule uid = %d: want the one uid 0 in the rule itself", e.pairKeys, a.Uid)
	}
	two, err := encode(&policy.Compiled{Rules: []policy.Rule{{Port: 1, Protocol: policy.TCP, Owners: policy.Owners{UIDs: []uint32{0, 7}}}}}, 1, encodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r := two.ruleVals[1]; r.Node&podPortsNode != 0 || r.Generation != 1 {
		t.Errorf("rule %+v without pod ports in generation 1: want no BG_META_POD_PORTS, generation 1", r)
	}
	if len(two.pairKeys) != 2 || two.ruleVals[1].Uid != 0 {
		t.Errorf("two uids: pairs %+v, rule uid %d: want a pair each and none in the rule", two.pairKeys, two.ruleVals[1].Uid)
	}
	if got := e.byPath["/system.slice/etcd.service"]; !got.has(int(a.Set)) {
		t.Errorf("etcd.service is not a principal of set %d", a.Set)
	}
	p, _ := ruleOf(e, policy.UDP, 6443)
	if p.Set == a.Set || p.Flags&rulePodOwners == 0 || p.Flags&ruleUIDOwners != 0 {
		t.Errorf("6443/udp = %+v: want its own set, pod owners, no uid", p)
	}
	pod := &policy.Pod{Namespace: "kube-system", Name: "etcd-n1", Labels: map[string]string{"component": "etcd", "tier": "cp"}}
	if !e.podSets(pod).has(int(p.Set)) || e.podSets(&policy.Pod{Namespace: "default", Labels: pod.Labels}).has(int(p.Set)) {
		t.Error("pod sets: want the kube-system etcd pod in the set, a default-namespace pod out of it")
	}
	if r, _ := ruleOf(e, policy.TCP, 10256); r.Flags != ruleDeclared|uint8(bindguardBgRuleFlagsBG_RULE_REMOVED|bindguardBgRuleFlagsBG_RULE_AUDIT) || r.Node&podPortsNode == 0 {
		t.Errorf("10256 flags = %#x", r.Flags)
	}
	if r, _ := ruleOf(e, policy.TCP, 9100); r.Flags != ruleDeclared|uint8(bindguardBgRuleFlagsBG_RULE_LOCALHOST) || r.Node&podPortsNode == 0 {
		t.Errorf("9100 flags = %#x", r.Flags)
	}

	empty, err := encode(&policy.Compiled{}, 1, encodeOptions{mode: policy.ModeAudit})
	if err != nil {
		t.Fatal(err)
	}
	if empty.entries() != 1 || empty.ruleVals[0].Node&uint8(bindguardBgMetaFlagsBG_META_AUDIT) == 0 {
		t.Errorf("empty policy = %+v, want the audit meta entry alone (deny-all, never allow-all)", empty.ruleVals)
	}
	if u := empty.undeclared(); u.Generation != 1 || u.Node&uint8(bindguardBgMetaFlagsBG_META_AUDIT) == 0 || u.Flags != 0 {
		t.Errorf("undeclared entry in audit mode = %+v: want generation 1, audit, not declared", u)
	}
	if _, err := encode(&policy.Compiled{}, 0, encodeOptions{}); err == nil {
		t.Error("generation 0 encoded: the kernel would read every entry as no policy")
	}
}

// Lists of uids alone take no bit of the bitmap: 65,536 of them encode.
func TestEncodeManyUIDLists(t *testing.T) {
	c := &policy.Compiled{}
	for i := 0; i < 60000; i++ {
		c.Rules = append(c.Rules, policy.Rule{Port: uint16(i + 1), Protocol: policy.TCP, Owners: policy.Owners{UIDs: []uint32{uint32(i)}}})
	}
	e, err := encode(c, 1, encodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := ruleOf(e, policy.TCP, 60000); int(v.Set) < OwnerSets || v.Uid != 59999+1 {
		t.Errorf("rule 60000 = %+v: want a set number past the bitmap and its uid in the rule", v)
	}
}

func TestEncodeTooManySets(t *testing.T) {
	c := &policy.Compiled{}
	for i := 0; i <= OwnerSets; i++ {
		c.Rules = append(c.Rules, policy.Rule{Port: uint16(i + 1), Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{fmt.Sprintf("/c%d", i)}}})
	}
	_, err := encode(c, 1, encodeOptions{})
	if err == nil || !strings.Contains(err.Error(), "distinct owner lists") {
		t.Errorf("encode of %d owner sets: %v, want a refusal", OwnerSets+1, err)
	}
}

// The kernel's inherit() and inheritSlot must agree: SPAWN_PENDING turns
// into PENDING (and drops POD), everything else is copied.
func TestInheritSlot(t *testing.T) {
	p := bindguardBgMemberSlot{Generation: 3, Flags: memberPod | memberSpawnPending, Pod: 7}
	p.Bits[1] = 5
	c := inheritSlot(p)
	if c.Flags != memberPending || c.Bits[1] != 5 || c.Generation != 3 {
		t.Errorf("inherit of a pod parent = %+v", c)
	}
	p.Flags = memberPod
	if c := inheritSlot(p); c != p {
		t.Errorf("inherit of a resolved pod = %+v, want a copy", c)
	}
}

func TestPlanTops(t *testing.T) {
	plan := memberPlan{}
	plan.add("/a", memberOwn{})
	plan.add("/a/b", memberOwn{})
	plan.add("/ab", memberOwn{})
	plan.add("/a.b", memberOwn{})   // sorts between /a and /a/b
	plan.add("/a/b/c", memberOwn{}) // below /a, whatever sorts between
	plan.add("/c/d", memberOwn{flags: memberSpawnPending, override: true})
	plan.add("/c/d", memberOwn{bits: setBits{1}})
	got := strings.Join(plan.tops(), " ")
	if got != "/a /a.b /ab /c/d" {
		t.Errorf("tops = %q", got)
	}
	if o := plan["/c/d"]; o.flags != memberSpawnPending || o.bits[0] != 1 || !o.override {
		t.Errorf("merged principal = %+v", o)
	}
}

// The sizes the header states for the structs shared with the kernel.
func TestContractSizes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		got, want uintptr
	}{
		{"bg_event", unsafe.Sizeof(bindguardBgEvent{}), 96},
		{"bg_cgroup_event", unsafe.Sizeof(bindguardBgCgroupEvent{}), 288},
		{"bg_key", unsafe.Sizeof(bindguardBgKey{}), 16},
		{"bg_value", unsafe.Sizeof(bindguardBgValue{}), 16},
		{"bg_member_slot", unsafe.Sizeof(bindguardBgMemberSlot{}), 16 + 8*uintptr(setWords)},
		{"bg_member", unsafe.Sizeof(bindguardBgMember{}), 2 * (16 + 8*uintptr(setWords))},
	} {
		if tc.got != tc.want {
			t.Errorf("sizeof(%s) = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}
