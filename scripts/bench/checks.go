package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/benchbpf"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// families are the socket families every configuration is measured with;
// index 0 is bind4, index 1 bind6.
var families = [2]int{4, 6}

// target is one configuration: where its loop runs and which programs judge it.
type target struct {
	key, name string
	dir       string // the helper's cgroup
	port      uint16
	// progs are the bind4 and bind6 programs whose run-time stats are the
	// per-check cost; nil for the baseline.
	progs [2]*ebpf.Program
	// size is the registry the shared loader must have in force, if any.
	size *size
	// deny: every bind of the loop fails with EPERM, as it must.
	deny bool
	// Per family, one value per round: loop CPU ns/op with stats off and
	// on, loop wall ns/op with stats off, per-check ns.
	loop, loopStats, loopWall, check [2][]float64
	// Per family, one value per round: the paired floor's per-check ns on
	// the same binds, and the per-check cost over it (median of batches).
	paired, pairedRatio [2][]float64
	runs, binds         [2]uint64
}

// size is one registry the size loader switches between.
type size struct {
	entries int
	label   string
	policy  *policy.Compiled
	// Fill and Apply times of every apply; Swap of every apply but the
	// loader's first.
	fill, swap, total []float64
}

type checkBench struct {
	o       *options
	e       *env
	targets []*target
	// sizes share one loader (sizeLoader), so the registry size is the only
	// difference between their rows: same programs, same outer map.
	sizes      []*size
	sizeLoader *loader.Loader
	current    *size
	applies    int
	// pairedFloor is a second instance of the floor program, attached in
	// every measured configuration's own cgroup: it runs on the same binds
	// as the configuration's programs, so their ratio to it is taken at the
	// same moments, whatever the machine does meanwhile.
	pairedFloor [2]*ebpf.Program
	// parts holds the parts' programs and maps (see addParts).
	parts *benchbpf.PartsObjects
}

func (cb *checkBench) add(t *target) *target {
	cb.targets = append(cb.targets, t)
	return t
}

// setupChecks creates every configuration's cgroups and attaches its programs.
func setupChecks(e *env, o *options, p ports, log io.Writer) (*checkBench, error) {
	cb := &checkBench{o: o, e: e}

	base, err := e.mkdir("baseline/leaf")
	if err != nil {
		return nil, err
	}
	cb.add(&target{key: "baseline", name: "no program (baseline)", dir: base, port: p.declared})

	var floor benchbpf.FloorObjects
	if err := benchbpf.LoadFloorObjects(&floor, nil); err != nil {
		return nil, fmt.Errorf("load floor programs: %w", verr(err))
	}
	e.onClose(floor.Close)
	t, err := cb.attachRef(e, "floor", "floor: return 1", p.declared, floor.FloorBind4, floor.FloorBind6)
	if err != nil {
		return nil, err
	}
	cb.add(t)

	lin, err := loadLinear(e)
	if err != nil {
		return nil, err
	}
	t, err = cb.attachRef(e, "linear128", "linear scan, 128 rules, no match", p.declared, lin.LinearBind4, lin.LinearBind6)
	if err != nil {
		return nil, err
	}
	cb.add(t)

	if err := cb.addParts(e, p); err != nil {
		return nil, err
	}
	if err := cb.addSizes(p, log); err != nil {
		return nil, err
	}
	fmt.Fprintf(log, "bench: loading bindguard with 65,536 entries and owners (cgroup storage, then the hash fallback)\n")
	if err := cb.addOwners(p, loader.MembersStorage, "bg65536", "bindguard 65,536 entries"); err != nil {
		return nil, err
	}
	if err := cb.addOwners(p, loader.MembersHash, "bg65536hash", "bindguard 65,536 entries, hash fallback"); err != nil {
		return nil, err
	}
	if err := cb.addDeny(p); err != nil {
		return nil, err
	}
	if err := cb.pairFloors(e); err != nil {
		return nil, err
	}
	return cb, nil
}

