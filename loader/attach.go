package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
)

// hooks are the attach points, in the order of Loader.links.
var hooks = [nHooks]struct {
	name string
	typ  ebpf.AttachType
	pin  string
}{
	{"bind4", ebpf.AttachCGroupInet4Bind, pinBind4},
	{"bind6", ebpf.AttachCGroupInet6Bind, pinBind6},
	{"post_bind4", ebpf.AttachCGroupInet4PostBind, pinPostBind4},
	{"post_bind6", ebpf.AttachCGroupInet6PostBind, pinPostBind6},
}

const nHooks = 4

// hookPrograms are the loaded programs, in the order of hooks.
func (o *objects) hookPrograms() [nHooks]*ebpf.Program {
	return [nHooks]*ebpf.Program{o.Bind4, o.Bind6, o.PostBind4, o.PostBind6}
}

// Attach attaches bind4, bind6, post_bind4 and post_bind6 to the configured cgroup. When an earlier
// daemon's links are pinned, it replaces their programs in place with
// link.Update instead: the hook is never empty. Call Apply first, so no bind
// is judged against an empty policy.
//
// Ownership moves only once everything is in place: new links are attached
// next to the old ones, then the maps and the new links are pinned, and only
// then are the old links detached. An Attach that fails on the way leaves an
// earlier daemon's links attached and pinned as they were.
func (l *Loader) Attach() error {
	if l.generation == 0 || l.slots[l.active].pairs == nil {
		return errors.New("attach: no policy applied yet")
	}
	var cgID uint64
	if l.cfg.CgroupPath != "" {
		id, err := cgroups.IDOf(l.cfg.CgroupPath)
		if err != nil {
			return fmt.Errorf("attach: %w", err)
		}
		cgID = id
	}
	var a attachment
	if err := l.attachBoth(&a, cgID); err != nil {
		a.abandon(l.cfg.PinPath, l.cfg.logf)
		return err
	}
	if err := l.pinAll(&a); err != nil {
		a.abandon(l.cfg.PinPath, l.cfg.logf)
		return err
	}
	// Every link is in place and pinned: the old ones may go now.
	a.retire(l.cfg.logf)
	l.mu.Lock()
	l.links, l.cgID = a.links, cgID
	l.tookOver = a.tookOver
	l.mu.Unlock()
	return l.updateState(func(st *bindguardBgStatus) {
		st.AttachCgroupId = cgID
		st.StartedUnixNs = uint64(time.Now().UnixNano())
	})
}

// attachment is an Attach under way: what it made, and what it replaces.
type attachment struct {
	links [nHooks]link.Link
	// fresh[i] is set when links[i] is a new link, not an old one taken over.
	fresh [nHooks]bool
	// old[i] is an earlier daemon's link that links[i] replaces.
	old      [nHooks]link.Link
	tookOver bool
	// pinned[i] is set once links[i] is pinned in place of old[i].
	pinned [nHooks]bool
}

// attachBoth takes over each pinned link or attaches a new one next to it.
func (l *Loader) attachBoth(a *attachment, cgID uint64) error {
	progs := l.objs.hookPrograms()
	for i, h := range hooks {
		if l.cfg.PinPath != "" {
			p := filepath.Join(l.cfg.PinPath, h.pin)
			old, err := link.LoadPinnedLink(p, nil)
			switch {
			case err == nil:
				if terr := l.takeOver(old, progs[i], cgID); terr == nil {
					a.links[i], a.tookOver = old, true
					continue
				} else {
					l.cfg.logf("pinned link %s cannot be taken over (%v): attaching anew, and removing it once the new link is in place", p, terr)
					a.old[i] = old
				}
			case !errors.Is(err, os.ErrNotExist):
				l.cfg.logf("pinned link %s unreadable (%v): attaching anew", p, err)
			}
		}
		ln, err := link.AttachCgroup(link.CgroupOptions{Path: l.cfg.CgroupPath, Attach: h.typ, Program: progs[i]})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", h.typ, l.cfg.CgroupPath, err)
		}
		a.links[i], a.fresh[i] = ln, true
	}
	return nil
}

