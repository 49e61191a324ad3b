package loader

import (
	"errors"
	"fmt"
	"os"
	"path"
	"sort"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/policy"
)

// Resolver finds the cgroups that registry owners name. *cgroups.FS is one.
type Resolver interface {
	// Abs turns a registry path into the cgroup2 directory.
	Abs(rel string) string
	// ID is the cgroup id (and depth) of a registry path.
	ID(rel string) (id uint64, depth int, err error)
	// FindSystemUnits finds the cgroups of system units below root.
	FindSystemUnits(root string, units []string) (map[string][]string, error)
}

// PodCgroup is a cgroup of a Kubernetes pod with what is known of it.
type PodCgroup struct {
	// Path is the registry path of the pod's cgroup, or of one container's.
	Path string
	// Pod is the identity: Container "" for the pod's own cgroup;
	// Pending while the runtime has not reported the pod.
	Pod *policy.Pod
}

// PodSource tells the loader of the pods on the node. The daemon's pod
// tracker is one; nil means a node without pods.
type PodSource interface {
	// PodCgroups are the pod and container cgroups known now.
	PodCgroups() []PodCgroup
	// SpawnPending are kubelet's pod parents (kubepods and its QoS
	// levels): a cgroup created below one is a pod whose identity is
	// pending until the runtime reports it.
	SpawnPending() []string
}

// Sources are where the loader learns which cgroups are owners.
type Sources struct {
	Cgroups Resolver
	Pods    PodSource
}

// memberOwn is what a cgroup is by itself, before what it inherits.
type memberOwn struct {
	bits  setBits
	flags uint16
	pod   uint32
	// override: flags and pod replace the inherited ones (a resolved or
	// pending pod, a pod parent), instead of adding to them.
	override bool
}

// memberPlan is every principal cgroup of one policy on this node.
type memberPlan map[string]memberOwn

const (
	memberPod          = uint16(bindguardBgMemberFlagsBG_MEMBER_POD)
	memberPending      = uint16(bindguardBgMemberFlagsBG_MEMBER_PENDING)
	memberSpawnPending = uint16(bindguardBgMemberFlagsBG_MEMBER_SPAWN_PENDING)
)

// inheritSlot is what a new cgroup gets from its parent at mkdir: the
// kernel's inherit() in bpf/bindguard.c.
func inheritSlot(p bindguardBgMemberSlot) bindguardBgMemberSlot {
	if p.Flags&memberSpawnPending != 0 {
		p.Flags = p.Flags&^(memberSpawnPending|memberPod) | memberPending
	}
	return p
}

func (o memberOwn) applyTo(s *bindguardBgMemberSlot) {
	for i := range s.Bits {
		s.Bits[i] |= o.bits[i]
	}
	if o.override {
		s.Flags, s.Pod = o.flags, o.pod
	} else {
		s.Flags |= o.flags
	}
}

// memberStore reads and writes the membership map by cgroup.
type memberStore struct {
	m       *ebpf.Map
	storage bool
	r       Resolver
	// written counts the cgroups written since the store was made.
	written int
	// logf says which subtrees were skipped (see walk).
	logf func(format string, args ...any)
}

// key opens what the map is keyed by: a cgroup directory fd (storage), or
// the cgroup id (hash). release closes what key opened.
func (s *memberStore) key(rel string) (key any, release func(), err error) {
	if !s.storage {
		id, _, err := s.r.ID(rel)
		return id, func() {}, err
	}
	fd, err := unix.Open(s.r.Abs(rel), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, &os.PathError{Op: "open", Path: s.r.Abs(rel), Err: err}
	}
	return int32(fd), func() { unix.Close(fd) }, nil
}

