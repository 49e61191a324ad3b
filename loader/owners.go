package loader

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// CgroupOp is what happened to a cgroup.
type CgroupOp uint32

const (
	CgroupMkdir = CgroupOp(bindguardBgCgroupOpBG_CGROUP_MKDIR)
	CgroupRmdir = CgroupOp(bindguardBgCgroupOpBG_CGROUP_RMDIR)
)

// CgroupEvent reports a cgroup2 directory created or removed.
type CgroupEvent struct {
	Op       CgroupOp
	ID       uint64
	ParentID uint64
	// Path is the cgroup's path from the cgroup2 root as the kernel reported
	// it, or "" when it did not fit the event.
	Path string
	// CopyFailed: the kernel could not copy the parent's membership into
	// the new cgroup (CgroupCreated repairs it).
	CopyFailed bool
}

// Pin names of the tracepoint links: they stay attached while no daemon
// runs, so cgroups created meanwhile still inherit memberships.
const (
	pinMkdir = "link_cgroup_mkdir"
	pinRmdir = "link_cgroup_rmdir"
)

// WatchCgroups attaches the cgroup_mkdir and cgroup_rmdir tracepoints. From
// then on every new cgroup inherits its parent's membership in the kernel,
// and the daemon learns of it through ReadCgroupEvent. Call it before the
// first Apply, so no cgroup created while memberships are written is missed.
//
// They are pinned, in place of an earlier daemon's, only by Attach with the
// bind programs: until then the earlier daemon's keep running beside them,
// writing the maps its pinned bind programs read. A start that fails before
// (closing this Loader detaches them) leaves its enforcement whole.
func (l *Loader) WatchCgroups() error {
	for i, p := range []*ebpf.Program{l.objs.CgroupMkdir, l.objs.CgroupRmdir} {
		tp, err := link.AttachTracing(link.TracingOptions{Program: p})
		if err != nil {
			return fmt.Errorf("attach tracepoint %s: %w", []string{"cgroup_mkdir", "cgroup_rmdir"}[i], err)
		}
		l.tracepoints = append(l.tracepoints, tp)
	}
	r, err := newRing[bindguardBgCgroupEvent](l.objs.BgCgroupEvents)
	if err != nil {
		return fmt.Errorf("open cgroup event ring buffer: %w", err)
	}
	l.cgroupEvents = r
	return nil
}

// pinTracepoints pins the tracepoint links WatchCgroups attached, once, in
// place of an earlier daemon's (see WatchCgroups).
func (l *Loader) pinTracepoints() error {
	if l.cfg.PinPath == "" || l.tracepointsPinned {
		return nil
	}
	for i, tp := range l.tracepoints {
		if err := l.pinTracepoint(tp, []string{pinMkdir, pinRmdir}[i]); err != nil {
			return err
		}
	}
	l.tracepointsPinned = true
	return nil
}

// pinTracepoint pins a tracepoint link in place of an earlier daemon's,
// which goes only once the new one is attached: inheritance never pauses.
func (l *Loader) pinTracepoint(tp link.Link, name string) error {
	p := filepath.Join(l.cfg.PinPath, name)
	if old, err := link.LoadPinnedLink(p, nil); err == nil {
		old.Unpin()
		old.Close()
	}
	os.Remove(p)
	if err := tp.Pin(p); err != nil {
		return fmt.Errorf("pin tracepoint link: %w", err)
	}
	return nil
}

// ReadCgroupEvent blocks until a cgroup is created or removed. After Close or
// FlushEvents it returns an error matching Stopped.
func (l *Loader) ReadCgroupEvent() (CgroupEvent, error) {
	if l.cgroupEvents == nil {
		return CgroupEvent{}, errors.New("read cgroup event: WatchCgroups was not called")
	}
	var e bindguardBgCgroupEvent
	if err := l.cgroupEvents.Read(&e); err != nil {
		return CgroupEvent{}, err
	}
	ev := CgroupEvent{Op: CgroupOp(e.Op), ID: e.Id, ParentID: e.ParentId, CopyFailed: e.CopyFailed != 0}
	if e.PathLen > 1 && int(e.PathLen) < len(e.Path) {
		ev.Path = cString(e.Path[:])
	}
	return ev, nil
}

// store is the membership map of the loaded variant.
func (l *Loader) store() *memberStore {
	return &memberStore{m: l.objs.Members, storage: l.objs.members == MembersStorage, r: l.src.Cgroups, logf: l.cfg.logf}
}