// pairFloors attaches a second floor program in the cgroup of every
// configuration that has programs (each cgroup once).
func (cb *checkBench) pairFloors(e *env) error {
	var floor benchbpf.FloorObjects
	if err := benchbpf.LoadFloorObjects(&floor, nil); err != nil {
		return fmt.Errorf("load paired floor programs: %w", verr(err))
	}
	e.onClose(floor.Close)
	cb.pairedFloor = [2]*ebpf.Program{floor.FloorBind4, floor.FloorBind6}
	done := map[string]bool{}
	for _, t := range cb.targets {
		if t.progs[0] == nil || done[t.dir] {
			continue
		}
		done[t.dir] = true
		for _, a := range []struct {
			typ  ebpf.AttachType
			prog *ebpf.Program
		}{{ebpf.AttachCGroupInet4Bind, floor.FloorBind4}, {ebpf.AttachCGroupInet6Bind, floor.FloorBind6}} {
			l, err := link.AttachCgroup(link.CgroupOptions{Path: t.dir, Attach: a.typ, Program: a.prog})
			if err != nil {
				return fmt.Errorf("attach the paired floor to %s: %w", t.key, err)
			}
			e.onClose(l.Close)
		}
	}
	return nil
}

func loadLinear(e *env) (*benchbpf.LinearObjects, error) {
	spec, err := benchbpf.LoadLinear()
	if err != nil {
		return nil, fmt.Errorf("load linear spec: %w", err)
	}
	const n = int(benchbpf.LinearLimitsLINEAR_MAX_RULES)
	if err := spec.Variables[benchbpf.LinearVarLinearNrRules].Set(uint32(n)); err != nil {
		return nil, fmt.Errorf("set linear_nr_rules: %w", err)
	}
	var lin benchbpf.LinearObjects
	if err := spec.LoadAndAssign(&lin, nil); err != nil {
		return nil, fmt.Errorf("load linear programs: %w", verr(err))
	}
	e.onClose(lin.Close)
	// Rules for ports 1..128, both families: a bench port matches none, so
	// every bind scans all of them (the worst case), then is allowed.
	for i := 0; i < n; i++ {
		r := benchbpf.LinearRule{Family: 0, Verdict: 1, First: uint16(i + 1), Last: uint16(i + 1)}
		if err := lin.LinearRules.Put(uint32(i), &r); err != nil {
			return nil, fmt.Errorf("write linear rule %d: %w", i, err)
		}
	}
	return &lin, nil
}

// partRows are the parts of a check measured alone (bpf/bench/parts.c):
// the kernel reads a row cannot do without, each a lower bound for the
// rows that need it (floorRows' part).
var partRows = []struct {
	key, name string
	progs     func(*benchbpf.PartsObjects) (bind4, bind6 *ebpf.Program)
}{
	{"part.member", "part alone: task's cgroup → its cgroup storage",
		func(o *benchbpf.PartsObjects) (_, _ *ebpf.Program) { return o.PartsMember4, o.PartsMember6 }},
	{"part.hash", "part alone: cgroup id → hash lookup",
		func(o *benchbpf.PartsObjects) (_, _ *ebpf.Program) { return o.PartsHash4, o.PartsHash6 }},
	{"part.violation", "part alone: netns cookie, cgroup id, one count",
		func(o *benchbpf.PartsObjects) (_, _ *ebpf.Program) { return o.PartsViolation4, o.PartsViolation6 }},
}

// addParts attaches each part of a check to a cgroup of its own, and
// writes the membership value the member parts must find for it.
func (cb *checkBench) addParts(e *env, p ports) error {
	var parts benchbpf.PartsObjects
	if err := benchbpf.LoadPartsObjects(&parts, nil); err != nil {
		return fmt.Errorf("load the parts programs: %w", verr(err))
	}
	e.onClose(parts.Close)
	cb.parts = &parts
	for _, r := range partRows {
		p4, p6 := r.progs(&parts)
		t, err := cb.attachRef(e, r.key, r.name, p.declared, p4, p6)
		if err != nil {
			return err
		}
		cb.add(t)
		if err := writePartMember(&parts, t.dir); err != nil {
			return err
		}
	}
	return nil
}

// writePartMember gives cgroup dir a membership in both of the parts'
// membership maps (every part's cgroup gets one: only the member parts
// read them).
func writePartMember(parts *benchbpf.PartsObjects, dir string) error {
	const member = uint64(1)
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := parts.PartsMembers.Update(uint32(f.Fd()), member, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write the cgroup storage of %s: %w", dir, err)
	}
	id, err := cgroups.IDOf(dir)
	if err != nil {
		return err
	}
	if err := parts.PartsMembersHash.Update(id, member, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write the hash membership of %s: %w", dir, err)
	}
	return nil
}

