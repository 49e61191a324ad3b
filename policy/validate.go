package policy

import (
	"fmt"
	"slices"
	"strings"
)

// Validate reports every problem that keeps the registry from compiling:
// the parse errors it was loaded with, invalid values in entries built in
// memory, conflicts, and the kernel map limits.
//
// With nodeLabels empty it checks for every node: two entries conflict when
// some node could match both selectors (see Satisfiable), and the map limit is checked against an upper bound (a node
// matching every selector). With nodeLabels it checks one node: only entries
// whose selector matches are considered, and the limits are exact.
//
// The result is sorted and nil when the registry is valid.
func (r *Registry) Validate(nodeLabels map[string]string) ErrorList {
	errs := slices.Clone(r.errs)
	ents := r.all()
	for _, e := range ents {
		for _, msg := range checkEntry(e) {
			errs.add(e.Pos, msg)
		}
	}
	present := r.present(ents, nodeLabels)
	gid := groupIDs(ents)
	for _, o := range overlaps(ents, present, gid) {
		errs = append(errs, conflictError(ents, o))
	}
	errs = append(errs, r.checkLimits(ents, present, gid, nodeLabels)...)
	if len(errs) == 0 {
		return nil
	}
	return errs.sortedUnique()
}

// present returns the indexes of the entries a node holds: those whose
// selector matches nodeLabels or, with nodeLabels empty, all of them.
func (r *Registry) present(ents []*Entry, nodeLabels map[string]string) []int {
	out := make([]int, 0, len(ents))
	for i, e := range ents {
		if len(nodeLabels) == 0 || e.Matches(nodeLabels) {
			out = append(out, i)
		}
	}
	return out
}

// mergeGroup is what entries must share to merge instead of conflicting: the
// process, or being removed. Removed is a field of its own, so that no
// process name, however spelled, can join the removed group.
type mergeGroup struct {
	removed bool
	process string
}

func groupKey(e *Entry) mergeGroup {
	if e.Removed {
		return mergeGroup{removed: true}
	}
	return mergeGroup{process: processKey(e.Process)}
}

func portsString(lo, hi int, protos []Protocol) string {
	ps := make([]string, len(protos))
	for i, p := range protos {
		ps[i] = p.String()
	}
	if lo == hi {
		return fmt.Sprintf("port %d/%s", lo, strings.Join(ps, ","))
	}
	return fmt.Sprintf("ports %d-%d/%s", lo, hi, strings.Join(ps, ","))
}

func posLess(a, b Pos) bool {
	if a.File != b.File {
		return a.File < b.File
	}
	if a.Line != b.Line {
		return a.Line < b.Line
	}
	return a.Col < b.Col
}

// conflictError reports an overlap at the later of the two entries, naming
// the earlier one.
func conflictError(ents []*Entry, o *overlap) *Error {
	first, second := ents[o.a], ents[o.b]
	if posLess(second.Pos, first.Pos) {
		first, second = second, first
	}
	ports := portsString(o.lo, o.hi, o.protos)
	var msg string
	switch {
	case second.Removed:
		msg = fmt.Sprintf("removed %s (%q%s) is still claimed by %q at %v", ports, second.Process, removedIn(second), first.Process, first.Pos)
	case first.Removed:
		msg = fmt.Sprintf("%s claimed by %q was removed at %v (%q%s)", ports, second.Process, first.Pos, first.Process, removedIn(first))
	default:
		msg = fmt.Sprintf("%s claimed by %q conflicts with %q at %v", ports, second.Process, first.Process, first.Pos)
	}
	return &Error{Pos: second.Pos, Msg: msg}
}

func removedIn(e *Entry) string {
	if e.RemovedIn == "" {
		return ""
	}
	return ", removed in " + e.RemovedIn
}

