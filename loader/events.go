package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unsafe"

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

func (r Reason) String() string {
	switch r {
	case ReasonNone:
		return "none"
	case ReasonUndeclared:
		return "undeclared"
	case ReasonOwner:
		return "owner"
	case ReasonAddress:
		return "address"
	case ReasonRemoved:
		return "removed"
	case ReasonPodUndeclared:
		return "pod-undeclared"
	case ReasonPodPending:
		return "pod-pending"
	case ReasonAutobind:
		return "autobind"
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
	// Origin is the registry entry that matched, nil when undeclared or unknown.
	Origin     *policy.Origin
	Generation uint32
	// Suppressed is how many identical events rate limiting folded into this one.
	Suppressed uint32
}

// EventReader opens the ring buffer reader. Call it once before ReadEvent.
func (l *Loader) EventReader() error {
	if l.events != nil {
		return nil
	}
	if l.closed {
		return ringbuf.ErrClosed
	}
	r, err := ringbuf.NewReader(l.objs.BgEvents)
	if err != nil {
		return fmt.Errorf("open event ring buffer: %w", err)
	}
	l.events = r
	return nil
}

// ReadEvent blocks until a violation event arrives. It returns
// os.ErrDeadlineExceeded after the deadline set with SetEventDeadline, and an
// error matching Stopped once FlushEvents has drained what was pending or
// after Close. Only one goroutine may call it.
func (l *Loader) ReadEvent() (Event, error) {
	if l.events == nil {
		return Event{}, errors.New("read event: EventReader was not called")
	}
	if err := l.events.ReadInto(&l.rec); err != nil {
		return Event{}, err
	}
	return l.decode(l.rec.RawSample)
}

// FlushEvents makes blocked ReadEvent and ReadCgroupEvent calls return what
// is pending, then an error matching Stopped: the way to end the readers.
// Safe to call from another goroutine.
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

func (l *Loader) decode(raw []byte) (Event, error) {
	var e bindguardBgEvent
	if err := decodeInto(raw, &e); err != nil {
		return Event{}, err
	}
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
	if e.Origin > 0 {
		if origins := l.origins[e.Generation]; int(e.Origin) <= len(origins) {
			o := origins[e.Origin-1]
			ev.Origin = &o
		}
	}
	return ev, nil
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

// decodeInto copies a ring buffer sample into a contract struct. The structs
// bpf2go generated have the C layout (structs.HostLayout), so a byte copy is
// the decoding; no reflection on the event path.
func decodeInto[T any](raw []byte, out *T) error {
	size := int(unsafe.Sizeof(*out))
	if len(raw) < size {
		return fmt.Errorf("event of %d bytes, want %d", len(raw), size)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(out)), size), raw)
	return nil
}

// Stopped reports whether err from ReadEvent or ReadCgroupEvent means the
// reader was flushed or closed: its loop should end.
func Stopped(err error) bool {
	return errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, ringbuf.ErrFlushed)
}