// checkParts fails the run if a member part's lookup missed: its figure
// would be an early return's, not a lookup's.
func (cb *checkBench) checkParts() error {
	if cb.parts == nil {
		return nil
	}
	var misses []uint64
	if err := cb.parts.PartsCounts.Lookup(uint32(0), &misses); err != nil {
		return fmt.Errorf("read the parts' miss count: %w", err)
	}
	var n uint64
	for _, m := range misses {
		n += m
	}
	if n != 0 {
		return fmt.Errorf("the membership parts missed %d lookups: their figures measure no lookup", n)
	}
	return nil
}

// attachRef attaches a reference program pair to a fresh cgroup.
func (cb *checkBench) attachRef(e *env, key, name string, port uint16, p4, p6 *ebpf.Program) (*target, error) {
	dir, err := e.mkdir(key)
	if err != nil {
		return nil, err
	}
	leaf, err := e.mkdir(key + "/leaf")
	if err != nil {
		return nil, err
	}
	for _, a := range []struct {
		typ  ebpf.AttachType
		prog *ebpf.Program
	}{{ebpf.AttachCGroupInet4Bind, p4}, {ebpf.AttachCGroupInet6Bind, p6}} {
		l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: a.typ, Program: a.prog})
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", key, err)
		}
		e.onClose(l.Close)
	}
	return &target{key: key, name: name, dir: leaf, port: port, progs: [2]*ebpf.Program{p4, p6}}, nil
}

// sizeLabel names a registry of n map entries.
func sizeLabel(n int) string {
	if n == 2 {
		return "1 rule (2 entries)"
	}
	return commas(n) + " entries"
}

// addSizes loads one bindguard, attached to its own cgroup, and the rows of
// its three registries: 1 rule, 1,000 and 65,536 entries (the meta entry,
// the declared port, fillers). Before a row is measured, its registry is
// put in force with Apply, which is also where the apply times come from.
func (cb *checkBench) addSizes(p ports, log io.Writer) error {
	dir, err := cb.e.mkdir("bgsize")
	if err != nil {
		return err
	}
	leaf, err := cb.e.mkdir("bgsize/leaf")
	if err != nil {
		return err
	}
	for _, n := range []int{2, 1000, 65536} {
		c, err := buildPolicy(n, []policy.Rule{{Port: p.declared, Protocol: policy.TCP}}, p.all())
		if err != nil {
			return err
		}
		cb.sizes = append(cb.sizes, &size{entries: n, label: sizeLabel(n), policy: c})
	}
	fmt.Fprintf(log, "bench: loading bindguard for 1 rule, 1,000 and 65,536 entries\n")
	l, err := loader.New(loader.Config{CgroupPath: dir, EventInterval: time.Hour})
	if err != nil {
		return fmt.Errorf("bindguard: %w", err)
	}
	cb.e.onClose(l.Close)
	cb.sizeLoader = l
	if err := cb.use(cb.sizes[0]); err != nil {
		return err
	}
	if err := l.Attach(); err != nil {
		return fmt.Errorf("bindguard: %w", err)
	}
	progs, err := attachedPrograms(cb.e, dir)
	if err != nil {
		return err
	}
	for _, sz := range cb.sizes {
		key := fmt.Sprintf("bg%d", sz.entries)
		cb.add(&target{key: key + ".declared", name: fmt.Sprintf("bindguard %s, declared port", sz.label), dir: leaf, port: p.declared, progs: progs, size: sz})
		cb.add(&target{key: key + ".undeclared", name: fmt.Sprintf("bindguard %s, undeclared port", sz.label), dir: leaf, port: p.undeclared, progs: progs, size: sz})
	}
	return nil
}

// use puts a size's registry in force on the size loader, unless it is, and
// records the times.
func (cb *checkBench) use(sz *size) error {
	if cb.current == sz {
		return nil
	}
	start := time.Now()
	res, err := cb.sizeLoader.Apply(sz.policy, loader.ApplyOptions{Mode: policy.ModeAudit}, loader.Sources{Cgroups: cb.e.cg})
	total := time.Since(start)
	if err != nil {
		return fmt.Errorf("bindguard %s: %w", sz.label, err)
	}
	if res.Entries != sz.entries {
		return fmt.Errorf("bindguard %s: policy encoded to %d entries, want %d", sz.label, res.Entries, sz.entries)
	}
	sz.fill = append(sz.fill, float64(res.Fill.Nanoseconds()))
	sz.total = append(sz.total, float64(total.Nanoseconds()))
	if cb.applies > 0 {
		sz.swap = append(sz.swap, float64(res.Swap.Nanoseconds()))
	}
	cb.applies++
	cb.current = sz
	return nil
}