// plan resolves the policy's principals on this node: owner cgroups that
// exist, the system units found, kubelet's pod parents and the pods known.
func (l *Loader) plan(enc *encoded, src Sources) (memberPlan, []Unresolved, error) {
	l.src = src
	plan := memberPlan{}
	var unresolved []Unresolved
	for _, p := range slices.Sorted(maps.Keys(enc.byPath)) {
		if _, _, err := src.Cgroups.ID(p); err != nil {
			unresolved = append(unresolved, enc.unresolved(enc.byPath[p], "cgroup "+p, err)...)
			continue
		}
		plan.add(p, memberOwn{bits: enc.byPath[p]})
	}
	units := slices.Sorted(maps.Keys(enc.byUnit))
	found, err := src.Cgroups.FindSystemUnits(l.cfg.UnitRoot, units)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range units {
		if len(found[u]) == 0 {
			unresolved = append(unresolved, enc.unresolved(enc.byUnit[u], "unit "+u, fmt.Errorf("no cgroup of system unit %s below %s", u, l.cfg.UnitRoot))...)
		}
		for _, p := range found[u] {
			plan.add(p, memberOwn{bits: enc.byUnit[u]})
		}
	}
	if src.Pods != nil {
		for _, p := range src.Pods.SpawnPending() {
			plan.add(cleanPath(p), memberOwn{flags: memberSpawnPending, override: true})
		}
		for _, pc := range src.Pods.PodCgroups() {
			plan.add(cleanPath(pc.Path), l.podOwn(enc, pc))
		}
	}
	return plan, unresolved, nil
}

// unresolved lists one Unresolved per rule of the sets an owner is in.
func (e *encoded) unresolved(sets setBits, owner string, err error) []Unresolved {
	var out []Unresolved
	for s := range e.sets {
		if s >= OwnerSets || !sets.has(s) {
			continue
		}
		for _, r := range e.setRules[s] {
			out = append(out, Unresolved{Port: r.Port, Protocol: r.Protocol, Owner: owner, Err: err})
		}
	}
	return out
}

// add merges what a cgroup is as several principals.
func (p memberPlan) add(rel string, o memberOwn) {
	cur, ok := p[rel]
	if !ok {
		p[rel] = o
		return
	}
	cur.bits.or(o.bits)
	if o.override {
		cur.flags, cur.pod, cur.override = o.flags, o.pod, true
	} else if !cur.override {
		cur.flags |= o.flags
	}
	p[rel] = cur
}

// podOwn is what a pod's or a container's cgroup is by itself.
func (l *Loader) podOwn(enc *encoded, pc PodCgroup) memberOwn {
	if pc.Pod == nil || pc.Pod.Pending {
		return memberOwn{flags: memberPending, override: true}
	}
	o := memberOwn{bits: enc.podSets(pc.Pod), flags: memberPod, override: true}
	switch {
	case !enc.podPorts || !pc.Pod.PortsKnown:
		// No pairs: nothing reads them, or nothing is known. Pod id 0
		// makes the pod-ports check judge the pod as pending.
	case len(pc.Pod.Ports) > MaxPodPorts:
		// Anyone who may create pods may declare thousands of host ports;
		// their pairs share one map with the policy's, and must not fill it.
		l.cfg.logf("pod %s/%s (uid %s) declares %d host ports, more than %d: its binds are judged as a pending pod's by the pod-ports check",
			pc.Pod.Namespace, pc.Pod.Name, pc.Pod.UID, len(pc.Pod.Ports), MaxPodPorts)
	default:
		o.pod = l.pods.id(pc.Pod)
	}
	if pc.Pod.Container == "" && enc.podContainers {
		// Containers must each be resolved: they start pending.
		o.flags |= memberSpawnPending
	}
	return o
}

// CgroupCreated puts in force what a new cgroup is, when the policy names
// it: a `cgroup:` owner path or a system unit that appeared after the policy
// was applied. It also repairs a membership the kernel failed to copy. It
// returns whether it wrote anything. Callers serialise it with Apply.
func (l *Loader) CgroupCreated(ev CgroupEvent) (bool, error) {
	if l.enc == nil || ev.Path == "" {
		return false, nil
	}
	rel := cleanPath(ev.Path)
	own, principal := l.principal(rel)
	if principal {
		l.plan_.add(rel, own)
	}
	if !principal && !ev.CopyFailed {
		return false, nil
	}
	if !cgroups.AwaitDir(l.src.Cgroups.Abs(rel), visibleWait) {
		return false, nil // removed before it could be written: its storage went with it
	}
	if err := l.store().writeFrom(l.plan_, rel, l.active, l.generation); err != nil {
		return false, fmt.Errorf("membership of new cgroup %s: %w", rel, err)
	}
	return true, nil
}

// visibleWait bounds how long CgroupCreated waits for a new cgroup's
// directory to appear (see cgroups.AwaitDir).
var visibleWait = cgroups.AwaitNew

// principal says whether rel is named by the policy in force by itself.
func (l *Loader) principal(rel string) (memberOwn, bool) {
	var own memberOwn
	found := false
	if b, ok := l.enc.byPath[rel]; ok {
		own.bits.or(b)
		found = true
	}
	if u, ok := cgroups.SystemUnit(l.cfg.UnitRoot, rel); ok {
		if b, ok := l.enc.byUnit[u]; ok {
			own.bits.or(b)
			found = true
		}
	}
	return own, found
}

