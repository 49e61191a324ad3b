package policy

import (
	"fmt"
	"strings"
)

// Widening is a restriction one entry states that another entry of the same
// process, covering the same ports, takes away when the two are merged
// (see Compile: owners are a union that anyone widens; localhost holds only
// if every entry says it). The registry is valid, and the merge is what the
// schema says; check warns because the stricter entry reads as if it held.
type Widening struct {
	Strict, Wide Pos
	Process      string
	Protocol     Protocol
	// Lo and Hi are the first and last port affected (a run of the ports
	// both entries cover).
	Lo, Hi int
	// Lost is what the stricter entry asked for: "bind: localhost" or
	// "owners".
	Lost string
}

func (w Widening) String() string {
	ports := fmt.Sprint(w.Lo)
	if w.Hi != w.Lo {
		ports = fmt.Sprintf("%d-%d", w.Lo, w.Hi)
	}
	what := "is bound on any address"
	if w.Lost == "owners" {
		what = "may be bound by anyone"
	}
	return fmt.Sprintf("%v: warning: %s %s/%s is merged with the entry at %v of the same process, which has no %s: %s %s",
		w.Strict, w.Process, ports, w.Protocol, w.Wide, w.Lost, ports, what)
}

// Widenings lists, for the entries a node with nodeLabels selects, each
// restriction a merge takes away, one per pair of entries, restriction and
// protocol, with the first run of ports it affects. Call it on a registry
// Validate passed.
func (r *Registry) Widenings(nodeLabels map[string]string) []Widening {
	ents := r.all()
	var present []int
	for i, e := range ents {
		if e.Matches(nodeLabels) && !e.Removed {
			present = append(present, i)
		}
	}
	var out []Widening
	seen := map[string]bool{}
	for _, proto := range []Protocol{TCP, UDP} {
		segments(ents, present, proto, func(lo, hi int, cover []int) {
			for _, s := range cover {
				for _, w := range cover {
					strict, wide := ents[s], ents[w]
					if s == w || !strings.EqualFold(strict.Process, wide.Process) {
						continue
					}
					for _, lost := range []string{"bind: localhost", "owners"} {
						if lost == "bind: localhost" && (strict.Bind != BindLocalhost || wide.Bind == BindLocalhost) ||
							lost == "owners" && (strict.Owners.Any() || !wide.Owners.Any()) {
							continue
						}
						key := fmt.Sprint(s, w, lost, proto)
						if seen[key] {
							continue
						}
						seen[key] = true
						out = append(out, Widening{Strict: strict.Pos, Wide: wide.Pos, Process: strict.Process,
							Protocol: proto, Lo: lo, Hi: hi, Lost: lost})
					}
				}
			}
		})
	}
	return out
}
