package loader

import (
	"errors"
	"testing"

	"github.com/bindguard/bindguard/policy"
)

// fakeFS resolves a fixed set of cgroups.
type fakeFS map[string]uint64

func (f fakeFS) ID(rel string) (uint64, int, error) {
	id, ok := f[rel]
	if !ok {
		return 0, 0, errors.New("no such cgroup")
	}
	depth := 0
	for _, c := range rel {
		if c == '/' {
			depth++
		}
	}
	return id, depth, nil
}

func (f fakeFS) FindUnits(units []string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, unit := range units {
		for p := range f {
			if len(p) >= len(unit) && p[len(p)-len(unit):] == unit {
				out[unit] = append(out[unit], p)
			}
		}
	}
	return out, nil
}

func rule(e *Encoded, p policy.Protocol, port uint16) (bindguardBgValue, bool) {
	idx := ruleIndex(protoOf(p), port)
	for i := range e.RuleIdx {
		if e.RuleIdx[i] == idx {
			return e.RuleVals[i], true
		}
	}
	return bindguardBgValue{}, false
}

func hasOwner(e *Encoded, k bindguardBgKey) bool {
	for i := range e.OwnerKeys {
		if e.OwnerKeys[i] == k {
			return true
		}
	}
	return false
}

func TestEncode(t *testing.T) {
	fs := fakeFS{"/a": 10, "/a/b/c": 11, "/system.slice/x.service": 12}
	c := &policy.Compiled{
		Origins: []policy.Origin{{Process: "p0"}, {Process: "p1"}},
		Rules: []policy.Rule{
			{Port: 80, Protocol: policy.TCP},
			{Port: 81, Protocol: policy.TCP, Localhost: true, Audit: true, Origin: 1},
			{Port: 82, Protocol: policy.UDP, Removed: true},
			{Port: 83, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{"/a", "/a/b/c", "/missing"}, UIDs: []uint32{7}}},
			{Port: 84, Protocol: policy.TCP, Owners: policy.Owners{Units: []string{"x.service", "y.service"}, Cgroups: []string{"/system.slice/x.service"}}},
			{Port: 85, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{"/missing"}}},
		},
	}
	e, err := Encode(c, policy.ModeEnforce, 9, fs)
	if err != nil {
		t.Fatal(err)
	}
	if e.RuleIdx[0] != 0 || e.RuleVals[0].Origin != 9 || e.RuleVals[0].Flags != 0 {
		t.Errorf("meta = %d -> %+v", e.RuleIdx[0], e.RuleVals[0])
	}
	const (
		decl  = bindguardBgRuleFlagsBG_RULE_DECLARED
		owner = bindguardBgRuleFlagsBG_RULE_OWNERS
	)
	for _, tc := range []struct {
		name  string
		proto policy.Protocol
		port  uint16
		flags bindguardBgRuleFlags
		lo    uint8
		hi    uint8
		orig  uint32
	}{
		{"plain", policy.TCP, 80, decl, 1, 0, 1},
		{"localhost audit", policy.TCP, 81, decl | bindguardBgRuleFlagsBG_RULE_LOCALHOST | bindguardBgRuleFlagsBG_RULE_AUDIT, 1, 0, 2},
		{"removed", policy.UDP, 82, decl | bindguardBgRuleFlagsBG_RULE_REMOVED, 1, 0, 1},
		{"cgroup owners at depth 1 and 3, and a uid", policy.TCP, 83, decl | owner | bindguardBgRuleFlagsBG_RULE_UID_OWNERS, 1, 3, 1},
		{"unit and path naming one cgroup", policy.TCP, 84, decl | owner, 2, 2, 1},
		{"only unresolved owners: no level looked up", policy.TCP, 85, decl | owner, 1, 0, 1},
	} {
		v, ok := rule(e, tc.proto, tc.port)
		if !ok || v.Flags != uint8(tc.flags) || v.MinDepth != tc.lo || v.MaxDepth != tc.hi || v.Origin != tc.orig {
			t.Errorf("%s: %+v (found %v), want flags %d depth %d..%d origin %d", tc.name, v, ok, tc.flags, tc.lo, tc.hi, tc.orig)
		}
	}
	if idx := ruleIndex(protoOf(policy.UDP), 82); idx != 1<<16|82 {
		t.Errorf("udp rule index %d", idx)
	}
	for _, k := range []bindguardBgKey{
		{Kind: kindCgroup, Proto: protoTCP, Port: 83, Id: 10},
		{Kind: kindCgroup, Proto: protoTCP, Port: 83, Id: 11},
		{Kind: kindUID, Proto: protoTCP, Port: 83, Id: 7},
		{Kind: kindCgroup, Proto: protoTCP, Port: 84, Id: 12},
	} {
		if !hasOwner(e, k) {
			t.Errorf("missing owner entry %+v", k)
		}
	}
	// 3 owners of 83 + 1 owner of 84 (named twice, written once)
	if len(e.RuleIdx) != 7 || len(e.OwnerKeys) != 4 || e.Entries() != 11 {
		t.Errorf("%d rules, %d owners; want 7 (with meta) and 4", len(e.RuleIdx), len(e.OwnerKeys))
	}
	if len(e.Unresolved) != 3 { // /missing twice, y.service once
		t.Errorf("unresolved: %+v", e.Unresolved)
	}

	e, err = Encode(&policy.Compiled{}, policy.ModeAudit, 1, fs)
	if err != nil {
		t.Fatal(err)
	}
	if e.Entries() != 1 || e.RuleVals[0].Flags != uint8(bindguardBgMetaFlagsBG_META_AUDIT) {
		t.Errorf("empty policy must be the meta entry alone, in audit: %+v", e.RuleVals)
	}
}

func TestEncodeTooLarge(t *testing.T) {
	c := &policy.Compiled{Origins: []policy.Origin{{}}}
	for p := 1; p <= 65535; p++ {
		for _, proto := range []policy.Protocol{policy.TCP, policy.UDP} {
			c.Rules = append(c.Rules, policy.Rule{Port: uint16(p), Protocol: proto, Owners: policy.Owners{UIDs: []uint32{1, 2, 3}}})
		}
	}
	if _, err := Encode(c, policy.ModeEnforce, 1, fakeFS{}); err == nil {
		t.Error("a policy over the map's capacity encoded")
	}
}