// slot reads one slot's part of a cgroup's membership (zero when it has none).
func (s *memberStore) slot(rel string, slot uint32) (bindguardBgMemberSlot, error) {
	k, release, err := s.key(rel)
	if err != nil {
		return bindguardBgMemberSlot{}, err
	}
	defer release()
	var v bindguardBgMember
	if err := s.m.Lookup(k, &v); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return bindguardBgMemberSlot{}, nil
		}
		return bindguardBgMemberSlot{}, fmt.Errorf("read membership of %s: %w", rel, err)
	}
	return v.Slot[slot&1], nil
}

// put writes one slot's part of a cgroup's membership, keeping the other.
func (s *memberStore) put(rel string, slot uint32, part bindguardBgMemberSlot) error {
	k, release, err := s.key(rel)
	if err != nil {
		return err
	}
	defer release()
	var v bindguardBgMember
	if err := s.m.Lookup(k, &v); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("read membership of %s: %w", rel, err)
	}
	v.Slot[slot&1] = part
	if failWrites != nil && failWrites(rel) {
		return fmt.Errorf("write membership of %s: %w", rel, errInjected)
	}
	if err := s.m.Update(k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write membership of %s: %w", rel, err)
	}
	s.written++
	return nil
}

// walk writes the membership of rel and of every cgroup below it, each
// cgroup first and then its children, so a cgroup created meanwhile either
// inherits the written value at mkdir or is listed and written.
func (s *memberStore) walk(plan memberPlan, rel string, inherited bindguardBgMemberSlot, slot, gen uint32) error {
	eff := inheritSlot(inherited)
	if own, ok := plan[rel]; ok {
		own.applyTo(&eff)
	}
	eff.Generation = gen
	if err := s.put(rel, slot, eff); err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) {
			return nil // removed meanwhile: its storage went with it
		}
		if errors.Is(err, unix.ENAMETOOLONG) {
			return s.skip(rel, err)
		}
		return err
	}
	ents, err := os.ReadDir(s.r.Abs(rel))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if errors.Is(err, unix.ENAMETOOLONG) {
			return s.skip(rel, err)
		}
		return fmt.Errorf("list cgroups below %s: %w", rel, err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if err := s.walk(plan, path.Join(rel, e.Name()), eff, slot, gen); err != nil {
				return err
			}
		}
	}
	return nil
}

// skip leaves rel's subtree unwritten: its path is longer than the kernel
// takes (a nest only its creator can have made so deep, below a cgroup
// delegated to it). Failing the whole write instead would let whoever can
// create cgroups below an owner block every policy change on the node.
// What is not written is judged as no owner's in this slot, so the subtree
// loses ownership, never gains it.
func (s *memberStore) skip(rel string, err error) error {
	if s.logf != nil {
		s.logf("cgroup %.200s… and the cgroups below it keep no owner membership: %v", rel, err)
	}
	return nil
}

// tops returns the principals that lie below no other principal, sorted.
func (p memberPlan) tops() []string {
	var out []string
	for k := range p {
		top := true
		for a := k; a != "/"; {
			a = path.Dir(a)
			if _, ok := p[a]; ok {
				top = false
				break
			}
		}
		if top {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// writeAll writes the memberships of every principal of the plan, and of
// everything below them, into slot with generation gen.
func (s *memberStore) writeAll(plan memberPlan, slot, gen uint32) error {
	for _, top := range plan.tops() {
		if err := s.walk(plan, top, bindguardBgMemberSlot{}, slot, gen); err != nil {
			return err
		}
	}
	return nil
}

// writeFrom rewrites rel and its subtree in slot, starting from what its
// parent holds now: the way an owner that appeared later joins.
func (s *memberStore) writeFrom(plan memberPlan, rel string, slot, gen uint32) error {
	var inherited bindguardBgMemberSlot
	if rel != "/" {
		parent, err := s.slot(path.Dir(rel), slot)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		if parent.Generation == gen {
			inherited = parent
		}
	}
	return s.walk(plan, rel, inherited, slot, gen)
}

// failWrites, set by tests only, makes the membership write of the cgroups
// it returns true for fail, as a full map or a vanished path would.
var (
	failWrites  func(rel string) bool
	errInjected = errors.New("injected by a test")
)