// addOwners loads a bindguard with a 65,536-entry registry that also holds
// owner-restricted ports, its memberships kept in store. Each owner is the
// cgroup its loop binds from, d levels below the attach cgroup; the "span"
// ports also list a sibling cgroup at depth 1; the "spread" port lists a
// cgroup at every level 1..8 of its chain; the uid port lists a sibling and
// uid 0 (the bench's uid), so the membership misses and the uid pair hits;
// the pod port lists a pod owner, and the loop's cgroup is that pod's.
func (cb *checkBench) addOwners(p ports, store loader.Members, rowKey, label string) error {
	key := "bgowner-" + string(store)
	dir, err := cb.e.mkdir(key)
	if err != nil {
		return err
	}
	sib, err := cb.e.mkdir(key + "/sibling")
	if err != nil {
		return err
	}
	o := &ownerRows{e: cb.e, key: key, rowKey: rowKey, label: label, sib: cb.e.rel(sib),
		rules: []policy.Rule{{Port: p.declared, Protocol: policy.TCP}}}
	for _, step := range []func(ports) error{o.depths, o.spread, o.uid, o.pod} {
		if err := step(p); err != nil {
			return err
		}
	}
	slices.SortFunc(o.rules, func(a, b policy.Rule) int { return int(a.Port) - int(b.Port) })
	progs, err := cb.loadOwners(dir, store, o, p)
	if err != nil {
		return err
	}
	for _, t := range o.rows {
		t.progs = progs
		cb.add(t)
	}
	return nil
}

// ownerRows collects addOwners' rules and the rows that bind from their
// owner cgroups, all made below the cgroup key.
type ownerRows struct {
	e           *env
	key, rowKey string
	label, sib  string
	rules       []policy.Rule
	rows        []*target
	pods        benchPods
}

// add puts in a rule for port with owners, and the row k that binds to it
// from dir.
func (o *ownerRows) add(k, name, dir string, port uint16, owners policy.Owners) {
	o.rules = append(o.rules, policy.Rule{Port: port, Protocol: policy.TCP, Owners: owners})
	o.rows = append(o.rows, &target{key: o.rowKey + "." + k, name: o.label + ", " + name, dir: dir, port: port})
}

// depths adds the "owner" ports (one owner, d levels down) and the "span"
// ports (the sibling at depth 1 and an owner d levels down).
func (o *ownerRows) depths(p ports) error {
	for _, d := range ownerDepths {
		deep, err := o.e.mkdir(o.key + "/" + chain("owner"+strconv.Itoa(d), d))
		if err != nil {
			return err
		}
		o.add(fmt.Sprintf("owner%d", d), fmt.Sprintf("owner at depth %d", d), deep, p.owner[d], policy.Owners{Cgroups: []string{o.e.rel(deep)}})
	}
	for _, d := range spanDepths {
		deep, err := o.e.mkdir(o.key + "/" + chain("span"+strconv.Itoa(d), d))
		if err != nil {
			return err
		}
		o.add(fmt.Sprintf("span%d", d), fmt.Sprintf("owners at depths 1 and %d", d), deep, p.span[d], policy.Owners{Cgroups: []string{o.sib, o.e.rel(deep)}})
	}
	return nil
}

// spread adds the port owned by a cgroup at every level 1..8 of one chain;
// the loop binds from the deepest.
func (o *ownerRows) spread(p ports) error {
	spread := policy.Owners{}
	var deep string
	for d := 1; d <= 8; d++ {
		var err error
		if deep, err = o.e.mkdir(o.key + "/" + chain("spread", d)); err != nil {
			return err
		}
		spread.Cgroups = append(spread.Cgroups, o.e.rel(deep))
	}
	o.add("spread", "owners at every level 1..8", deep, p.spread, spread)
	return nil
}

// uid adds the port owned by the sibling and by the bench's uid.
func (o *ownerRows) uid(p ports) error {
	uidDir, err := o.e.mkdir(o.key + "/uid")
	if err != nil {
		return err
	}
	o.add("uid", "uid owner", uidDir, p.uid, policy.Owners{Cgroups: []string{o.sib}, UIDs: []uint32{uint32(os.Getuid())}})
	return nil
}

