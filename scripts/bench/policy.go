package main

import (
	"fmt"
	"slices"

	"github.com/bindguard/bindguard/policy"
)

// portSpan is how many ports above -port-base the bench may bind.
const portSpan = 40

// ports are the TCP ports the loops bind, fixed offsets from -port-base.
type ports struct {
	declared, undeclared uint16
	// owner[d] is the owner-restricted port bound from depth d.
	owner map[int]uint16
	// span[d] is the port whose owners span depths 1..d.
	span map[int]uint16
	// spread is owned by a cgroup at every level 1..8 of one chain; uid
	// by a uid only; pod by a pod owner.
	spread, uid, pod uint16
	// inherit is owned by a cgroup that new cgroups are created below,
	// late by a cgroup that does not exist when the policy is applied.
	inherit, late uint16
	// hammer are undeclared ports, one per event binder: concurrent binds
	// of one port would fail with EADDRINUSE.
	hammer []uint16
}

// ownerDepths and spanDepths are the cgroup depths, below the attach cgroup,
// the owner rows bind from.
var (
	ownerDepths = []int{1, 4, 8, 16}
	spanDepths  = []int{4, 8}
)

func newPorts(base int) ports {
	p := ports{declared: uint16(base + 1), undeclared: uint16(base + 2), owner: map[int]uint16{}, span: map[int]uint16{}}
	for _, d := range ownerDepths {
		p.owner[d] = uint16(base + 10 + d)
	}
	for _, d := range spanDepths {
		p.span[d] = uint16(base + 20 + d)
	}
	p.spread, p.uid, p.pod = uint16(base+33), uint16(base+34), uint16(base+35)
	p.inherit, p.late = uint16(base+36), uint16(base+37)
	for i := 0; i < eventBinders; i++ {
		p.hammer = append(p.hammer, uint16(base+3+i))
	}
	return p
}

func (p ports) all() []uint16 {
	out := []uint16{p.declared, p.undeclared}
	for _, v := range p.owner {
		out = append(out, v)
	}
	for _, v := range p.span {
		out = append(out, v)
	}
	out = append(out, p.hammer...)
	out = append(out, p.spread, p.uid, p.pod, p.inherit, p.late)
	slices.Sort(out)
	return out
}

// buildPolicy returns a compiled policy that encodes to exactly entries map
// entries: the meta entry, the given rules, one pair per uid owner of rules
// that list two or more, and
// filler rules (alternately TCP and UDP, from port 1 up, never one of the
// ports in avoid) for the rest. An owner that resolves to no cgroup would
// change the count, so the caller checks ApplyResult.Entries.
func buildPolicy(entries int, rules []policy.Rule, avoid []uint16) (*policy.Compiled, error) {
	fixed := 1 // meta
	for _, r := range rules {
		fixed++
		if len(r.Owners.UIDs) > 1 { // one uid lives in the rule itself
			fixed += len(r.Owners.UIDs)
		}
	}
	fill := entries - fixed
	if fill < 0 {
		return nil, fmt.Errorf("policy of %d entries cannot hold %d fixed entries", entries, fixed)
	}
	c := &policy.Compiled{
		Origins: []policy.Origin{{Pos: policy.Pos{File: "bench.yaml", Line: 1}, Process: "bench"}},
		Rules:   slices.Clone(rules),
	}
	taken := map[policy.Protocol]map[uint16]bool{policy.TCP: {}, policy.UDP: {}}
	for _, p := range avoid {
		taken[policy.TCP][p], taken[policy.UDP][p] = true, true
	}
	for _, r := range rules {
		taken[r.Protocol][r.Port] = true
	}
	next := map[policy.Protocol]int{policy.TCP: 1, policy.UDP: 1}
	for i := 0; i < fill; i++ {
		proto := policy.TCP
		if i%2 == 1 {
			proto = policy.UDP
		}
		p := next[proto]
		for p <= 65535 && taken[proto][uint16(p)] {
			p++
		}
		if p > 65535 {
			return nil, fmt.Errorf("no free %s port for filler rule %d", proto, i)
		}
		c.Rules = append(c.Rules, policy.Rule{Port: uint16(p), Protocol: proto})
		next[proto] = p + 1
	}
	slices.SortFunc(c.Rules, func(a, b policy.Rule) int {
		if a.Protocol != b.Protocol {
			return int(a.Protocol) - int(b.Protocol)
		}
		return int(a.Port) - int(b.Port)
	})
	return c, nil
}
