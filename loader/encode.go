package loader

import (
	"fmt"
	"slices"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// Exported names for the contract constants bpf2go generated from bpf/bindguard.h.
const (
	LayoutVersion      = uint32(bindguardBgLimitsBG_LAYOUT_VERSION)
	OwnersMaxEntries   = int(bindguardBgLimitsBG_OWNERS_MAX_ENTRIES)
	MaxCgroupDepth     = int(bindguardBgLimitsBG_MAX_CGROUP_DEPTH)
	rulesEntries       = uint32(bindguardBgLimitsBG_RULES_ENTRIES)
	metaIndex          = uint32(0)
	ruleDeclared       = uint8(bindguardBgRuleFlagsBG_RULE_DECLARED)
	ruleOwners         = uint8(bindguardBgRuleFlagsBG_RULE_OWNERS)
	ruleUIDOwners      = uint8(bindguardBgRuleFlagsBG_RULE_UID_OWNERS)
	kindCgroup         = uint8(bindguardBgKindBG_KIND_CGROUP)
	kindUID            = uint8(bindguardBgKindBG_KIND_UID)
	protoTCP, protoUDP = uint8(bindguardBgProtoBG_PROTO_TCP), uint8(bindguardBgProtoBG_PROTO_UDP)
)

// The policy package states its limits without importing the loader; they
// must fit the kernel's.
var (
	_ = [1]struct{}{}[OwnersMaxEntries-policy.MaxMapEntries]
	_ = [1]struct{}{}[MaxCgroupDepth-policy.MaxCgroupDepth]
)

// ruleIndex is bg_rule_index from bpf/bindguard.h.
func ruleIndex(proto uint8, port uint16) uint32 { return uint32(proto-1)<<16 | uint32(port) }

// Resolver finds the cgroups that registry owners name. *cgroups.FS is one.
type Resolver interface {
	ID(rel string) (id uint64, depth int, err error)
	FindUnits(units []string) (map[string][]string, error)
}

// Unresolved is an owner whose cgroup does not exist (yet); the rule is in
// force without it.
type Unresolved struct {
	Port     uint16
	Protocol policy.Protocol
	Owner    string // "cgroup /a/b" or "unit x.service"
	Err      error
}

// Encoded is a compiled policy in the kernel's encoding, ready to write:
// the rules array entries (the meta entry first) and the owners map entries.
type Encoded struct {
	RuleIdx    []uint32
	RuleVals   []bindguardBgValue
	OwnerKeys  []bindguardBgKey
	OwnerVals  []bindguardBgValue
	Rules      int
	Unresolved []Unresolved
	owners     ownerIndex
}

// Entries is the number of map entries the policy holds.
func (e *Encoded) Entries() int { return len(e.RuleIdx) + len(e.OwnerKeys) }

// ownerRef is one port whose owners include a cgroup path or unit.
type ownerRef struct {
	proto uint8
	port  uint16
	value bindguardBgValue // the owner entry's value
}

// ownerIndex says which rules a cgroup appearing later must join, and which
// entries a cgroup going away must leave.
type ownerIndex struct {
	byPath map[string][]ownerRef
	byUnit map[string][]ownerRef
	byID   map[uint64][]bindguardBgKey
}

func newOwnerIndex() ownerIndex {
	return ownerIndex{byPath: map[string][]ownerRef{}, byUnit: map[string][]ownerRef{}, byID: map[uint64][]bindguardBgKey{}}
}

func protoOf(p policy.Protocol) uint8 {
	switch p {
	case policy.TCP:
		return protoTCP
	case policy.UDP:
		return protoUDP
	}
	panic(fmt.Sprintf("loader: unknown protocol %d", p))
}

// Encode turns a compiled policy into map entries: the meta entry, one rule
// per (port, protocol) and one owner entry per owner. Owner cgroups are
// resolved to ids through r; an owner whose cgroup does not exist is reported
// in Unresolved and left out (its port stays owner-restricted).
func Encode(c *policy.Compiled, mode policy.Mode, generation uint32, r Resolver) (*Encoded, error) {
	e := &Encoded{Rules: len(c.Rules), owners: newOwnerIndex()}
	meta := bindguardBgValue{Origin: generation}
	if mode != policy.ModeEnforce {
		meta.Flags |= uint8(bindguardBgMetaFlagsBG_META_AUDIT)
	}
	e.RuleIdx = append(e.RuleIdx, metaIndex)
	e.RuleVals = append(e.RuleVals, meta)

	units, err := findUnits(c, r)
	if err != nil {
		return nil, err
	}
	for _, rule := range c.Rules {
		if rule.Port == 0 {
			return nil, fmt.Errorf("rule for port 0: port 0 is never judged")
		}
		proto := protoOf(rule.Protocol)
		v := bindguardBgValue{Origin: uint32(rule.Origin) + 1, Flags: ruleDeclared, MinDepth: 1, MaxDepth: 0}
		if rule.Removed {
			v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_REMOVED)
		}
		if rule.Localhost {
			v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_LOCALHOST)
		}
		if rule.Audit {
			v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_AUDIT)
		}
		if !rule.Owners.Any() {
			v.Flags |= ruleOwners
			if len(rule.Owners.UIDs) > 0 {
				v.Flags |= ruleUIDOwners
			}
			e.encodeOwners(rule, proto, &v, r, units)
		}
		e.RuleIdx = append(e.RuleIdx, ruleIndex(proto, rule.Port))
		e.RuleVals = append(e.RuleVals, v)
	}
	if len(e.OwnerKeys) > OwnersMaxEntries {
		return nil, fmt.Errorf("policy needs %d owner entries, more than the kernel map's %d", len(e.OwnerKeys), OwnersMaxEntries)
	}
	return e, nil
}

