package loader

import (
	"fmt"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// Exported names for the contract constants bpf2go generated from bpf/bindguard.h.
const (
	LayoutVersion    = uint32(bindguardBgLimitsBG_LAYOUT_VERSION)
	PolicyMaxEntries = int(bindguardBgLimitsBG_POLICY_MAX_ENTRIES)
	MaxCgroupDepth   = int(bindguardBgLimitsBG_MAX_CGROUP_DEPTH)
)

// The policy package states its limits without importing the loader; they
// must be the kernel's.
var (
	_ = [1]struct{}{}[PolicyMaxEntries-policy.MaxMapEntries]
	_ = [1]struct{}{}[MaxCgroupDepth-policy.MaxCgroupDepth]
)

// Resolver finds the cgroups that registry owners name. *cgroups.FS is one.
type Resolver interface {
	ID(rel string) (id uint64, depth int, err error)
	FindUnit(unit string) ([]string, error)
}

// Unresolved is an owner whose cgroup does not exist (yet); the rule is in
// force without it.
type Unresolved struct {
	Port     uint16
	Protocol policy.Protocol
	Owner    string // "cgroup /a/b" or "unit x.service"
	Err      error
}

// Encoded is a compiled policy in the kernel's encoding, ready to write.
type Encoded struct {
	Keys       []bindguardBgKey
	Values     []bindguardBgValue
	Rules      int
	Unresolved []Unresolved
	owners     ownerIndex
}

// ownerRef is one port whose owners include a cgroup path or unit.
type ownerRef struct {
	port  bindguardBgKey // the PORT key of the rule
	value bindguardBgValue
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
		return uint8(bindguardBgProtoBG_PROTO_TCP)
	case policy.UDP:
		return uint8(bindguardBgProtoBG_PROTO_UDP)
	}
	panic(fmt.Sprintf("loader: unknown protocol %d", p))
}

// Encode turns a compiled policy into policy map entries: the meta entry,
// one port entry per rule and one entry per owner. Owner cgroups are resolved
// to ids through r; an owner whose cgroup does not exist is reported in
// Unresolved and left out (its port stays owner-restricted).
func Encode(c *policy.Compiled, mode policy.Mode, generation uint32, r Resolver) (*Encoded, error) {
	e := &Encoded{Rules: len(c.Rules), owners: newOwnerIndex()}
	meta := bindguardBgValue{Origin: generation}
	if mode != policy.ModeEnforce {
		meta.Flags |= uint8(bindguardBgMetaFlagsBG_META_AUDIT)
	}
	e.add(bindguardBgKey{Kind: uint8(bindguardBgKindBG_KIND_META)}, meta)

	units := map[string][]string{}
	for _, rule := range c.Rules {
		proto := protoOf(rule.Protocol)
		v := bindguardBgValue{Origin: uint32(rule.Origin) + 1, MinDepth: 1, MaxDepth: 0}
		if rule.Removed {
			v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_REMOVED)
		}
		if rule.Localhost {
			v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_LOCALHOST)
		}
		if rule.Audit {
			v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_AUDIT)
		}
		owner := bindguardBgValue{Origin: v.Origin}
		if rule.Owners.Any() { // no owners: anyone may bind
			e.add(bindguardBgKey{Kind: uint8(bindguardBgKindBG_KIND_PORT), Proto: proto, Port: rule.Port}, v)
			continue
		}
		v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_OWNERS)
		portKey := bindguardBgKey{Kind: uint8(bindguardBgKindBG_KIND_PORT), Proto: proto, Port: rule.Port}
		ref := ownerRef{port: portKey, value: owner}
		for _, uid := range rule.Owners.UIDs {
			e.add(bindguardBgKey{Kind: uint8(bindguardBgKindBG_KIND_UID), Proto: proto, Port: rule.Port, Id: uint64(uid)}, owner)
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
			if v.MinDepth > v.MaxDepth {
				v.MinDepth, v.MaxDepth = uint8(depth), uint8(depth)
			} else {
				v.MinDepth = min(v.MinDepth, uint8(depth))
				v.MaxDepth = max(v.MaxDepth, uint8(depth))
			}
			k := bindguardBgKey{Kind: uint8(bindguardBgKindBG_KIND_CGROUP), Proto: proto, Port: rule.Port, Id: id}
			e.add(k, owner)
			e.owners.byID[id] = append(e.owners.byID[id], k)
		}
		for _, cg := range rule.Owners.Cgroups {
			e.owners.byPath[cg] = append(e.owners.byPath[cg], ref)
			addCgroup(cg, "cgroup "+cg)
		}
		for _, u := range rule.Owners.Units {
			e.owners.byUnit[u] = append(e.owners.byUnit[u], ref)
			paths, ok := units[u]
			if !ok {
				var err error
				if paths, err = r.FindUnit(u); err != nil {
					return nil, err
				}
				units[u] = paths
			}
			if len(paths) == 0 {
				e.Unresolved = append(e.Unresolved, Unresolved{Port: rule.Port, Protocol: rule.Protocol, Owner: "unit " + u, Err: fmt.Errorf("no cgroup named %s", u)})
			}
			for _, p := range paths {
				addCgroup(p, "unit "+u+" at "+p)
			}
		}
		e.add(portKey, v)
	}
	if len(e.Keys) > PolicyMaxEntries {
		return nil, fmt.Errorf("policy needs %d map entries, more than the kernel map's %d", len(e.Keys), PolicyMaxEntries)
	}
	return e, nil
}

func (e *Encoded) add(k bindguardBgKey, v bindguardBgValue) {
	if k.Kind == uint8(bindguardBgKindBG_KIND_CGROUP) && len(e.owners.byID[k.Id]) > 0 {
		for _, seen := range e.owners.byID[k.Id] {
			if seen == k {
				return // a cgroup named twice (as a path and as a unit)
			}
		}
	}
	e.Keys = append(e.Keys, k)
	e.Values = append(e.Values, v)
}

var _ Resolver = (*cgroups.FS)(nil)
