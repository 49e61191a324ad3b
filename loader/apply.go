package loader

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cilium/ebpf"

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

// slot is the map of one policy that is its own: its pairs. Its rules are
// its range of bg_rules.
type slot struct {
	pairs *ebpf.Map
}

func (s *slot) close() {
	if s.pairs != nil {
		s.pairs.Close()
	}
	*s = slot{}
}

// Apply writes a compiled policy into the idle slot (its range of bg_rules
// and a new pairs map), writes every owner cgroup's membership for that
// slot, and switches bg_active to it with one write: every bind is judged by
// the old policy or by the new one, never by a mix, a partial or an empty
// map. On any error the policy in force stays.
// Callers serialise Apply with every other method that changes memberships.
func (l *Loader) Apply(c *policy.Compiled, o ApplyOptions, src Sources) (*ApplyResult, error) {
	if l.closed {
		return nil, errors.New("apply policy: loader is closed")
	}
	gen := l.nextGeneration()
	enc, err := encode(c, gen, encodeOptions{mode: o.Mode, podPorts: o.PodPorts})
	if err != nil {
		return nil, fmt.Errorf("apply policy: %w", err)
	}
	var active uint32
	if err := l.objs.BgActive.Lookup(uint32(0), &active); err != nil {
		return nil, fmt.Errorf("apply policy: read active slot: %w", err)
	}
	next := (active ^ 1) & 1
	res := &ApplyResult{Generation: gen, Entries: enc.entries(), Rules: enc.rules, Sets: len(enc.sets)}

	start := time.Now()
	fresh, plan, err := l.prepare(enc, src, next, res)
	if err != nil {
		return nil, fmt.Errorf("apply policy: %w", err)
	}
	res.Fill = time.Since(start)

	start = time.Now()
	if err := l.objs.BgActive.Put(uint32(0), next); err != nil {
		fresh.close()
		return nil, fmt.Errorf("apply policy: switch: %w", err)
	}
	res.Swap = time.Since(start)
	l.slots[next].close()
	l.slots[next] = fresh
	l.active, l.enc, l.plan_, l.generation = next, enc, plan, gen

	// Wait for the binds that read the old slot number to finish, so the
	// next Apply may overwrite that slot. Replacing a map-in-map entry (here
	// with the same map) returns only after an RCU grace period. The new
	// policy is in force whatever happens here: if the wait fails, settled
	// stays false and the next Apply waits before it rewrites that slot.
	start = time.Now()
	l.settled = false
	if err := l.objs.BgPairs.Put(next, fresh.pairs); err != nil {
		l.cfg.logf("policy generation %d is in force; waiting out the binds of the one before failed (the next reload waits instead): %v", gen, err)
	} else {
		l.settled = true
	}
	res.Settle = time.Since(start)
	if err := l.recordApplied(c, enc, o); err != nil {
		return nil, err
	}
	return res, nil
}

// prepare fills the idle slot: its whole range of bg_rules rewritten, a new
// pairs map installed in it, and every owner cgroup's membership for it.
// Nothing reads the idle slot: the previous Apply waited until every bind
// judged by it had finished, or, where no swap of this Loader did, prepare
// waits before writing. The rules are written before the pairs install:
// that is an RCU-synchronised map-in-map update, which orders them before
// the switch on every architecture.
func (l *Loader) prepare(enc *encoded, src Sources, next uint32, res *ApplyResult) (slot, memberPlan, error) {
	plan, unresolved, err := l.plan(enc, src)
	if err != nil {
		return slot{}, nil, err
	}
	res.Unresolved = unresolved
	fresh, err := l.newSlot(enc)
	if err != nil {
		return slot{}, nil, err
	}
	if !l.settled {
		// No swap of this Loader waited out the binds of the idle slot:
		// installing the new pairs there now does (an RCU grace period).
		// Binds that start later read the active slot, not this one.
		if err := l.objs.BgPairs.Put(next, fresh.pairs); err != nil {
			fresh.close()
			return slot{}, nil, fmt.Errorf("settle the idle slot: %w", err)
		}
	}
	if err := writeRules(l.objs.BgRules, next, enc); err != nil {
		fresh.close()
		return slot{}, nil, err
	}
	if err := l.objs.BgPairs.Put(next, fresh.pairs); err != nil {
		fresh.close()
		return slot{}, nil, fmt.Errorf("install pairs: %w", err)
	}
	store := l.store()
	if err := store.writeAll(plan, next, enc.generation()); err != nil {
		fresh.close()
		return slot{}, nil, fmt.Errorf("memberships: %w", err)
	}
	res.Members = store.written
	return fresh, plan, nil
}

// recordApplied notes the policy in force in the pinned state, for status.
func (l *Loader) recordApplied(c *policy.Compiled, enc *encoded, o ApplyOptions) error {
	return l.updateState(func(st *bindguardBgStatus) {
		st.Layout = LayoutVersion
		st.Generation = enc.generation()
		st.AppliedUnixNs = uint64(time.Now().UnixNano())
		st.Entries = uint32(enc.entries())
		st.Rules = uint32(enc.rules)
		st.Mode = modeByte(o.Mode)
		st.AllNetns = boolByte(l.cfg.AllNetns)
		st.ReloadsOk++
		if d, err := hex.DecodeString(c.Digest); err == nil {
			copy(st.Digest[:], d)
		}
	})
}

func modeByte(m policy.Mode) uint8 {
	if m == policy.ModeEnforce {
		return uint8(bindguardBgModeBG_MODE_ENFORCE)
	}
	return uint8(bindguardBgModeBG_MODE_AUDIT)
}

// writeRules rewrites slot's whole range of bg_rules with the policy's
// rules: every entry, so none of the policy the slot held before remains,
// and every undeclared port's entry carries the generation and node flags.
func writeRules(rules *ebpf.Map, slot uint32, enc *encoded) error {
	keys := make([]uint32, rulesEntries)
	vals := make([]bindguardBgValue, rulesEntries)
	blank := enc.undeclared()
	for i := range keys {
		keys[i] = slot*rulesEntries + uint32(i)
		vals[i] = blank
	}
	for i, idx := range enc.ruleIdx {
		vals[idx] = enc.ruleVals[i]
	}
	if err := putAll(rules, keys, vals); err != nil {
		return fmt.Errorf("write rules: %w", err)
	}
	return nil
}

// newSlot creates and fills the pairs map of one policy: uid pairs, and
// the declared ports of the pods known now.
func (l *Loader) newSlot(enc *encoded) (_ slot, err error) {
	var s slot
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.pairs, err = ebpf.NewMap(l.spec.Maps[bindguardMapBgPairs].InnerMap.Copy()); err != nil {
		return s, fmt.Errorf("create pairs map: %w", err)
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