// encodeOwners adds the owner entries of one rule and narrows the rule's
// cgroup levels to those where an owner exists.
func (e *Encoded) encodeOwners(rule policy.Rule, proto uint8, v *bindguardBgValue, r Resolver, units map[string][]string) {
	owner := bindguardBgValue{Origin: v.Origin}
	ref := ownerRef{proto: proto, port: rule.Port, value: owner}
	for _, uid := range rule.Owners.UIDs {
		e.addOwner(bindguardBgKey{Kind: kindUID, Proto: proto, Port: rule.Port, Id: uint64(uid)}, owner)
	}
	addCgroup := func(rel, what string) {
		id, depth, err := r.ID(rel)
		if err == nil && depth > MaxCgroupDepth {
			err = fmt.Errorf("deeper than %d levels", MaxCgroupDepth)
		}
		if err != nil {
			e.Unresolved = append(e.Unresolved, Unresolved{Port: rule.Port, Protocol: rule.Protocol, Owner: what, Err: err})
			return
		}
		widen(v, uint8(depth))
		k := bindguardBgKey{Kind: kindCgroup, Proto: proto, Port: rule.Port, Id: id}
		if e.addOwner(k, owner) {
			e.owners.byID[id] = append(e.owners.byID[id], k)
		}
	}
	for _, cg := range rule.Owners.Cgroups {
		e.owners.byPath[cg] = append(e.owners.byPath[cg], ref)
		addCgroup(cg, "cgroup "+cg)
	}
	for _, u := range rule.Owners.Units {
		e.owners.byUnit[u] = append(e.owners.byUnit[u], ref)
		paths := units[u]
		if len(paths) == 0 {
			e.Unresolved = append(e.Unresolved, Unresolved{Port: rule.Port, Protocol: rule.Protocol, Owner: "unit " + u, Err: fmt.Errorf("no cgroup named %s", u)})
		}
		for _, p := range paths {
			addCgroup(p, "unit "+u+" at "+p)
		}
	}
}

// findUnits resolves every unit owner of a policy in one walk.
func findUnits(c *policy.Compiled, r Resolver) (map[string][]string, error) {
	var names []string
	seen := map[string]bool{}
	for _, rule := range c.Rules {
		for _, u := range rule.Owners.Units {
			if !seen[u] {
				seen[u] = true
				names = append(names, u)
			}
		}
	}
	return r.FindUnits(names)
}

// widen makes a rule look owners up at cgroup level depth too.
func widen(v *bindguardBgValue, depth uint8) {
	if v.MinDepth > v.MaxDepth {
		v.MinDepth, v.MaxDepth = depth, depth
		return
	}
	v.MinDepth, v.MaxDepth = min(v.MinDepth, depth), max(v.MaxDepth, depth)
}

// addOwner adds an owner entry once; it reports whether it was new.
func (e *Encoded) addOwner(k bindguardBgKey, v bindguardBgValue) bool {
	if k.Kind == kindCgroup && slices.Contains(e.owners.byID[k.Id], k) {
		return false // a cgroup named twice (as a path and as a unit)
	}
	e.OwnerKeys = append(e.OwnerKeys, k)
	e.OwnerVals = append(e.OwnerVals, v)
	return true
}

var _ Resolver = (*cgroups.FS)(nil)
