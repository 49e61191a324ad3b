package loader

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// ApplyResult says what a swap put in force.
type ApplyResult struct {
	Generation uint32
	Entries    int
	Rules      int
	Unresolved []Unresolved
	// Fill is the time spent writing the new map, Swap the time of the switch.
	Fill, Swap time.Duration
}

// Apply writes a compiled policy into a new policy map and swaps it in with
// one update of the outer map: every bind is judged by the old policy or by
// the new one, never by a mix, a partial or an empty map. On any error the
// policy in force stays.
func (l *Loader) Apply(c *policy.Compiled, mode policy.Mode, r Resolver) (*ApplyResult, error) {
	if l.closed {
		return nil, errors.New("apply policy: loader is closed")
	}
	gen := l.generation + 1
	enc, err := Encode(c, mode, gen, r)
	if err != nil {
		return nil, fmt.Errorf("apply policy: %w", err)
	}

	start := time.Now()
	inner, err := ebpf.NewMap(l.innerSpec())
	if err != nil {
		return nil, fmt.Errorf("apply policy: create policy map: %w", err)
	}
	if n, err := inner.BatchUpdate(enc.Keys, enc.Values, &ebpf.BatchOptions{}); err != nil {
		if !errors.Is(err, ebpf.ErrNotSupported) {
			inner.Close()
			return nil, fmt.Errorf("apply policy: write %d entries (wrote %d): %w", len(enc.Keys), n, err)
		}
		for i := range enc.Keys {
			if err := inner.Put(&enc.Keys[i], &enc.Values[i]); err != nil {
				inner.Close()
				return nil, fmt.Errorf("apply policy: write entry %d: %w", i, err)
			}
		}
	}
	fill := time.Since(start)

	start = time.Now()
	if err := l.objs.BgPolicy.Put(uint32(0), inner); err != nil {
		inner.Close()
		return nil, fmt.Errorf("apply policy: swap: %w", err)
	}
	swap := time.Since(start)

	if l.inner != nil {
		l.inner.Close()
	}
	l.inner = inner
	l.owners = enc.owners
	l.generation = gen
	l.origins[gen] = c.Origins
	delete(l.origins, gen-4) // events of older generations are long drained

	if err := l.updateState(func(st *bindguardBgStatus) {
		st.Layout = LayoutVersion
		st.Generation = gen
		st.AppliedUnixNs = uint64(time.Now().UnixNano())
		st.Entries = uint32(len(enc.Keys))
		st.Rules = uint32(enc.Rules)
		st.Mode = boolByte(mode == policy.ModeEnforce)
		st.AllNetns = boolByte(l.cfg.AllNetns)
		st.ReloadsOk++
		if d, err := hex.DecodeString(c.Digest); err == nil {
			copy(st.Digest[:], d)
		}
	}); err != nil {
		return nil, err
	}
	return &ApplyResult{Generation: gen, Entries: len(enc.Keys), Rules: enc.Rules, Unresolved: enc.Unresolved, Fill: fill, Swap: swap}, nil
}

// RecordFailure notes a rejected reload in the pinned state, for status.
func (l *Loader) RecordFailure(err error) error {
	return l.updateState(func(st *bindguardBgStatus) {
		st.ReloadsFailed++
		st.LastFailureUnixNs = uint64(time.Now().UnixNano())
		msg := err.Error()
		st.LastError = [256]int8{}
		for i := 0; i < len(msg) && i < len(st.LastError)-1; i++ {
			st.LastError[i] = int8(msg[i])
		}
	})
}

func (l *Loader) updateState(f func(*bindguardBgStatus)) error {
	var st bindguardBgStatus
	if err := l.objs.BgState.Lookup(uint32(0), &st); err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	f(&st)
	if err := l.objs.BgState.Put(uint32(0), &st); err != nil {
		return fmt.Errorf("write state: %w", err)
	}
	return nil
}

// innerSpec is the template of one policy map.
func (l *Loader) innerSpec() *ebpf.MapSpec {
	spec, err := loadBindguard()
	if err != nil {
		panic(err) // the embedded object parsed once already in New
	}
	s := spec.Maps[bindguardMapBgPolicy].InnerMap.Copy()
	s.Name = "bg_policy_in"
	return s
}

// Attach attaches bind4 and bind6 to the configured cgroup. When an earlier
// daemon's links are pinned, it replaces their programs in place with
// link.Update instead: the hook is never empty. Maps that could not be reused
// replace the old pins only after the programs that use them are in place.
// Call Apply first, so no bind is judged against an empty policy.
func (l *Loader) Attach() error {
	if l.inner == nil {
		return errors.New("attach: no policy applied yet")
	}
	progs := [2]*ebpf.Program{l.objs.BindguardBind4, l.objs.BindguardBind6}
	types := [2]ebpf.AttachType{ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind}
	pins := [2]string{pinBind4, pinBind6}

	var cgID uint64
	if l.cfg.CgroupPath != "" {
		id, err := cgroups.IDOf(l.cfg.CgroupPath)
		if err != nil {
			return fmt.Errorf("attach: %w", err)
		}
		cgID = id
	}

	for i := range progs {
		if l.cfg.PinPath != "" {
			p := filepath.Join(l.cfg.PinPath, pins[i])
			old, err := link.LoadPinnedLink(p, nil)
			if err == nil {
				if err := l.takeOver(old, progs[i], cgID); err == nil {
					l.links[i] = old
					l.tookOver = true
					continue
				} else {
					l.cfg.logf("pinned link %s cannot be taken over (%v): attaching anew and removing it", p, err)
					defer func(old link.Link, p string) {
						// Only once the new link is in place.
						old.Unpin()
						old.Close()
					}(old, p)
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				l.cfg.logf("pinned link %s unreadable (%v): attaching anew", p, err)
				os.Remove(p)
			}
		}
		ln, err := link.AttachCgroup(link.CgroupOptions{Path: l.cfg.CgroupPath, Attach: types[i], Program: progs[i]})
		if err != nil {
			return fmt.Errorf("attach %s to %s: %w", types[i], l.cfg.CgroupPath, err)
		}
		l.links[i] = ln
		if l.cfg.PinPath != "" {
			p := filepath.Join(l.cfg.PinPath, pins[i])
			os.Remove(p)
			if err := ln.Pin(p); err != nil {
				return fmt.Errorf("pin link: %w", err)
			}
		}
	}

	if l.cfg.PinPath != "" {
		if err := l.pinMaps(); err != nil {
			return err
		}
	}
	return l.updateState(func(st *bindguardBgStatus) {
		st.AttachCgroupId = cgID
		st.StartedUnixNs = uint64(time.Now().UnixNano())
	})
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
	maps := map[string]*ebpf.Map{
		bindguardMapBgPolicy:    l.objs.BgPolicy,
		bindguardMapBgCounters:  l.objs.BgCounters,
		bindguardMapBgEvents:    l.objs.BgEvents,
		bindguardMapBgRatelimit: l.objs.BgRatelimit,
		bindguardMapBgState:     l.objs.BgState,
	}
	for name, m := range maps {
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
