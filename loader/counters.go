package loader

import (
	"fmt"
	"path/filepath"
	"time"

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
	c.Checks += c.Allowed
	return c, nil
}

// Counters reads the kernel counters.
func (l *Loader) Counters() (*Counters, error) { return readCounters(l.objs.BgCounters) }

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
	return s, nil
}

func unixNs(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}
