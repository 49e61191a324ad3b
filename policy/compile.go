package policy

import (
	"cmp"
	"maps"
	"slices"
)

// Compile returns the policy one node holds: exactly what the kernel maps
// will contain. It validates first (see Validate) and returns the ErrorList
// when anything is wrong: a bad registry never compiles.
//
// Entries whose selector does not match nodeLabels are dropped (with no
// labels, only entries without a selector remain). Ranges expand into one
// Rule per port and protocol; Rules are sorted by protocol, then port.
// Origins hold one Origin per entry the node keeps, active entries first,
// then removed ones, in input order. Where entries of the same process
// overlap, the Rule merges them and points at the first of them.
//
// An empty result (no Rules) is a valid policy, not a missing one.
func Compile(reg *Registry, nodeLabels map[string]string) (*Compiled, error) {
	if errs := reg.Validate(nodeLabels); len(errs) > 0 {
		return nil, errs
	}
	return compileValid(reg, nodeLabels), nil
}

// LoadAndCompile loads the registries at paths (see Load) and compiles them
// for a node with nodeLabels, validating once. A reading error (a missing
// file) returns a nil Registry and a plain error; registry errors return the
// Registry and an ErrorList of every problem; either way nothing compiles.
func LoadAndCompile(nodeLabels map[string]string, paths ...string) (*Compiled, *Registry, error) {
	reg, err := Load(paths...)
	if reg == nil {
		return nil, nil, err
	}
	if errs := reg.Validate(nodeLabels); len(errs) > 0 {
		return nil, reg, errs
	}
	return compileValid(reg, nodeLabels), reg, nil
}

// compileValid compiles a registry that Validate passed for nodeLabels.
func compileValid(reg *Registry, nodeLabels map[string]string) *Compiled {
	ents := reg.all()
	var present []int
	for i, e := range ents {
		if e.Matches(nodeLabels) {
			present = append(present, i)
		}
	}
	ports := 0
	for _, i := range present {
		ports += ents[i].Ports.Len() * len(ents[i].protocols())
	}
	c := &Compiled{
		NodeLabels: maps.Clone(nodeLabels),
		Rules:      make([]Rule, 0, min(ports, 2*65535)),
		Origins:    make([]Origin, len(present)),
		Digest:     reg.Digest,
	}
	origin := make(map[int]int, len(present))
	for o, i := range present {
		origin[i] = o
		c.Origins[o] = Origin{Pos: ents[i].Pos, Process: ents[i].Process, Removed: ents[i].Removed}
	}
	for _, proto := range []Protocol{TCP, UDP} {
		segments(ents, present, proto, func(lo, hi int, cover []int) {
			// Validate guarantees one group: one process, or removed ports.
			rule := mergeRule(ents, cover)
			rule.Protocol = proto
			rule.Origin = origin[cover[0]]
			for port := lo; port <= hi; port++ {
				rule.Port = uint16(port)
				c.Rules = append(c.Rules, rule)
			}
		})
	}
	return c
}

// mergeRule merges entries of one process (or removed entries) covering a
// port: owners are the union, except that an entry without owners lets
// anyone bind; localhost only if every entry says localhost; audit if any
// entry says audit.
func mergeRule(ents []*Entry, g []int) Rule {
	if ents[g[0]].Removed {
		return Rule{Removed: true}
	}
	r := Rule{Localhost: true}
	for _, i := range g {
		e := ents[i]
		r.Localhost = r.Localhost && e.Bind == BindLocalhost
		r.Audit = r.Audit || e.Mode == ModeAudit
	}
	r.Owners = mergeOwners(ents, g)
	return r
}

// mergeOwners is the sorted, deduplicated union of the owners of the group,
// or no owners (anyone) when any entry lists none.
func mergeOwners(ents []*Entry, g []int) Owners {
	var o Owners
	for _, i := range g {
		e := ents[i]
		if e.Owners.Any() {
			return Owners{}
		}
		o.Cgroups = append(o.Cgroups, e.Owners.Cgroups...)
		o.Units = append(o.Units, e.Owners.Units...)
		o.UIDs = append(o.UIDs, e.Owners.UIDs...)
		o.Pods = append(o.Pods, e.Owners.Pods...)
	}
	return normalizeOwners(o)
}

// normalizeOwners sorts and deduplicates each list; empty lists become nil.
// The lists are clipped, so appending to one never writes into another rule.
func normalizeOwners(o Owners) Owners {
	return Owners{
		Cgroups: sortUnique(o.Cgroups),
		Units:   sortUnique(o.Units),
		UIDs:    sortUnique(o.UIDs),
		Pods:    sortUniquePods(o.Pods),
	}
}

func sortUnique[T cmp.Ordered](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Clip(slices.Compact(s))
}

// Coverage counts the (port, protocol) pairs that some entry, active or
// removed, declares on a node with nodeLabels, or with nodeLabels empty on
// any node.
func (r *Registry) Coverage(nodeLabels map[string]string) (tcp, udp int) {
	ents := r.all()
	present := r.present(ents, nodeLabels)
	count := func(proto Protocol) (n int) {
		segments(ents, present, proto, func(lo, hi int, _ []int) { n += hi - lo + 1 })
		return n
	}
	return count(TCP), count(UDP)
}
