package loader

import (
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/bindguard/bindguard/policy"
)

// Exported names for the contract constants bpf2go generated from bpf/bindguard.h.
const (
	LayoutVersion      = uint32(bindguardBgLimitsBG_LAYOUT_VERSION)
	PairsMaxEntries    = int(bindguardBgLimitsBG_PAIRS_MAX_ENTRIES)
	OwnerSets          = int(bindguardBgLimitsBG_OWNER_SETS)
	MembersMaxEntries  = int(bindguardBgLimitsBG_MEMBERS_MAX_ENTRIES)
	setWords           = int(bindguardBgLimitsBG_SET_WORDS)
	rulesEntries       = uint32(bindguardBgLimitsBG_RULES_ENTRIES)
	metaIndex          = uint32(0)
	ruleDeclared       = uint8(bindguardBgRuleFlagsBG_RULE_DECLARED)
	ruleOwners         = uint8(bindguardBgRuleFlagsBG_RULE_OWNERS)
	ruleUIDOwners      = uint8(bindguardBgRuleFlagsBG_RULE_UID_OWNERS)
	rulePodOwners      = uint8(bindguardBgRuleFlagsBG_RULE_POD_OWNERS)
	pairUID            = uint8(bindguardBgPairKindBG_PAIR_UID)
	pairPodPort        = uint8(bindguardBgPairKindBG_PAIR_POD_PORT)
	protoTCP, protoUDP = uint8(bindguardBgProtoBG_PROTO_TCP), uint8(bindguardBgProtoBG_PROTO_UDP)
)

// The policy package states its limits without importing the loader; they
// must fit the kernel's.
var (
	_ = [1]struct{}{}[PairsMaxEntries-policy.MaxMapEntries]
	_ = [setWords*64 - OwnerSets]struct{}{}
	_ = [1]struct{}{}[OwnerSets-policy.MaxOwnerSets]
)

// ruleIndex is bg_rule_index from bpf/bindguard.h.
func ruleIndex(proto uint8, port uint16) uint32 { return uint32(proto-1)<<16 | uint32(port) }

// setBits is a membership bitmap: bit s is owner set s.
type setBits [setWords]uint64

func (b *setBits) add(s int) { b[s/64] |= 1 << (s % 64) }
func (b *setBits) or(o setBits) {
	for i := range b {
		b[i] |= o[i]
	}
}
func (b setBits) has(s int) bool { return b[s/64]&(1<<(s%64)) != 0 }

// Unresolved is an owner whose cgroup does not exist (yet); the rule is in
// force without it, and the owner joins when its cgroup appears.
type Unresolved struct {
	Port     uint16
	Protocol policy.Protocol
	Owner    string // "cgroup /a/b" or "unit x.service"
	Err      error
}

// encoded is a compiled policy in the kernel's encoding, ready to write: the
// rules array entries (the meta entry first), the uid pairs, and the owner
// sets with the principals (cgroup paths, units, pod owners) of each.
type encoded struct {
	// podPorts: the pod-ports check is on (run --pod-ports=require), the
	// only reader of pods' declared ports.
	podPorts bool
	ruleIdx  []uint32
	ruleVals []bindguardBgValue
	pairKeys []bindguardBgKey
	rules    int
	// sets are the distinct owner lists by set number (bg_value.set).
	sets map[int]policy.Owners
	// setRules are the rules of each set, for Unresolved.
	setRules map[int][]policy.Rule
	byPath   map[string]setBits
	byUnit   map[string]setBits
	pods     []podPrincipal
	// podOwned: some pod owner names a container, so a pod's containers
	// must each be resolved (see BG_MEMBER_SPAWN_PENDING).
	podContainers bool
}

// podPrincipal is one pod owner and the sets it is in.
type podPrincipal struct {
	owner policy.PodOwner
	sets  setBits
}

// generation is the policy generation every entry carries.
func (e *encoded) generation() uint32 { return e.ruleVals[0].Generation }

// undeclared is the entry of a port the registry does not name: the
// generation and node flags every entry of the slot carries, nothing else.
// The meta entry is one.
func (e *encoded) undeclared() bindguardBgValue { return e.ruleVals[0] }

// entries is the number of map entries the policy holds besides memberships.
func (e *encoded) entries() int { return len(e.ruleIdx) + len(e.pairKeys) }

func protoOf(p policy.Protocol) uint8 {
	switch p {
	case policy.TCP:
		return protoTCP
	case policy.UDP:
		return protoUDP
	}
	panic(fmt.Sprintf("loader: unknown protocol %d", p))
}

// encodeOptions are the node-wide switches the meta entry carries.
type encodeOptions struct {
	mode     policy.Mode
	podPorts bool
}