// pinAll pins the maps, then each new link in place of what is pinned at
// its name: pinned under a temporary name and renamed over, so the name is
// never empty.
func (l *Loader) pinAll(a *attachment) error {
	if l.cfg.PinPath == "" {
		return nil
	}
	if err := l.pinMaps(); err != nil {
		return err
	}
	for i, h := range hooks {
		if !a.fresh[i] {
			continue
		}
		p := filepath.Join(l.cfg.PinPath, h.pin)
		tmp := p + "_new" // bpffs refuses dots in names
		os.Remove(tmp)
		if err := a.links[i].Pin(tmp); err != nil {
			return fmt.Errorf("pin link %s: %w", h.name, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			a.links[i].Unpin()
			return fmt.Errorf("pin link %s in place: %w", h.name, err)
		}
		a.pinned[i] = true
	}
	// Last, with everything they write pinned: the tracepoints.
	return l.pinTracepoints()
}

// abandon undoes a failed Attach: the new links are closed (an unpinned
// link detaches when closed), an earlier daemon's link whose pin a new link
// took is pinned again under its name, and old links stay attached.
func (a *attachment) abandon(dir string, logf func(string, ...any)) {
	for i, h := range hooks {
		if a.fresh[i] && a.pinned[i] {
			a.links[i].Unpin()
			if a.old[i] != nil {
				if err := repin(a.old[i], filepath.Join(dir, h.pin)); err != nil {
					logf("put back the pin of the earlier %s link: %v", h.name, err)
				}
			}
		}
		if a.links[i] != nil {
			// A taken-over link stays pinned and keeps running our program.
			a.links[i].Close()
		}
		if a.old[i] != nil {
			a.old[i].Close() // still pinned, still attached
		}
	}
}

// repin pins a link loaded from a pin that was since replaced. The Link
// still believes itself pinned there, so pin a copy of its descriptor.
func repin(ln link.Link, path string) error {
	raw, ok := ln.(interface{ FD() int })
	if !ok {
		return fmt.Errorf("link %T has no descriptor", ln)
	}
	fd, err := unix.FcntlInt(uintptr(raw.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	dup, err := link.NewFromFD(fd)
	if err != nil {
		unix.Close(fd)
		return err
	}
	defer dup.Close()
	return dup.Pin(path)
}

// retire detaches and closes the old links that new ones replaced. Their
// pins were renamed over already.
func (a *attachment) retire(logf func(string, ...any)) {
	for i, old := range a.old {
		if old == nil {
			continue
		}
		if err := detachLink(old); err != nil {
			logf("detach replaced %s link: %v", hooks[i].name, err)
		}
		old.Close()
		a.old[i] = nil
	}
}

// takeOver swaps the program of a pinned link, if it is a cgroup link to the
// cgroup we attach to.
func (l *Loader) takeOver(old link.Link, prog *ebpf.Program, cgID uint64) error {
	info, err := old.Info()
	if err != nil {
		return fmt.Errorf("link info: %w", err)
	}
	cg := info.Cgroup()
	if cg == nil {
		return fmt.Errorf("link is of type %v, not a cgroup link", info.Type)
	}
	if cgID != 0 && cg.CgroupId != cgID {
		return fmt.Errorf("link is attached to cgroup id %d, not %d (%s)", cg.CgroupId, cgID, l.cfg.CgroupPath)
	}
	if err := old.Update(prog); err != nil {
		return fmt.Errorf("replace program: %w", err)
	}
	return nil
}

// pinMaps pins every shared map, replacing pins of an older layout.
func (l *Loader) pinMaps() error {
	for name, m := range l.objs.pinned() {
		p := filepath.Join(l.cfg.PinPath, name)
		if !l.freshMaps {
			if _, err := os.Stat(p); err == nil {
				continue // the map we reused is pinned there already
			}
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("replace pin %s: %w", p, err)
		}
		if err := m.Pin(p); err != nil {
			return fmt.Errorf("pin map %s: %w", name, err)
		}
	}
	l.freshMaps = false
	return nil
}
