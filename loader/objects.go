package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
)

// Members says where the kernel keeps each cgroup's owner memberships.
type Members string

const (
	// MembersAuto picks cgroup storage where the kernel has it (6.2+), the hash otherwise.
	MembersAuto Members = ""
	// MembersStorage keeps memberships in each cgroup's own storage.
	MembersStorage Members = "storage"
	// MembersHash keeps them in a hash keyed by cgroup id (bounded by
	// BG_MEMBERS_MAX_ENTRIES): the fallback before 6.2.
	MembersHash Members = "hash"
)

// commonObjects are the maps both program variants share.
type commonObjects struct {
	BgRules            *ebpf.Map      `ebpf:"bg_rules"`
	BgPairs            *ebpf.Map      `ebpf:"bg_pairs"`
	BgActive           *ebpf.Map      `ebpf:"bg_active"`
	BgCounters         *ebpf.Map      `ebpf:"bg_counters"`
	BgEvents           *ebpf.Map      `ebpf:"bg_events"`
	BgRatelimit        *ebpf.Map      `ebpf:"bg_ratelimit"`
	BgBuckets          *ebpf.Map      `ebpf:"bg_buckets"`
	BgLastBind         *ebpf.Map      `ebpf:"bg_last_bind"`
	BgState            *ebpf.Map      `ebpf:"bg_state"`
	BgCgroupEvents     *ebpf.Map      `ebpf:"bg_cgroup_events"`
	BgCgroupEventsLost *ebpf.Variable `ebpf:"bg_cgroup_events_lost"`
}

// variantObjects are one variant's programs and membership map, named alike.
type variantObjects struct {
	Bind4, Bind6         *ebpf.Program
	PostBind4, PostBind6 *ebpf.Program
	CgroupMkdir          *ebpf.Program
	CgroupRmdir          *ebpf.Program
	Members              *ebpf.Map
}

type storageObjects struct {
	commonObjects
	Bind4       *ebpf.Program `ebpf:"bindguard_bind4_stg"`
	Bind6       *ebpf.Program `ebpf:"bindguard_bind6_stg"`
	PostBind4   *ebpf.Program `ebpf:"bindguard_post_bind4_stg"`
	PostBind6   *ebpf.Program `ebpf:"bindguard_post_bind6_stg"`
	CgroupMkdir *ebpf.Program `ebpf:"bindguard_cgroup_mkdir_stg"`
	CgroupRmdir *ebpf.Program `ebpf:"bindguard_cgroup_rmdir_stg"`
	Members     *ebpf.Map     `ebpf:"bg_members"`
}

type hashObjects struct {
	commonObjects
	Bind4       *ebpf.Program `ebpf:"bindguard_bind4_hash"`
	Bind6       *ebpf.Program `ebpf:"bindguard_bind6_hash"`
	PostBind4   *ebpf.Program `ebpf:"bindguard_post_bind4_hash"`
	PostBind6   *ebpf.Program `ebpf:"bindguard_post_bind6_hash"`
	CgroupMkdir *ebpf.Program `ebpf:"bindguard_cgroup_mkdir_hash"`
	CgroupRmdir *ebpf.Program `ebpf:"bindguard_cgroup_rmdir_hash"`
	Members     *ebpf.Map     `ebpf:"bg_members_hash"`
}

// objects are what one Loader loaded: the shared maps and one variant.
type objects struct {
	commonObjects
	variantObjects
	members Members
}

// membersMapName is the name the membership map of a variant is pinned by.
func membersMapName(m Members) string {
	if m == MembersHash {
		return "bg_members_hash"
	}
	return "bg_members"
}

// chooseMembers resolves MembersAuto against the running kernel. The
// environment variable BINDGUARD_MEMBERS (storage|hash) overrides it, so the
// fallback can be tested and measured on a new kernel.
func chooseMembers(want Members) (Members, error) {
	if env := Members(os.Getenv("BINDGUARD_MEMBERS")); want == MembersAuto && env != "" {
		want = env
	}
	switch want {
	case MembersStorage, MembersHash:
		return want, nil
	case MembersAuto:
		err := features.HaveMapType(ebpf.CgroupStorage)
		if err == nil {
			return MembersStorage, nil
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			return MembersHash, nil
		}
		return "", fmt.Errorf("probe cgroup storage: %w", err)
	}
	return "", fmt.Errorf("membership store %q: want storage or hash", want)
}

// loadObjects loads the shared maps and the programs of one variant.
func loadObjects(spec *ebpf.CollectionSpec, m Members, opts *ebpf.CollectionOptions) (*objects, error) {
	o := &objects{members: m}
	if m == MembersStorage {
		var s storageObjects
		if err := spec.LoadAndAssign(&s, opts); err != nil {
			return nil, err
		}
		o.commonObjects = s.commonObjects
		o.variantObjects = variantObjects{s.Bind4, s.Bind6, s.PostBind4, s.PostBind6, s.CgroupMkdir, s.CgroupRmdir, s.Members}
		return o, nil
	}
	var h hashObjects
	if err := spec.LoadAndAssign(&h, opts); err != nil {
		return nil, err
	}
	o.commonObjects = h.commonObjects
	o.variantObjects = variantObjects{h.Bind4, h.Bind6, h.PostBind4, h.PostBind6, h.CgroupMkdir, h.CgroupRmdir, h.Members}
	return o, nil
}

// Close releases every map and program; it is safe on a zero or closed value.
func (o *objects) Close() error {
	if o == nil {
		return nil
	}
	var errs []error
	for _, p := range []**ebpf.Program{&o.Bind4, &o.Bind6, &o.PostBind4, &o.PostBind6, &o.CgroupMkdir, &o.CgroupRmdir} {
		if *p != nil {
			errs = append(errs, (*p).Close())
			*p = nil
		}
	}
	for _, m := range []**ebpf.Map{&o.BgRules, &o.BgPairs, &o.BgActive, &o.BgCounters, &o.BgEvents, &o.BgRatelimit,
		&o.BgBuckets, &o.BgLastBind, &o.BgState, &o.BgCgroupEvents, &o.Members} {
		if *m != nil {
			errs = append(errs, (*m).Close())
			*m = nil
		}
	}
	return errors.Join(errs...)
}

// pinned returns the maps pinned (and taken over) by name.
func (o *objects) pinned() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bindguardMapBgRules:       o.BgRules,
		bindguardMapBgPairs:       o.BgPairs,
		bindguardMapBgActive:      o.BgActive,
		bindguardMapBgCounters:    o.BgCounters,
		bindguardMapBgEvents:      o.BgEvents,
		bindguardMapBgRatelimit:   o.BgRatelimit,
		bindguardMapBgBuckets:     o.BgBuckets,
		bindguardMapBgState:       o.BgState,
		membersMapName(o.members): o.Members,
	}
}

// pinnedMapNames are the names pinned for a variant.
func pinnedMapNames(m Members) []string {
	return []string{bindguardMapBgRules, bindguardMapBgPairs, bindguardMapBgActive, bindguardMapBgCounters,
		bindguardMapBgEvents, bindguardMapBgRatelimit, bindguardMapBgBuckets, bindguardMapBgState, membersMapName(m)}
}
