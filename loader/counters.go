package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
)

// Counters are the kernel's counts, summed over CPUs.
type Counters struct {
	Checks, Allowed                   uint64
	Ephemeral, OtherNetns, OtherProto uint64
	// Audited and Denied are indexed by Reason.
	Audited, Denied           map[Reason]uint64
	EventsDropped, Suppressed uint64
	NoPolicy                  uint64
	// Throttled is the part of Suppressed the per-cgroup bucket held back;
	// MemberCopyFailed counts mkdirs whose membership the kernel could not
	// copy (user space repairs them).
	Throttled, MemberCopyFailed uint64
}

func readCounters(m *ebpf.Map) (*Counters, error) {
	get := func(idx bindguardBgCounter) (uint64, error) {
		var per []uint64
		if err := m.Lookup(uint32(idx), &per); err != nil {
			return 0, fmt.Errorf("read counter %d: %w", idx, err)
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		return sum, nil
	}
	c := &Counters{Audited: map[Reason]uint64{}, Denied: map[Reason]uint64{}}
	for _, f := range []struct {
		idx bindguardBgCounter
		dst *uint64
	}{
		{bindguardBgCounterBG_CNT_ALLOWED, &c.Allowed},
		{bindguardBgCounterBG_CNT_EPHEMERAL, &c.Ephemeral},
		{bindguardBgCounterBG_CNT_OTHER_NETNS, &c.OtherNetns},
		{bindguardBgCounterBG_CNT_OTHER_PROTO, &c.OtherProto},
		{bindguardBgCounterBG_CNT_EVENTS_DROPPED, &c.EventsDropped},
		{bindguardBgCounterBG_CNT_SUPPRESSED, &c.Suppressed},
		{bindguardBgCounterBG_CNT_NO_POLICY, &c.NoPolicy},
		{bindguardBgCounterBG_CNT_THROTTLED, &c.Throttled},
		{bindguardBgCounterBG_CNT_MEMBER_COPY_FAILED, &c.MemberCopyFailed},
	} {
		v, err := get(f.idx)
		if err != nil {
			return nil, err
		}
		*f.dst = v
	}
	for _, r := range Reasons {
		a, err := get(bindguardBgCounterBG_CNT_AUDIT + bindguardBgCounter(r) - 1)
		if err != nil {
			return nil, err
		}
		d, err := get(bindguardBgCounterBG_CNT_DENY + bindguardBgCounter(r) - 1)
		if err != nil {
			return nil, err
		}
		c.Audited[r], c.Denied[r] = a, d
		c.Checks += a + d
	}
	// A post_bind autobind violation is a second verdict on a bind whose
	// bind(0) counted as allowed (ephemeral): it moves that bind out of
	// them, so that each bind is counted once. (The counters are read one
	// after the other: a bind between two reads must not make them wrap.)
	auto := c.Audited[ReasonAutobind] + c.Denied[ReasonAutobind]
	c.Allowed -= min(auto, c.Allowed)
	c.Ephemeral -= min(auto, c.Ephemeral)
	c.Checks += c.Allowed
	return c, nil
}

// Counters reads the kernel counters. Safe to call from any goroutine.
func (l *Loader) Counters() (*Counters, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, errors.New("read counters: loader is closed")
	}
	return readCounters(l.objs.BgCounters)
}