// pod adds the port owned by etcd pods, and the one pod whose container
// cgroup the loop binds from.
func (o *ownerRows) pod(p ports) error {
	podDir, err := o.e.mkdir(o.key + "/kubepods/besteffort/pod1/ctr")
	if err != nil {
		return err
	}
	o.pods = benchPods{path: o.e.rel(filepath.Dir(podDir)), pod: policy.Pod{Namespace: "kube-system", Name: "etcd-0", UID: "1", Labels: map[string]string{"component": "etcd"}}}
	o.add("pod", "pod owner", podDir, p.pod, policy.Owners{Pods: []policy.PodOwner{{Namespace: "kube-system", Labels: map[string]string{"component": "etcd"}}}})
	return nil
}

// loadOwners loads, fills and attaches the bindguard of addOwners on dir and
// returns its attached programs.
func (cb *checkBench) loadOwners(dir string, store loader.Members, o *ownerRows, p ports) ([2]*ebpf.Program, error) {
	c, err := buildPolicy(65536, o.rules, p.all())
	if err != nil {
		return [2]*ebpf.Program{}, err
	}
	l, err := loader.New(loader.Config{CgroupPath: dir, EventInterval: time.Hour, Members: store})
	if err != nil {
		return [2]*ebpf.Program{}, fmt.Errorf("bindguard with owners: %w", err)
	}
	cb.e.onClose(l.Close)
	res, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeAudit}, loader.Sources{Cgroups: cb.e.cg, Pods: o.pods})
	if err != nil {
		return [2]*ebpf.Program{}, fmt.Errorf("bindguard with owners: %w", err)
	}
	if res.Entries != 65536 || len(res.Unresolved) > 0 {
		return [2]*ebpf.Program{}, fmt.Errorf("bindguard with owners: policy encoded to %d entries (%d owners unresolved), want 65536", res.Entries, len(res.Unresolved))
	}
	if err := l.Attach(); err != nil {
		return [2]*ebpf.Program{}, fmt.Errorf("bindguard with owners: %w", err)
	}
	return attachedPrograms(cb.e, dir, ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind)
}

// benchPods is a node with one pod, whose cgroup is path.
type benchPods struct {
	path string
	pod  policy.Pod
}

func (b benchPods) PodCgroups() []loader.PodCgroup {
	return []loader.PodCgroup{{Path: b.path, Pod: &b.pod}}
}

func (b benchPods) SpawnPending() []string { return nil }

// addDeny loads a bindguard that enforces a 65,536-entry registry: its row
// is an undeclared bind that fails with EPERM, the violation path with
// rate-limited events.
func (cb *checkBench) addDeny(p ports) error {
	dir, err := cb.e.mkdir("bgdeny")
	if err != nil {
		return err
	}
	leaf, err := cb.e.mkdir("bgdeny/leaf")
	if err != nil {
		return err
	}
	c, err := buildPolicy(65536, []policy.Rule{{Port: p.declared, Protocol: policy.TCP}}, p.all())
	if err != nil {
		return err
	}
	l, err := loader.New(loader.Config{CgroupPath: dir, EventInterval: time.Hour})
	if err != nil {
		return fmt.Errorf("bindguard enforcing: %w", err)
	}
	cb.e.onClose(l.Close)
	if _, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: cb.e.cg}); err != nil {
		return fmt.Errorf("bindguard enforcing: %w", err)
	}
	if err := l.Attach(); err != nil {
		return fmt.Errorf("bindguard enforcing: %w", err)
	}
	progs, err := attachedPrograms(cb.e, dir, ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind)
	if err != nil {
		return err
	}
	cb.add(&target{key: "bg65536.deny", name: "bindguard 65,536 entries, undeclared port denied (enforce)", dir: leaf, port: p.undeclared, progs: progs, deny: true})
	post, err := attachedPrograms(cb.e, dir, ebpf.AttachCGroupInet4PostBind, ebpf.AttachCGroupInet6PostBind)
	if err != nil {
		return err
	}
	cb.add(&target{key: "bg65536.postbind", name: "bindguard post_bind after an explicit bind", dir: leaf, port: p.declared, progs: post})
	return nil
}

// chain is "name/2/3/.../d": a cgroup d levels deep.
func chain(name string, d int) string {
	parts := []string{name}
	for i := 2; i <= d; i++ {
		parts = append(parts, strconv.Itoa(i))
	}
	return strings.Join(parts, "/")
}

