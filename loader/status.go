package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Status is the state of the policy in force, as the pinned maps record it.
type Status struct {
	Layout         uint32
	Generation     uint32
	Applied        time.Time
	Started        time.Time
	AttachCgroupID uint64
	Entries, Rules uint32
	Enforce        bool
	AllNetns       bool
	ReloadsOK      uint64
	ReloadsFailed  uint64
	LastFailure    time.Time
	LastError      string
	Digest         string
	Counters       *Counters
	// Links says, for each hook (bind4, bind6, post_bind4, post_bind6), whether its pinned link is attached
	// to the cgroup the state names. Enforcement is in force only if all are.
	Links [nHooks]LinkStatus
}

// LinkStatus is what the kernel says of one pinned link.
type LinkStatus struct {
	Hook     string
	Attached bool
	// Problem says why not, when not attached.
	Problem string
}

// Attached reports whether every link is attached.
func (s *Status) Attached() bool {
	for _, l := range s.Links {
		if !l.Attached {
			return false
		}
	}
	return true
}

// ReadStatus reads the status and counters from the maps pinned under dir,
// without any daemon.
func ReadStatus(dir string) (*Status, error) {
	stateMap, err := ebpf.LoadPinnedMap(filepath.Join(dir, bindguardMapBgState), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned state in %s (is bindguard running with --pin-path %s?): %w", dir, dir, err)
	}
	defer stateMap.Close()
	var st bindguardBgStatus
	if err := stateMap.Lookup(uint32(0), &st); err != nil {
		return nil, fmt.Errorf("read pinned state: %w", err)
	}
	if st.Layout != LayoutVersion {
		return nil, fmt.Errorf("pinned state in %s is of layout %d; this bindguard reads layout %d", dir, st.Layout, LayoutVersion)
	}
	cm, err := ebpf.LoadPinnedMap(filepath.Join(dir, bindguardMapBgCounters), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned counters: %w", err)
	}
	defer cm.Close()
	counters, err := readCounters(cm)
	if err != nil {
		return nil, err
	}
	s := &Status{
		Layout:         st.Layout,
		Generation:     st.Generation,
		Applied:        unixNs(st.AppliedUnixNs),
		Started:        unixNs(st.StartedUnixNs),
		AttachCgroupID: st.AttachCgroupId,
		Entries:        st.Entries,
		Rules:          st.Rules,
		Enforce:        st.Mode == 1,
		AllNetns:       st.AllNetns == 1,
		ReloadsOK:      st.ReloadsOk,
		ReloadsFailed:  st.ReloadsFailed,
		LastFailure:    unixNs(st.LastFailureUnixNs),
		Counters:       counters,
		Digest:         fmt.Sprintf("%x", st.Digest),
	}
	s.LastError = cString(st.LastError[:])
	for i, h := range hooks {
		s.Links[i] = pinnedLinkStatus(dir, i, st.AttachCgroupId)
		s.Links[i].Hook = h.name
	}
	return s, nil
}

func unixNs(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}

// pinnedLinkStatus asks the kernel about the link pinned for hook i.
func pinnedLinkStatus(dir string, i int, cgID uint64) LinkStatus {
	ln, err := link.LoadPinnedLink(filepath.Join(dir, hooks[i].pin), nil)
	if errors.Is(err, os.ErrNotExist) {
		return LinkStatus{Problem: "no pinned link (bindguard detach, or a daemon that exits without --keep-on-exit, removes it)"}
	}
	if err != nil {
		return LinkStatus{Problem: fmt.Sprintf("open pinned link: %v", err)}
	}
	defer ln.Close()
	if err := linkAttached(ln, nil, cgID); err != nil {
		return LinkStatus{Problem: err.Error()}
	}
	return LinkStatus{Attached: true}
}

// linkAttached asks the kernel whether ln is a cgroup link attached to the
// cgroup cgID, running prog when prog is given.
func linkAttached(ln link.Link, prog *ebpf.Program, cgID uint64) error {
	info, err := ln.Info()
	if err != nil {
		return fmt.Errorf("link info: %w", err)
	}
	cg := info.Cgroup()
	switch {
	case cg == nil:
		return fmt.Errorf("link of type %v is not a cgroup link", info.Type)
	case cg.CgroupId == 0:
		return errors.New("detached from its cgroup (bindguard detach, or the cgroup was removed)")
	case cgID != 0 && cg.CgroupId != cgID:
		return fmt.Errorf("attached to cgroup id %d, not %d", cg.CgroupId, cgID)
	}
	if prog != nil {
		pi, err := prog.Info()
		if err != nil {
			return fmt.Errorf("program info: %w", err)
		}
		if id, ok := pi.ID(); ok && id != info.Program {
			return fmt.Errorf("runs program id %d, not this daemon's %d (another daemon took it over)", info.Program, id)
		}
	}
	return nil
}

// CheckAttached asks the kernel whether all of this Loader's links are
// still attached to its cgroup with its programs; before Attach, it says
// they are not. Safe to call from any goroutine.
func (l *Loader) CheckAttached() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return errors.New("loader is closed")
	}
	progs := l.objs.hookPrograms()
	var errs []error
	for i, ln := range l.links {
		if ln == nil {
			errs = append(errs, fmt.Errorf("%s: not attached", hooks[i].name))
			continue
		}
		if err := linkAttached(ln, progs[i], l.cgID); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", hooks[i].name, err))
		}
	}
	return errors.Join(errs...)
}