// checkEntry checks the values of one entry. Parsed entries always pass (the
// parser reports the same problems at their exact place); this holds entries
// built in memory to the same rules.
func checkEntry(e *Entry) []string {
	var msgs []string
	add := func(err error) {
		if err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	add(checkPorts(e.Ports))
	add(checkProtocols(e.Protocols))
	add(checkProcess(e.Process))
	add(checkText("team", e.Team))
	add(checkText("since", e.Since))
	add(checkText("notes", e.Notes))
	add(checkText("removed", e.RemovedIn))
	if _, err := parseBind(string(e.Bind)); err != nil {
		add(err)
	}
	if e.Mode != "" {
		if _, err := ParseMode(string(e.Mode)); err != nil {
			add(err)
		}
	}
	for _, c := range e.Owners.Cgroups {
		add(checkCgroup(c))
	}
	for _, u := range e.Owners.Units {
		add(checkUnit(u))
	}
	for _, u := range e.Owners.UIDs {
		add(checkUID(uint64(u)))
	}
	for _, po := range e.Owners.Pods {
		for _, err := range checkPodOwner(po) {
			add(err)
		}
	}
	if c := e.Owners.Count(); c > MaxOwnersPerRule {
		msgs = append(msgs, fmt.Sprintf("%d owners: at most %d are allowed per port", c, MaxOwnersPerRule))
	}
	for _, err := range checkSelector(e.NodeSelector) {
		add(err)
	}
	return msgs
}

// checkLimits counts the map entries the policy needs and the owners each
// port ends up with once entries of the same process merge.
//
// Count: 1 meta entry, one entry per (port, protocol) rule, and one per owner
// of each rule. A unit owner counts as 1 here, though the loader resolves it
// to every cgroup named after the unit and must check again.
func (r *Registry) checkLimits(ents []*Entry, present, gid []int, nodeLabels map[string]string) ErrorList {
	var errs ErrorList
	allNodes := len(nodeLabels) == 0
	rules, owners := 0, 0
	reported := map[string]bool{}
	for _, proto := range []Protocol{TCP, UDP} {
		segments(ents, present, proto, func(lo, hi int, cover []int) {
			n := hi - lo + 1
			rules += n
			most := 0
			for _, g := range ownedGroups(ents, gid, cover) {
				c := mergedOwnerCount(ents, g)
				most = max(most, c)
				if len(g) == 1 || c <= MaxOwnersPerRule || (allNodes && !jointlyCompatible(ents, g)) {
					// One entry was checked alone (checkEntry). With
					// incompatible selectors no one node holds them all;
					// each node is checked when it compiles.
					continue
				}
				key := fmt.Sprint(g)
				if reported[key] {
					continue
				}
				reported[key] = true
				at := make([]string, len(g))
				for i, idx := range g {
					at[i] = ents[idx].Pos.String()
				}
				errs.add(ents[g[0]].Pos, fmt.Sprintf("%s: entries of %q at %s together list %d owners: at most %d are allowed per port",
					portsString(lo, hi, []Protocol{proto}), ents[g[0]].Process, strings.Join(at, ", "), c, MaxOwnersPerRule))
			}
			owners += n * most
		})
	}
	checkOwnerSets(ents, nodeLabels, allNodes, &errs)
	total := 1 + rules + owners
	if total <= MaxMapEntries {
		return errs
	}
	where := "the policy needs up to"
	if !allNodes {
		where = "the policy for node " + FormatLabels(nodeLabels) + " needs"
	}
	var pos Pos
	switch {
	case len(r.Sources) > 0:
		pos = r.Sources[0].Pos
	case len(ents) > 0:
		pos = ents[0].Pos
	}
	errs.add(pos, fmt.Sprintf("%s %d kernel map entries (1 meta + %d port rules + %d owners, a unit owner counting as 1): the limit is %d",
		where, total, rules, owners, MaxMapEntries))
	return errs
}

// groupIDs numbers the merge groups: entries with equal groupKey share an id.
func groupIDs(ents []*Entry) []int {
	ids := map[mergeGroup]int{}
	out := make([]int, len(ents))
	for i, e := range ents {
		k := groupKey(e)
		id, ok := ids[k]
		if !ok {
			id = len(ids)
			ids[k] = id
		}
		out[i] = id
	}
	return out
}

// ownedGroups splits the entries covering a port into merge groups (one per
// process) and returns those whose merged rule lists owners. Most ports have
// one entry, or entries without owners, and cost no allocation.
func ownedGroups(ents []*Entry, gid []int, cover []int) [][]int {
	owned := 0
	for _, i := range cover {
		if !ents[i].Removed && !ents[i].Owners.Any() {
			owned++
		}
	}
	switch {
	case owned == 0:
		return nil
	case len(cover) == 1:
		return [][]int{cover}
	}
	byGroup := map[int][]int{}
	var order []int
	for _, i := range cover {
		g := gid[i]
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], i)
	}
	var out [][]int
	for _, g := range order {
		if !slices.ContainsFunc(byGroup[g], func(i int) bool { return ents[i].Removed || ents[i].Owners.Any() }) {
			out = append(out, byGroup[g])
		}
	}
	return out
}

// jointlyCompatible reports whether one node can match every selector.
func jointlyCompatible(ents []*Entry, g []int) bool {
	sels := make([]Selector, len(g))
	for i, idx := range g {
		sels[i] = ents[idx].NodeSelector
	}
	ok, _ := Satisfiable(sels...)
	return ok
}

// mergedOwnerCount is how many owners the merge of a group lists.
func mergedOwnerCount(ents []*Entry, g []int) int {
	if ents[g[0]].Removed {
		return 0
	}
	if len(g) == 1 {
		return ents[g[0]].Owners.Count()
	}
	return mergeOwners(ents, g).Count()
}

// checkOwnerSets refuses a policy that names more distinct owner lists with
// cgroup, unit or pod owners than a cgroup's membership bitmap holds
// (MaxOwnerSets); lists of uids alone take no bit. Entries with the same
// owners share one list; merged entries can only form fewer new lists than
// the entries that form them, and the loader checks the exact count.
func checkOwnerSets(ents []*Entry, nodeLabels map[string]string, allNodes bool, errs *ErrorList) {
	lists := map[string]Pos{}
	for _, e := range ents {
		if e.Owners.Any() || (!allNodes && !e.Matches(nodeLabels)) {
			continue
		}
		if len(e.Owners.Cgroups) == 0 && len(e.Owners.Units) == 0 && len(e.Owners.Pods) == 0 {
			continue // uid owners need no bit of the membership bitmap
		}
		k := fmt.Sprintf("%v", e.Owners)
		if _, ok := lists[k]; !ok {
			lists[k] = e.Pos
		}
	}
	if len(lists) <= MaxOwnerSets {
		return
	}
	var first Pos
	for _, e := range ents {
		if !e.Owners.Any() {
			first = e.Pos
			break
		}
	}
	errs.add(first, fmt.Sprintf("the policy names %d distinct owner lists with cgroup, unit or pod owners: a node holds at most %d (one bit per list in each cgroup's membership); give entries with the same owners the same owner list", len(lists), MaxOwnerSets))
}