// attachedPrograms opens the two programs attached to dir at the hooks at
// (bind4 and bind6 unless told otherwise): the loader does not hand out its
// programs, the kernel does by id.
func attachedPrograms(e *env, dir string, at ...ebpf.AttachType) ([2]*ebpf.Program, error) {
	if len(at) == 0 {
		at = []ebpf.AttachType{ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind}
	}
	var progs [2]*ebpf.Program
	f, err := os.Open(dir)
	if err != nil {
		return progs, err
	}
	defer f.Close()
	for i, at := range at[:2] {
		q, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			return progs, fmt.Errorf("query programs of %s: %w", dir, err)
		}
		if len(q.Programs) != 1 {
			return progs, fmt.Errorf("%s has %d %s programs, want 1", dir, len(q.Programs), at)
		}
		p, err := ebpf.NewProgramFromID(q.Programs[0].ID)
		if err != nil {
			return progs, fmt.Errorf("open program %d: %w", q.Programs[0].ID, err)
		}
		e.onClose(p.Close)
		progs[i] = p
	}
	return progs, nil
}

// round runs every configuration's loop once, in an order rotated by round
// so no configuration always follows the same one. With stats, the helper
// also reads the per-check cost from its program's run-time counters, batch
// by batch, and the round checks that the program ran once per bind.
func (cb *checkBench) round(ctx context.Context, r int, withStats bool) error {
	n := len(cb.targets) * len(families)
	for i := 0; i < n; i++ {
		j := (i + r*7) % n
		t, fi := cb.targets[j/len(families)], j%len(families)
		if t.size != nil {
			if err := cb.use(t.size); err != nil {
				return err
			}
		}
		prog := t.progs[fi]
		var id ebpf.ProgramID
		var before *ebpf.ProgramStats
		if withStats && prog != nil {
			info, err := prog.Info()
			if err != nil {
				return fmt.Errorf("%s: %w", t.key, err)
			}
			id, _ = info.ID()
			if before, err = prog.Stats(); err != nil {
				return fmt.Errorf("%s: %w", t.key, err)
			}
		}
		pairedID, err := cb.pairedID(withStats && prog != nil, fi)
		if err != nil {
			return err
		}
		cpu, wall, check, paired, ratio, err := cb.loop(ctx, t, fi, id, pairedID)
		if err != nil {
			return err
		}
		if !withStats {
			t.loop[fi] = append(t.loop[fi], cpu)
			t.loopWall[fi] = append(t.loopWall[fi], wall)
			continue
		}
		t.loopStats[fi] = append(t.loopStats[fi], cpu)
		if prog == nil {
			continue
		}
		after, err := prog.Stats()
		if err != nil {
			return fmt.Errorf("%s: %w", t.key, err)
		}
		if check < 0 || after.RunCount == before.RunCount {
			return fmt.Errorf("%s IPv%d: the program did not run (are BPF stats enabled?)", t.key, families[fi])
		}
		t.check[fi] = append(t.check[fi], check)
		if ratio > 0 {
			t.paired[fi] = append(t.paired[fi], paired)
			t.pairedRatio[fi] = append(t.pairedRatio[fi], ratio)
		}
		t.runs[fi] += after.RunCount - before.RunCount
		t.binds[fi] += uint64(cb.o.iters + warmup(cb.o.iters))
	}
	return nil
}

// loop runs one configuration's helper loop for family fi and returns
// what it printed: loop CPU and wall ns per bind, per-check ns of program
// id, the paired floor's, and the per-check cost over it.
func (cb *checkBench) loop(ctx context.Context, t *target, fi int, id, pairedID ebpf.ProgramID) (cpu, wall, check, paired, ratio float64, err error) {
	deny := "0"
	if t.deny {
		deny = "1"
	}
	out, err := helper(ctx, t.dir, helperLoop, strconv.Itoa(families[fi]), strconv.Itoa(int(t.port)),
		strconv.Itoa(cb.o.iters), strconv.Itoa(int(id)), deny, strconv.Itoa(int(pairedID)))
	if err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("%s IPv%d: %w", t.key, families[fi], err)
	}
	if _, err := fmt.Sscan(out, &cpu, &wall, &check, &paired, &ratio); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("%s: helper printed %q", t.key, out)
	}
	return cpu, wall, check, paired, ratio, nil
}

// pairedID is the id of the paired floor of family fi, or 0 when not wanted.
func (cb *checkBench) pairedID(want bool, fi int) (ebpf.ProgramID, error) {
	if !want || cb.pairedFloor[fi] == nil {
		return 0, nil
	}
	info, err := cb.pairedFloor[fi].Info()
	if err != nil {
		return 0, fmt.Errorf("paired floor: %w", err)
	}
	id, _ := info.ID()
	return id, nil
}

// verr prints a verifier error in full.
func verr(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%+v", ve)
	}
	return err
}

// commas formats 65536 as 65,536.
func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
