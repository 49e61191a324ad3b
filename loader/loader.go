package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// DefaultPinPath is where links and maps are pinned unless told otherwise.
const DefaultPinPath = "/sys/fs/bpf/bindguard"

// Pin names below the pin directory, in the order of Loader.links.
const (
	pinBind4     = "link_bind4"
	pinBind6     = "link_bind6"
	pinPostBind4 = "link_post_bind4"
	pinPostBind6 = "link_post_bind6"
)

var linkPins = [4]string{pinBind4, pinBind6, pinPostBind4, pinPostBind6}

// allPinnedMaps are every map name either variant pins, for removal.
var allPinnedMaps = append(pinnedMapNames(MembersStorage), membersMapName(MembersHash))

// Config says where and how to load.
type Config struct {
	// CgroupPath is the cgroup2 directory to attach to (a file system path).
	CgroupPath string
	// PinPath is the bpffs directory for links and maps; "" pins nothing,
	// so enforcement ends with Close.
	PinPath string
	// AllNetns judges binds in every network namespace, not just the host's.
	AllNetns bool
	// UnitRoot is the registry path below which `unit:` owners are the
	// system manager's units (slices, then the unit): the attach cgroup.
	UnitRoot string
	// Members chooses where memberships live; MembersAuto probes.
	Members Members
	// EventInterval is the minimum time between two events for the same
	// (cgroup, port, protocol, reason); 0 reports every violation.
	EventInterval time.Duration
	// Logf receives notable decisions (takeover, replaced layouts). May be nil.
	Logf func(format string, args ...any)
}

// Loader owns the programs, maps, links and event reader of one daemon.
// See the package documentation for which methods may run concurrently.
type Loader struct {
	cfg  Config
	objs objects
	// mu guards links, objs and closed for the methods that may run
	// concurrently with the others: Counters and CheckAttached.
	mu sync.Mutex
	// links are bind4, bind6, post_bind4, post_bind6 (linkPins).
	links [4]link.Link
	// cgID is the id of the cgroup Attach attached to.
	cgID uint64
	// lock is the pin directory, flock'ed for the Loader's life.
	lock   *os.File
	events *Ring[bindguardBgEvent]
	// tracepoints watch cgroup creation; cgroupEvents reads what they report.
	tracepoints []link.Link
	// tracepointsPinned: Attach pinned them (pinTracepoints).
	tracepointsPinned bool
	cgroupEvents      *Ring[bindguardBgCgroupEvent]
	// enc is the policy in force, plan_ its principals on this node; src
	// is where owners are resolved; pods numbers the pods whose declared
	// ports are in the pairs maps.
	enc   *encoded
	plan_ memberPlan
	src   Sources
	pods  podIDs
	// spec is the parsed object, for the inner map templates.
	spec *ebpf.CollectionSpec
	// slots are the maps of the two policies this Loader wrote (the outer
	// maps hold references of their own); active is the one in force.
	slots  [2]slot
	active uint32
	// settled is set once a swap of this Loader has waited out the binds
	// that could still read the slot it left; until then (a new Loader, one
	// that took pinned maps over, a settle that failed), Apply waits before
	// it rewrites the idle slot.
	settled bool
	// tookOver is set when pinned links of an earlier daemon were found.
	tookOver bool
	// freshMaps is set when pinned maps could not be reused and must be re-pinned.
	freshMaps bool

	generation uint32
	// burned is the highest generation written anywhere, by this Loader or
	// the daemon before it, in force or not (never below generation): an
	// Apply that failed half-way leaves its generation on the idle slot's
	// rules and memberships, so the next Apply must not take it again.
	burned uint32
	closed bool
}

func (c *Config) logf(format string, args ...any) {
	if c.Logf != nil {
		c.Logf(format, args...)
	}
}

// New loads the programs and maps, reusing the maps pinned under cfg.PinPath
// by an earlier daemon when their layout matches. Nothing is attached yet:
// call Apply, then Attach.
func New(cfg Config) (_ *Loader, err error) {
	l := &Loader{cfg: cfg}
	// Before 5.11, BPF memory is charged to RLIMIT_MEMLOCK (64 KiB by default).
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK for BPF maps: %w", err)
	}
	defer func() {
		if err != nil {
			l.Close()
		}
	}()

	if cfg.UnitRoot == "" {
		l.cfg.UnitRoot = "/"
	}
	members, err := chooseMembers(cfg.Members)
	if err != nil {
		return nil, err
	}
	l.objs.members = members
	spec, err := loadBindguard()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	l.spec = spec.Copy()
	cookie, err := HostNetnsCookie()
	if err != nil {
		return nil, err
	}
	if err := setVars(spec, map[string]any{
		bindguardVarBgHostNetnsCookie: cookie,
		bindguardVarBgAllNetns:        boolByte(cfg.AllNetns),
		bindguardVarBgEventIntervalNs: uint64(cfg.EventInterval),
	}); err != nil {
		return nil, err
	}

	opts := ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{}}
	if cfg.PinPath != "" {
		if opts.MapReplacements, err = l.openPins(spec); err != nil {
			return nil, err
		}
	}
	objs, err := loadObjects(spec, members, &opts)
	// The collection took its own references to replacements.
	for _, m := range opts.MapReplacements {
		m.Close()
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load bpf programs: %+v", ve)
		}
		return nil, fmt.Errorf("load bpf programs: %w", err)
	}
	l.objs = *objs
	l.generation = l.stateGeneration()
	l.burned = max(l.generation, l.slotGeneration(0), l.slotGeneration(1))
	return l, nil
}

