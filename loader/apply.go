package loader

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
	// Sets is the number of owner sets, Members the cgroups whose
	// membership was written for the new policy.
	Sets, Members int
	Unresolved    []Unresolved
	// Fill is the time spent writing the new maps and memberships and
	// installing them in the idle slot, Swap the time of the switch itself
	// (one array write), Settle the wait until no bind can still be judged
	// by the old slot.
	Fill, Swap, Settle time.Duration
}

// ApplyOptions are the node-wide switches of a policy.
type ApplyOptions struct {
	Mode policy.Mode
	// PodPorts: pods may bind only the ports they declare (--pod-ports=require).
	PodPorts bool
}

// slot is the pair of maps of one policy.
type slot struct {
	rules, pairs *ebpf.Map
}

func (s *slot) close() {
	if s.rules != nil {
		s.rules.Close()
	}
	if s.pairs != nil {
		s.pairs.Close()
	}
	*s = slot{}
}

// Apply writes a compiled policy into the idle slot's new maps, writes every
// owner cgroup's membership for that slot, and switches bg_active to it with
// one write: every bind is judged by the old policy or by the new one, never
// by a mix, a partial or an empty map. On any error the policy in force stays.
// Callers serialise Apply with every other method that changes memberships.
func (l *Loader) Apply(c *policy.Compiled, o ApplyOptions, src Sources) (*ApplyResult, error) {
	if l.closed {
		return nil, errors.New("apply policy: loader is closed")
	}
	gen := l.generation + 1
	enc, err := encode(c, gen, encodeOptions{mode: o.Mode, podPorts: o.PodPorts})
	if err != nil {
		return nil, fmt.Errorf("apply policy: %w", err)
	}
	var active uint32
	if err := l.objs.BgActive.Lookup(uint32(0), &active); err != nil {
		return nil, fmt.Errorf("apply policy: read active slot: %w", err)
	}
	next := (active ^ 1) & 1

	start := time.Now()
	plan, unresolved, err := l.plan(enc, src)
	if err != nil {
		return nil, fmt.Errorf("apply policy: %w", err)
	}
	fresh, err := l.newSlot(enc)
	if err != nil {
		return nil, fmt.Errorf("apply policy: %w", err)
	}
	// Install the maps in the idle slot. No bind reads it: the previous
	// Apply waited until every bind judged by it had finished.
	if err := l.objs.BgRules.Put(next, fresh.rules); err != nil {
		fresh.close()
		return nil, fmt.Errorf("apply policy: install rules: %w", err)
	}
	if err := l.objs.BgPairs.Put(next, fresh.pairs); err != nil {
		fresh.close()
		return nil, fmt.Errorf("apply policy: install pairs: %w", err)
	}
	store := l.store()
	if err := store.writeAll(plan, next, gen); err != nil {
		fresh.close()
		return nil, fmt.Errorf("apply policy: memberships: %w", err)
	}
	fill := time.Since(start)

	start = time.Now()
	if err := l.objs.BgActive.Put(uint32(0), next); err != nil {
		fresh.close()
		return nil, fmt.Errorf("apply policy: switch: %w", err)
	}
	swap := time.Since(start)

	// Wait for the binds that read the old slot number to finish, so the
	// next Apply may overwrite that slot. Replacing a map-in-map entry (here
	// with the same map) returns only after an RCU grace period.
	start = time.Now()
	if err := l.objs.BgPairs.Put(next, fresh.pairs); err != nil {
		return nil, fmt.Errorf("apply policy: settle: %w", err)
	}
	settle := time.Since(start)

	l.slots[next].close()
	l.slots[next] = fresh
	l.active = next
	l.enc = enc
	l.plan_ = plan
	l.opts = o
	l.generation = gen
	l.origins[gen] = c.Origins
	delete(l.origins, gen-4) // events of older generations are long drained

	if err := l.updateState(func(st *bindguardBgStatus) {
		st.Layout = LayoutVersion
		st.Generation = gen
		st.AppliedUnixNs = uint64(time.Now().UnixNano())
		st.Entries = uint32(enc.entries())
		st.Rules = uint32(enc.rules)
		st.Mode = modeByte(o.Mode)
		st.AllNetns = boolByte(l.cfg.AllNetns)
		st.ReloadsOk++
		if d, err := hex.DecodeString(c.Digest); err == nil {
			copy(st.Digest[:], d)
		}
	}); err != nil {
		return nil, err
	}
	return &ApplyResult{Generation: gen, Entries: enc.entries(), Rules: enc.rules, Sets: len(enc.sets),
		Members: store.written, Unresolved: unresolved, Fill: fill, Swap: swap, Settle: settle}, nil
}

func modeByte(m policy.Mode) uint8 {
	if m == policy.ModeEnforce {
		return uint8(bindguardBgModeBG_MODE_ENFORCE)
	}
	return uint8(bindguardBgModeBG_MODE_AUDIT)
}

// newSlot creates and fills the maps of one policy: rules, uid pairs, and
// the declared ports of the pods known now.
func (l *Loader) newSlot(enc *encoded) (_ slot, err error) {
	var s slot
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.rules, err = ebpf.NewMap(l.spec.Maps[bindguardMapBgRules].InnerMap.Copy()); err != nil {
		return s, fmt.Errorf("create rules map: %w", err)
	}
	if s.pairs, err = ebpf.NewMap(l.spec.Maps[bindguardMapBgPairs].InnerMap.Copy()); err != nil {
		return s, fmt.Errorf("create pairs map: %w", err)
	}
	if err := putAll(s.rules, enc.ruleIdx, enc.ruleVals); err != nil {
		return s, fmt.Errorf("write rules: %w", err)
	}
	keys := append(slices.Clone(enc.pairKeys), l.pods.pairs()...)
	if len(keys) > PairsMaxEntries {
		return s, fmt.Errorf("policy and pods need %d pair entries, more than the kernel map's %d", len(keys), PairsMaxEntries)
	}
	ones := make([]uint8, len(keys))
	for i := range ones {
		ones[i] = 1
	}
	if err := putAll(s.pairs, keys, ones); err != nil {
		return s, fmt.Errorf("write pairs: %w", err)
	}
	return s, nil
}

// putAll writes entries in batches where the kernel can, one by one otherwise.
func putAll[K, V any](m *ebpf.Map, keys []K, vals []V) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := m.BatchUpdate(keys, vals, &ebpf.BatchOptions{})
	if err == nil || !errors.Is(err, ebpf.ErrNotSupported) {
		return err
	}
	for i := range keys {
		if err := m.Put(&keys[i], &vals[i]); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
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

// Attach attaches bind4 and bind6 to the configured cgroup. When an earlier
// daemon's links are pinned, it replaces their programs in place with
// link.Update instead: the hook is never empty. Maps that could not be reused
// replace the old pins only after the programs that use them are in place.
// Call Apply first, so no bind is judged against an empty policy.
func (l *Loader) Attach() error {
	if l.generation == 0 || l.slots[l.active].rules == nil {
		return errors.New("attach: no policy applied yet")
	}
	progs := [4]*ebpf.Program{l.objs.Bind4, l.objs.Bind6, l.objs.PostBind4, l.objs.PostBind6}
	types := [4]ebpf.AttachType{ebpf.AttachCGroupInet4Bind, ebpf.AttachCGroupInet6Bind,
		ebpf.AttachCGroupInet4PostBind, ebpf.AttachCGroupInet6PostBind}
	pins := linkPins

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