// CgroupRemoved forgets a cgroup that went away. Its membership goes with
// it (cgroup storage), or the kernel's rmdir program deletes it (hash).
func (l *Loader) CgroupRemoved(ev CgroupEvent) {
	if l.plan_ != nil && ev.Path != "" {
		delete(l.plan_, cleanPath(ev.Path))
	}
}

// SetPod puts in force what a pod's or a container's cgroup is, now that the
// runtime reported it (or that it is pending), and what is below it. The
// pod's declared ports are written before its membership names them.
func (l *Loader) SetPod(pc PodCgroup) error {
	if l.enc == nil {
		return nil
	}
	rel := cleanPath(pc.Path)
	own := l.podOwn(l.enc, pc)
	if own.pod != 0 {
		if err := l.putPairs(l.pods.pairsOf(pc.Pod.UID)); err != nil {
			return err
		}
	}
	l.plan_.add(rel, own)
	return l.store().writeFrom(l.plan_, rel, l.active, l.generation)
}

// SetSpawnPending marks one of kubelet's pod parents: cgroups created below
// it are pods whose identity is pending.
func (l *Loader) SetSpawnPending(rel string) error {
	if l.enc == nil {
		return nil
	}
	rel = cleanPath(rel)
	l.plan_.add(rel, memberOwn{flags: memberSpawnPending, override: true})
	return l.store().writeFrom(l.plan_, rel, l.active, l.generation)
}

// PodRemoved forgets a pod: its declared ports leave the policy in force.
func (l *Loader) PodRemoved(uid string) {
	keys := l.pods.pairsOf(uid)
	if s := l.slots[l.active]; s.pairs != nil {
		for i := range keys {
			s.pairs.Delete(&keys[i])
		}
	}
	l.pods.forget(uid)
}

func (l *Loader) putPairs(keys []bindguardBgKey) error {
	s := l.slots[l.active]
	if s.pairs == nil {
		return nil
	}
	one := uint8(1)
	for i := range keys {
		if err := s.pairs.Put(&keys[i], &one); err != nil {
			return fmt.Errorf("declared ports: %w", err)
		}
	}
	return nil
}

// RefreshMembers rewrites every membership of the policy in force from what
// exists now: after cgroup events were lost.
func (l *Loader) RefreshMembers(src Sources) (int, error) {
	if l.enc == nil {
		return 0, nil
	}
	plan, _, err := l.plan(l.enc, src)
	if err != nil {
		return 0, err
	}
	store := l.store()
	if err := store.writeAll(plan, l.active, l.generation); err != nil {
		return store.written, err
	}
	l.plan_ = plan
	return store.written, nil
}

// CgroupEventsLost is how many cgroup events did not fit the ring buffer
// since load. When it grows, call RefreshMembers: a creation may be among them.
func (l *Loader) CgroupEventsLost() (uint64, error) {
	var n uint64
	if err := l.objs.BgCgroupEventsLost.Get(&n); err != nil {
		return 0, fmt.Errorf("read lost cgroup events: %w", err)
	}
	return n, nil
}

// podIDs numbers the pods whose declared ports are known, for the
// BG_PAIR_POD_PORT pairs. Ids live as long as the Loader; 0 is "unknown".
// MaxPodPorts is the most declared host ports one pod's pairs may take.
const MaxPodPorts = 1024

type podIDs struct {
	ids   map[string]uint32
	ports map[string][]policy.PodPort
	next  uint32
}

func (p *podIDs) id(pod *policy.Pod) uint32 {
	if p.ids == nil {
		p.ids, p.ports = map[string]uint32{}, map[string][]policy.PodPort{}
	}
	id, ok := p.ids[pod.UID]
	if !ok {
		p.next++
		id = p.next
		p.ids[pod.UID] = id
	}
	p.ports[pod.UID] = pod.Ports
	return id
}

func (p *podIDs) pairsOf(uid string) []bindguardBgKey {
	id, ok := p.ids[uid]
	if !ok {
		return nil
	}
	var keys []bindguardBgKey
	for _, pp := range p.ports[uid] {
		keys = append(keys, bindguardBgKey{Kind: pairPodPort, Proto: protoOf(pp.Protocol), Port: pp.Port, Id: uint64(id)})
	}
	return keys
}

func (p *podIDs) pairs() []bindguardBgKey {
	var keys []bindguardBgKey
	for _, uid := range slices.Sorted(maps.Keys(p.ids)) {
		keys = append(keys, p.pairsOf(uid)...)
	}
	return keys
}

func (p *podIDs) forget(uid string) {
	delete(p.ids, uid)
	delete(p.ports, uid)
}

var _ Resolver = (*cgroups.FS)(nil)