// encode turns a compiled policy into map entries: the meta entry, one rule
// per (port, protocol), one uid pair per uid owner of a set, and the owner
// sets. Nothing here depends on which cgroups exist: memberships are written
// separately, so a policy encodes the same way on every node.
func encode(c *policy.Compiled, generation uint32, o encodeOptions) (*encoded, error) {
	e := &encoded{podPorts: o.podPorts, rules: len(c.Rules), byPath: map[string]setBits{}, byUnit: map[string]setBits{},
		sets: map[int]policy.Owners{}, setRules: map[int][]policy.Rule{}}
	if generation == 0 {
		return nil, fmt.Errorf("generation 0: the kernel reads it as no policy")
	}
	meta := metaEntry(generation, o)
	e.ruleIdx = append(e.ruleIdx, metaIndex)
	e.ruleVals = append(e.ruleVals, meta)

	setOf := map[string]int{}
	members, pairOnly := 0, OwnerSets
	for _, rule := range c.Rules {
		if rule.Port == 0 {
			return nil, fmt.Errorf("rule for port 0: port 0 is never judged")
		}
		v := ruleValue(rule)
		if !rule.Owners.Any() {
			key := ownersKey(rule.Owners)
			s, ok := setOf[key]
			if !ok {
				var err error
				if s, err = nextSet(rule.Owners, &members, &pairOnly); err != nil {
					return nil, err
				}
				setOf[key] = s
				e.addSet(rule.Owners, s)
			}
			e.setRules[s] = append(e.setRules[s], rule)
			v.Flags |= ruleOwners
			v.Set = uint16(s)
			if len(rule.Owners.UIDs) > 0 {
				v.Flags |= ruleUIDOwners
			}
			if len(rule.Owners.UIDs) == 1 {
				v.Uid = rule.Owners.UIDs[0] + 1 // checked in the rule itself
			}
			if len(rule.Owners.Pods) > 0 {
				v.Flags |= rulePodOwners
			}
		}
		// What every entry carries, so a bind reads no other.
		v.Generation, v.Node = meta.Generation, meta.Node
		e.ruleIdx = append(e.ruleIdx, ruleIndex(protoOf(rule.Protocol), rule.Port))
		e.ruleVals = append(e.ruleVals, v)
	}
	if len(e.pairKeys) > PairsMaxEntries {
		return nil, fmt.Errorf("policy needs %d uid owner entries, more than the kernel map's %d", len(e.pairKeys), PairsMaxEntries)
	}
	return e, nil
}

// metaEntry is the meta entry of a policy: its generation and node flags,
// which every entry of its slot carries, and nothing else (it is the entry
// of an undeclared port, at the index of TCP port 0).
func metaEntry(generation uint32, o encodeOptions) bindguardBgValue {
	meta := bindguardBgValue{Generation: generation}
	if o.mode != policy.ModeEnforce {
		meta.Node |= uint8(bindguardBgMetaFlagsBG_META_AUDIT)
	}
	if o.podPorts {
		meta.Node |= uint8(bindguardBgMetaFlagsBG_META_POD_PORTS)
	}
	return meta
}

func ruleValue(rule policy.Rule) bindguardBgValue {
	v := bindguardBgValue{Origin: uint32(rule.Origin) + 1, Flags: ruleDeclared}
	if rule.Removed {
		v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_REMOVED)
	}
	if rule.Localhost {
		v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_LOCALHOST)
	}
	if rule.Audit {
		v.Flags |= uint8(bindguardBgRuleFlagsBG_RULE_AUDIT)
	}
	return v
}

// nextSet numbers a new owner list. A list with cgroup, unit or pod owners
// is a bit of the membership bitmap (0..OwnerSets-1); a list of uids alone
// needs no bit, only its pairs or the rule's own uid, and is numbered from
// OwnerSets up to the 16 bits bg_value.set has.
func nextSet(o policy.Owners, members, pairOnly *int) (int, error) {
	if len(o.Cgroups) == 0 && len(o.Units) == 0 && len(o.Pods) == 0 {
		if *pairOnly > 0xffff {
			return 0, fmt.Errorf("policy has more than %d distinct uid owner lists", 0x10000-OwnerSets)
		}
		*pairOnly++
		return *pairOnly - 1, nil
	}
	if *members >= OwnerSets {
		return 0, fmt.Errorf("policy has more than %d distinct owner lists with cgroup, unit or pod owners, the most the kernel's membership bitmap holds", OwnerSets)
	}
	*members++
	return *members - 1, nil
}

// addSet records owner set s: its uid pairs and its principals.
func (e *encoded) addSet(o policy.Owners, s int) {
	e.sets[s] = o
	if len(o.UIDs) > 1 { // one uid lives in the rule (bg_value.uid)
		for _, uid := range o.UIDs {
			e.pairKeys = append(e.pairKeys, bindguardBgKey{Kind: pairUID, Set: uint32(s), Id: uint64(uid)})
		}
	}
	for _, cg := range o.Cgroups {
		b := e.byPath[cleanPath(cg)]
		b.add(s)
		e.byPath[cleanPath(cg)] = b
	}
	for _, u := range o.Units {
		b := e.byUnit[u]
		b.add(s)
		e.byUnit[u] = b
	}
	for _, p := range o.Pods {
		if p.Container != "" {
			e.podContainers = true
		}
		i := slices.IndexFunc(e.pods, func(q podPrincipal) bool { return q.owner.Equal(p) })
		if i < 0 {
			e.pods = append(e.pods, podPrincipal{owner: p})
			i = len(e.pods) - 1
		}
		e.pods[i].sets.add(s)
	}
}

// ownersKey is a canonical form of an owner list: equal lists share a set.
func ownersKey(o policy.Owners) string {
	var parts []string
	for _, c := range o.Cgroups {
		parts = append(parts, "c"+cleanPath(c))
	}
	for _, u := range o.Units {
		parts = append(parts, "u"+u)
	}
	for _, u := range o.UIDs {
		parts = append(parts, "i"+strconv.FormatUint(uint64(u), 10))
	}
	for _, p := range o.Pods {
		parts = append(parts, "p"+p.Namespace+"/"+p.Container+"/"+policy.FormatLabels(p.Labels))
	}
	slices.Sort(parts)
	return strings.Join(slices.Compact(parts), "\x00")
}

func cleanPath(p string) string { return path.Clean("/" + p) }

// podSets returns the sets a pod (or one container of it) is a member of.
func (e *encoded) podSets(p *policy.Pod) setBits {
	var b setBits
	for _, pp := range e.pods {
		if pp.owner.Matches(p) {
			b.or(pp.sets)
		}
	}
	return b
}
