package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/policy"
)

// Reason is why a bind violated the policy.
type Reason uint8

const (
	ReasonNone       = Reason(bindguardBgReasonBG_REASON_NONE)
	ReasonUndeclared = Reason(bindguardBgReasonBG_REASON_UNDECLARED)
	ReasonOwner      = Reason(bindguardBgReasonBG_REASON_OWNER)
	ReasonAddress    = Reason(bindguardBgReasonBG_REASON_ADDRESS)
	ReasonRemoved    = Reason(bindguardBgReasonBG_REASON_REMOVED)
	// ReasonPodUndeclared: the binder's pod does not declare the port.
	ReasonPodUndeclared = Reason(bindguardBgReasonBG_REASON_POD_UNDECLARED)
	// ReasonPodPending: the binder's pod identity is not known yet (audited, never denied).
	ReasonPodPending = Reason(bindguardBgReasonBG_REASON_POD_PENDING)
	// ReasonAutobind: bind(0) got a port this binder may not bind.
	ReasonAutobind = Reason(bindguardBgReasonBG_REASON_AUTOBIND)
)

// Policy is the reason in policy's vocabulary: the one place the kernel's
// BG_REASON_* values are mapped to names.
func (r Reason) Policy() policy.Reason {
	switch r {
	case ReasonUndeclared:
		return policy.ReasonUndeclared
	case ReasonOwner:
		return policy.ReasonOwner
	case ReasonAddress:
		return policy.ReasonAddress
	case ReasonRemoved:
		return policy.ReasonRemoved
	case ReasonPodUndeclared:
		return policy.ReasonPodUndeclared
	case ReasonPodPending:
		return policy.ReasonPodPending
	case ReasonAutobind:
		return policy.ReasonAutobind
	}
	return policy.ReasonNone
}

func (r Reason) String() string {
	if p := r.Policy(); p != policy.ReasonNone {
		return string(p)
	}
	if r == ReasonNone {
		return "none"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// Reasons lists the violation reasons in counter order.
var Reasons = []Reason{ReasonUndeclared, ReasonOwner, ReasonAddress, ReasonRemoved, ReasonPodUndeclared, ReasonPodPending, ReasonAutobind}

// Event is one reported violation.
type Event struct {
	// Time is when the bind happened (wall clock, converted from boot time).
	Time        time.Time
	CgroupID    uint64
	NetnsCookie uint64
	PID, TID    uint32
	UID, GID    uint32
	Comm        string
	Port        uint16
	Protocol    policy.Protocol
	// Family is 4 or 6, the socket's family (a v4-mapped address is 6).
	Family  int
	Address netip.Addr
	Reason  Reason
	// Denied is true in enforce mode (the bind failed with EPERM), false when audited.
	Denied bool
	// Origin is the registry entry that matched, as a 1-based index into the
	// Origins of the policy of Generation; 0 when undeclared. The loader
	// keeps no origins: whoever applied that policy knows them.
	Origin     uint32
	Generation uint32
	// Suppressed is how many identical events rate limiting folded into this one.
	Suppressed uint32
}

// EventReader opens the ring buffer reader. Call it once, before the
// goroutine that calls ReadEvent starts.
func (l *Loader) EventReader() error {
	if l.events != nil {
		return nil
	}
	if l.closed {
		return ringbuf.ErrClosed
	}
	r, err := newRing[bindguardBgEvent](l.objs.BgEvents)
	if err != nil {
		return fmt.Errorf("open event reader: %w", err)
	}
	l.events = r
	return nil
}

// ReadEvent blocks until a violation event arrives. It returns
// os.ErrDeadlineExceeded after the deadline set with SetEventDeadline, and an
// error matching Stopped after StopReaders, after FlushEvents once what was
// pending is read, or after Close. Only one goroutine may call it.
func (l *Loader) ReadEvent() (Event, error) {
	if l.events == nil {
		return Event{}, errors.New("read event: EventReader was not called")
	}
	var e bindguardBgEvent
	if err := l.events.Read(&e); err != nil {
		return Event{}, err
	}
	return decodeEvent(&e), nil
}

// StopReaders makes ReadEvent and ReadCgroupEvent return an error matching
// Stopped before they read another record, however many are still queued:
// shutdown takes a bounded time whatever the event rate. Safe to call from
// any goroutine.
func (l *Loader) StopReaders() error {
	var errs []error
	if l.events != nil {
		errs = append(errs, l.events.Stop())
	}
	if l.cgroupEvents != nil {
		errs = append(errs, l.cgroupEvents.Stop())
	}
	return errors.Join(errs...)
}

// EventsLeft is how many violation events are queued in the ring, unread.
// Safe to call from any goroutine.
func (l *Loader) EventsLeft() int {
	if l.events == nil {
		return 0
	}
	return l.events.Pending()
}

// FlushEvents makes blocked ReadEvent and ReadCgroupEvent calls return what
// is pending, then an error matching Stopped. Under a steady flood "what is
// pending" has no end: to stop the readers, use StopReaders. Safe to call
// from another goroutine.
func (l *Loader) FlushEvents() error {
	var errs []error
	if l.events != nil {
		errs = append(errs, l.events.Flush())
	}
	if l.cgroupEvents != nil {
		errs = append(errs, l.cgroupEvents.Flush())
	}
	return errors.Join(errs...)
}

// SetEventDeadline makes ReadEvent return at t at the latest. Do not call it
// while another goroutine is blocked in ReadEvent.
func (l *Loader) SetEventDeadline(t time.Time) {
	if l.events != nil {
		l.events.SetDeadline(t)
	}
}

var bootOffset = func() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(time.Now().UnixNano() - ts.Nano())
}()

func decodeEvent(e *bindguardBgEvent) Event {
	ev := Event{
		Time:        time.Unix(0, int64(e.TsNs)+int64(bootOffset)),
		CgroupID:    e.CgroupId,
		NetnsCookie: e.NetnsCookie,
		PID:         e.Pid,
		TID:         e.Tid,
		UID:         e.Uid,
		GID:         e.Gid,
		Port:        e.Port,
		Family:      int(e.Family),
		Reason:      Reason(e.Reason),
		Denied:      e.Verdict == uint8(bindguardBgVerdictBG_VERDICT_DENY),
		Origin:      e.Origin,
		Generation:  e.Generation,
		Suppressed:  e.Suppressed,
	}
	ev.Comm = cString(e.Comm[:])
	switch e.Proto {
	case uint8(bindguardBgProtoBG_PROTO_TCP):
		ev.Protocol = policy.TCP
	case uint8(bindguardBgProtoBG_PROTO_UDP):
		ev.Protocol = policy.UDP
	}
	if e.Family == 4 {
		ev.Address = netip.AddrFrom4([4]byte(e.Addr[:4]))
	} else {
		ev.Address = netip.AddrFrom16(e.Addr)
	}
	return ev
}

// cString reads a NUL-terminated C char array.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