// slotGeneration is the generation last written to a slot's rules (its meta
// entry, which is written first): that of an Apply in force, replaced, or
// failed after it wrote them. Memberships are written only after the
// rules, so none carries a generation higher than the rules' of its slot.
func (l *Loader) slotGeneration(slot uint32) uint32 {
	var v bindguardBgValue
	if err := l.objs.BgRules.Lookup(slot*rulesEntries, &v); err != nil {
		return 0
	}
	return v.Generation
}

// NextGeneration is the generation the next Apply will take: never one
// written before, so that no membership a failed Apply left in the idle
// slot matches the new rules (owner sets are numbered anew by each
// policy). Callers that label events by generation register it before
// Apply: the first events of the new policy can be read before it returns.
func (l *Loader) NextGeneration() uint32 {
	gen := l.burned + 1
	if gen == 0 { // wrapped: 0 is no policy
		gen = 1
	}
	return gen
}

// nextGeneration takes the generation of a new Apply (NextGeneration).
func (l *Loader) nextGeneration() uint32 {
	l.burned = l.NextGeneration()
	return l.burned
}

// openPins creates and locks the pin directory, then opens the maps an
// earlier daemon pinned there, if they can be reused.
func (l *Loader) openPins(spec *ebpf.CollectionSpec) (map[string]*ebpf.Map, error) {
	mounted, err := ensurePinDir(l.cfg.PinPath)
	if err != nil {
		return nil, err
	}
	if l.lock, err = lockPinPath(l.cfg.PinPath); err != nil {
		return nil, err
	}
	if mounted != "" {
		l.cfg.logf("mounted a bpf file system at %s; in a private mount namespace (a container without the host's /sys/fs/bpf, a unit with PrivateMounts) it and the pins go away with this process", mounted)
	}
	return l.pinnedReplacements(spec)
}

