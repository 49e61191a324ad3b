package loader

import (
	"errors"
	"fmt"
	"path"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/bindguard/bindguard/cgroups"
)

// CgroupOp is what happened to a cgroup.
type CgroupOp uint32

const (
	CgroupMkdir = CgroupOp(bindguardBgCgroupOpBG_CGROUP_MKDIR)
	CgroupRmdir = CgroupOp(bindguardBgCgroupOpBG_CGROUP_RMDIR)
)

// CgroupEvent reports a cgroup2 directory created or removed.
type CgroupEvent struct {
	Op CgroupOp
	ID uint64
	// Path is the cgroup's path from the cgroup2 root as the kernel reported
	// it, or "" when it did not fit the event.
	Path string
}

// WatchCgroups attaches the cgroup_mkdir and cgroup_rmdir tracepoints, so
// owners that appear after the policy was applied can be put in force with
// CgroupCreated. Read what they report with ReadCgroupEvent.
func (l *Loader) WatchCgroups() error {
	for i, p := range []*ebpf.Program{l.objs.BindguardCgroupMkdir, l.objs.BindguardCgroupRmdir} {
		name := []string{"cgroup_mkdir", "cgroup_rmdir"}[i]
		tp, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: p})
		if err != nil {
			return fmt.Errorf("attach tracepoint %s: %w", name, err)
		}
		l.tracepoints = append(l.tracepoints, tp)
	}
	r, err := ringbuf.NewReader(l.objs.BgCgroupEvents)
	if err != nil {
		return fmt.Errorf("open cgroup event ring buffer: %w", err)
	}
	l.cgroupEvents = r
	return nil
}

// ReadCgroupEvent blocks until a cgroup is created or removed. After Close or
// FlushEvents it returns an error matching Stopped.
func (l *Loader) ReadCgroupEvent() (CgroupEvent, error) {
	if l.cgroupEvents == nil {
		return CgroupEvent{}, errors.New("read cgroup event: WatchCgroups was not called")
	}
	if err := l.cgroupEvents.ReadInto(&l.cgroupRec); err != nil {
		return CgroupEvent{}, err
	}
	var e bindguardBgCgroupEvent
	if err := decodeInto(l.cgroupRec.RawSample, &e); err != nil {
		return CgroupEvent{}, err
	}
	ev := CgroupEvent{Op: CgroupOp(e.Op), ID: e.Id}
	if e.PathLen > 1 && int(e.PathLen) < len(e.Path) {
		ev.Path = cString(e.Path[:])
	}
	return ev, nil
}

// CgroupCreated puts in force the owners a new cgroup stands for: the rules
// that name its path as a `cgroup:` owner or its name as a `unit:` owner. It
// returns how many (port, protocol) rules it joined. Callers serialise it
// with Apply.
func (l *Loader) CgroupCreated(id uint64, rel string) (int, error) {
	s := l.slots[l.active]
	if s.rules == nil {
		return 0, nil
	}
	depth := cgroups.Depth(rel)
	if depth > MaxCgroupDepth {
		return 0, nil
	}
	refs := append(append([]ownerRef(nil), l.owners.byPath[rel]...), l.owners.byUnit[path.Base(rel)]...)
	joined := 0
	for _, ref := range refs {
		// The owner first, then the levels the rule looks at: a bind in
		// between sees the rule as it was, never a level without its owner.
		k := bindguardBgKey{Kind: kindCgroup, Proto: ref.proto, Port: ref.port, Id: id}
		if err := s.owners.Put(&k, &ref.value); err != nil {
			return joined, fmt.Errorf("add owner %s for %d: %w", rel, ref.port, err)
		}
		idx := ruleIndex(ref.proto, ref.port)
		var v bindguardBgValue
		if err := s.rules.Lookup(&idx, &v); err != nil {
			return joined, fmt.Errorf("read rule %d: %w", ref.port, err)
		}
		widen(&v, uint8(depth))
		if err := s.rules.Put(&idx, &v); err != nil {
			return joined, fmt.Errorf("widen rule %d: %w", ref.port, err)
		}
		if !slices.Contains(l.owners.byID[id], k) {
			l.owners.byID[id] = append(l.owners.byID[id], k)
		}
		joined++
	}
	return joined, nil
}

// CgroupRemoved drops the owner entries of a cgroup that went away. Cgroup
// ids are never reused, so this only frees map space.
func (l *Loader) CgroupRemoved(id uint64) int {
	keys := l.owners.byID[id]
	if s := l.slots[l.active]; s.owners != nil {
		for i := range keys {
			s.owners.Delete(&keys[i])
		}
	}
	delete(l.owners.byID, id)
	return len(keys)
}

// CgroupEventsLost is how many cgroup events did not fit the ring buffer
// since load. When it grows, call ResolveOwners: a creation may be among them.
func (l *Loader) CgroupEventsLost() (uint64, error) {
	var n uint64
	if err := l.objs.BgCgroupEventsLost.Get(&n); err != nil {
		return 0, fmt.Errorf("read lost cgroup events: %w", err)
	}
	return n, nil
}

// ResolveOwners puts in force every owner cgroup of the policy that exists
// now. Adding an owner that is in force already changes nothing, so it is
// safe to run after WatchCgroups to cover cgroups created in between.
func (l *Loader) ResolveOwners(r Resolver) (int, error) {
	joined := 0
	resolve := func(rel string) error {
		id, _, err := r.ID(rel)
		if err != nil {
			return nil // still absent
		}
		n, err := l.CgroupCreated(id, rel)
		joined += n
		return err
	}
	for p := range l.owners.byPath {
		if err := resolve(p); err != nil {
			return joined, err
		}
	}
	names := make([]string, 0, len(l.owners.byUnit))
	for u := range l.owners.byUnit {
		names = append(names, u)
	}
	units, err := r.FindUnits(names)
	if err != nil {
		return joined, err
	}
	for _, paths := range units {
		for _, p := range paths {
			if err := resolve(p); err != nil {
				return joined, err
			}
		}
	}
	return joined, nil
}
