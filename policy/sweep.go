package policy

import (
	"cmp"
	"slices"
)

// The registry is checked and compiled on port intervals, never port by
// port, so that a 1-65535 range costs as much as a single port: intervals are
// sorted per protocol and swept once.

// span is the ports of one entry for one protocol.
type span struct {
	lo, hi int // inclusive
	idx    int // index into the entry list
}

// spans returns the spans of the present entries that include proto, sorted
// by start, then entry index.
func spans(ents []*Entry, present []int, proto Protocol) []span {
	var out []span
	for _, i := range present {
		e := ents[i]
		if slices.Contains(e.protocols(), proto) {
			out = append(out, span{int(e.Ports.Lo), int(e.Ports.Hi), i})
		}
	}
	slices.SortFunc(out, func(a, b span) int { return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.idx, b.idx)) })
	return out
}

// overlap is a pair of entries whose ports overlap.
type overlap struct {
	a, b   int // entry indexes, a < b
	lo, hi int // the ports both cover
	protos []Protocol
}

// overlaps finds every pair of present entries that overlap on some protocol
// and that the same node could hold at once. Entries of the same group (see
// groupIDs) never pair (the same process merges; removed entries merge). The
// cost is O(n log n) plus the number of pairs that overlap across groups.
func overlaps(ents []*Entry, present []int, gid []int) []*overlap {
	pairs := map[[2]int]*overlap{}
	var order []*overlap
	for _, proto := range []Protocol{TCP, UDP} {
		type live struct {
			maxHi int
			list  []span
		}
		active := map[int]*live{}
		for _, s := range spans(ents, present, proto) {
			own := gid[s.idx]
			for key, g := range active {
				if g.maxHi < s.lo {
					delete(active, key) // every span in it ended
					continue
				}
				if key == own {
					continue
				}
				kept := g.list[:0]
				for _, t := range g.list {
					if t.hi < s.lo {
						continue
					}
					kept = append(kept, t)
					if !compatible(ents[t.idx].NodeSelector, ents[s.idx].NodeSelector) {
						continue
					}
					k := [2]int{min(t.idx, s.idx), max(t.idx, s.idx)}
					o := pairs[k]
					if o == nil {
						o = &overlap{a: k[0], b: k[1], lo: s.lo, hi: min(s.hi, t.hi)}
						pairs[k] = o
						order = append(order, o)
					}
					o.protos = append(o.protos, proto)
				}
				g.list = kept
			}
			g := active[own]
			if g == nil {
				g = &live{maxHi: -1}
				active[own] = g
			}
			g.list = append(g.list, s)
			g.maxHi = max(g.maxHi, s.hi)
		}
	}
	slices.SortFunc(order, func(x, y *overlap) int { return cmp.Or(cmp.Compare(x.a, y.a), cmp.Compare(x.b, y.b)) })
	return order
}

// segments calls fn for each maximal run of ports lo..hi of proto that the
// same set of present entries covers; cover is sorted by entry index and
// only valid during the call.
func segments(ents []*Entry, present []int, proto Protocol, fn func(lo, hi int, cover []int)) {
	ss := spans(ents, present, proto)
	if len(ss) == 0 {
		return
	}
	points := make([]int, 0, 2*len(ss))
	for _, s := range ss {
		points = append(points, s.lo, s.hi+1)
	}
	slices.Sort(points)
	points = slices.Compact(points)
	var active []span
	var cover []int
	next := 0
	for k := 0; k+1 < len(points); k++ {
		p := points[k]
		for next < len(ss) && ss[next].lo == p {
			active = append(active, ss[next])
			next++
		}
		active = slices.DeleteFunc(active, func(s span) bool { return s.hi < p })
		if len(active) == 0 {
			continue
		}
		cover = cover[:0]
		for _, s := range active {
			cover = append(cover, s.idx)
		}
		slices.Sort(cover)
		fn(p, points[k+1]-1, cover)
	}
}