// pinnedReplacements opens the maps an earlier daemon pinned, when they are
// all there and of this layout. Otherwise it returns none, and after the swap
// the new maps replace the old pins.
func (l *Loader) pinnedReplacements(spec *ebpf.CollectionSpec) (map[string]*ebpf.Map, error) {
	found := map[string]*ebpf.Map{}
	closeAll := func() {
		for _, m := range found {
			m.Close()
		}
	}
	var missing []string
	for _, name := range pinnedMapNames(l.objs.members) {
		m, err := ebpf.LoadPinnedMap(filepath.Join(l.cfg.PinPath, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			missing = append(missing, name)
			continue
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("open pinned map %s: %w", name, err)
		}
		found[name] = m
	}
	if len(found) == 0 {
		l.freshMaps = true
		return nil, nil
	}
	reason := ""
	if len(missing) > 0 {
		reason = "missing " + strings.Join(missing, ", ")
	}
	for name, m := range found {
		if err := spec.Maps[name].Compatible(m); err != nil && reason == "" {
			reason = fmt.Sprintf("map %s: %v", name, err)
		}
	}
	if reason == "" {
		var st bindguardBgStatus
		if err := found[bindguardMapBgState].Lookup(uint32(0), &st); err != nil {
			reason = fmt.Sprintf("read state: %v", err)
		} else if st.Layout != LayoutVersion {
			reason = fmt.Sprintf("layout %d, this daemon writes layout %d", st.Layout, LayoutVersion)
		}
	}
	if reason != "" {
		l.cfg.logf("pinned maps in %s are of an incompatible layout (%s): replacing them with new ones", l.cfg.PinPath, reason)
		closeAll()
		l.freshMaps = true
		return nil, nil
	}
	return found, nil
}

func (l *Loader) stateGeneration() uint32 {
	var st bindguardBgStatus
	if err := l.objs.BgState.Lookup(uint32(0), &st); err != nil {
		return 0
	}
	return st.Generation
}

func setVars(spec *ebpf.CollectionSpec, vals map[string]any) error {
	for name, v := range vals {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("bpf spec has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// Generation is the generation of the policy in force (0 before the first Apply).
func (l *Loader) Generation() uint32 { return l.generation }

// TookOver reports whether Attach found and replaced an earlier daemon's links.
func (l *Loader) TookOver() bool { return l.tookOver }

// Close releases every kernel object the Loader holds. Pinned links and maps
// stay, and so does enforcement; without pins, closing detaches. Close is
// idempotent.
func (l *Loader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	var errs []error
	// The readers stay set: a reader still blocked gets os.ErrClosed.
	if l.events != nil {
		errs = append(errs, l.events.Close())
	}
	if l.cgroupEvents != nil {
		errs = append(errs, l.cgroupEvents.Close())
	}
	for _, tp := range l.tracepoints {
		errs = append(errs, tp.Close())
	}
	l.tracepoints = nil
	for i, ln := range l.links {
		if ln != nil {
			errs = append(errs, ln.Close())
			l.links[i] = nil
		}
	}
	for i := range l.slots {
		l.slots[i].close()
	}
	errs = append(errs, l.objs.Close())
	if l.lock != nil {
		errs = append(errs, l.lock.Close()) // releases the flock
		l.lock = nil
	}
	return errors.Join(errs...)
}

// Detach removes the links and the pins, then closes: enforcement ends.
func (l *Loader) Detach() error {
	err := l.detachLinks()
	return errors.Join(err, l.Close())
}

func (l *Loader) detachLinks() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	// The pins are ours to remove only while the pin directory is the one
	// we locked: after a `bindguard detach` removed it, another daemon may
	// have made it anew, and its pins are not ours.
	pins := l.cfg.PinPath != "" && l.ownsPinDir()
	var errs []error
	for i, ln := range l.links {
		if ln == nil {
			continue
		}
		// Detach first: closing the last reference detaches too, but only
		// once the kernel gets to it, and binds are judged until then.
		errs = append(errs, detachLink(ln))
		if pins {
			errs = append(errs, ignoreNotExist(ln.Unpin()))
		}
		errs = append(errs, ln.Close())
		l.links[i] = nil
	}
	if pins {
		errs = append(errs, RemovePins(l.cfg.PinPath))
	} else if l.cfg.PinPath != "" {
		l.cfg.logf("pin path %s is no longer the directory this daemon locked (removed by bindguard detach, perhaps made anew by another daemon): its pins are left alone", l.cfg.PinPath)
	}
	return errors.Join(errs...)
}

// ownsPinDir reports whether the pin path is still the directory locked in
// New: the same inode on the same device.
func (l *Loader) ownsPinDir() bool {
	if l.lock == nil {
		return false
	}
	var locked, now unix.Stat_t
	if unix.Fstat(int(l.lock.Fd()), &locked) != nil || unix.Stat(l.cfg.PinPath, &now) != nil {
		return false
	}
	return locked.Dev == now.Dev && locked.Ino == now.Ino
}

// RemovePins detaches pinned links and removes every pin bindguard made under
// dir, and dir itself. Removing the link pins detaches the programs once no
// process holds the links open.
func RemovePins(dir string) error {
	var errs []error
	for _, name := range append(linkPins[:], pinMkdir, pinRmdir) {
		p := filepath.Join(dir, name)
		ln, err := link.LoadPinnedLink(p, nil)
		if err == nil {
			// Detach explicitly, so another holder of the link cannot keep enforcement alive.
			if err := detachLink(ln); err != nil {
				errs = append(errs, fmt.Errorf("detach %s: %w", p, err))
			}
			ln.Close()
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	for _, name := range allPinnedMaps {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove pin directory: %w", err))
	}
	return errors.Join(errs...)
}

// ensurePinDir creates dir on a bpffs, mounting bpffs at /sys/fs/bpf when
// that is where dir goes and nothing is mounted there. It returns where it
// mounted, if it did.
func ensurePinDir(dir string) (mounted string, err error) {
	parent := filepath.Dir(filepath.Clean(dir))
	if !isBPFFS(parent) {
		if parent == "/sys/fs/bpf" {
			if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
				return "", fmt.Errorf("mount bpffs at %s: %w", parent, err)
			}
			mounted = parent
		} else if !isBPFFS(dir) {
			return "", fmt.Errorf("pin path %s: %s is not on a bpf file system (mount -t bpf bpf %s)", dir, parent, parent)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return mounted, fmt.Errorf("pin path: %w", err)
	}
	return mounted, nil
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

func ignoreNotExist(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// detachLink detaches a link from its hook now (BPF_LINK_DETACH, Linux
// 5.9); where the kernel cannot, closing the last reference does it.
func detachLink(ln link.Link) error {
	if err := ln.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	return nil
}
