package loader

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// ErrStopped is what a Ring's Read returns once Stop was called.
var ErrStopped = errors.New("ring reader stopped")

// Ring reads the records of one contract struct T (a bpf2go-generated type,
// laid out as in C) from a BPF ring buffer.
//
// Concurrency: Read and SetDeadline belong to one reading goroutine. Stop,
// Flush and Pending may be called from any goroutine at any time, Close once
// the reader has returned.
type Ring[T any] struct {
	rd      *ringbuf.Reader
	rec     ringbuf.Record
	stopped atomic.Bool
}

func newRing[T any](m *ebpf.Map) (*Ring[T], error) {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("open ring buffer %s: %w", m, err)
	}
	return &Ring[T]{rd: rd}, nil
}

// Read blocks until a record arrives and decodes it into out. After Stop it
// returns ErrStopped at once, whatever is still in the ring: a reader that
// keeps draining while producers keep producing would never end.
func (r *Ring[T]) Read(out *T) error {
	if r.stopped.Load() {
		return ErrStopped
	}
	if err := r.rd.ReadInto(&r.rec); err != nil {
		if r.stopped.Load() && errors.Is(err, ringbuf.ErrFlushed) {
			return ErrStopped
		}
		return err
	}
	return decodeInto(r.rec.RawSample, out)
}

// Stop makes Read return ErrStopped, now if it is blocked, and before the
// next record otherwise. What is left in the ring stays there (see Pending).
func (r *Ring[T]) Stop() error {
	r.stopped.Store(true)
	return r.rd.Flush()
}

// Flush makes a blocked Read return what is pending, then ringbuf.ErrFlushed.
func (r *Ring[T]) Flush() error { return r.rd.Flush() }

// SetDeadline makes Read return os.ErrDeadlineExceeded at t once the ring is
// empty. Call it only from the reading goroutine, or before it starts: it
// waits for a blocked Read.
func (r *Ring[T]) SetDeadline(t time.Time) { r.rd.SetDeadline(t) }

// Pending is how many records are in the ring, unread: its bytes over the
// size of one record with its 8-byte header, rounded up to 8 bytes as the
// kernel stores it.
func (r *Ring[T]) Pending() int {
	var zero T
	rec := (int(unsafe.Sizeof(zero)) + 8 + 7) &^ 7
	return r.rd.AvailableBytes() / rec
}

// Close releases the reader; a blocked Read returns os.ErrClosed.
func (r *Ring[T]) Close() error { return r.rd.Close() }

// decodeInto copies a ring buffer sample into a contract struct. The structs
// bpf2go generated have the C layout (structs.HostLayout), so a byte copy is
// the decoding; no reflection on the event path.
func decodeInto[T any](raw []byte, out *T) error {
	size := int(unsafe.Sizeof(*out))
	if len(raw) < size {
		return fmt.Errorf("record of %d bytes, want %d", len(raw), size)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(out)), size), raw)
	return nil
}

// Stopped reports whether err from a ring read means the reader was stopped,
// flushed or closed: its loop should end.
func Stopped(err error) bool {
	return errors.Is(err, ErrStopped) || errors.Is(err, ringbuf.ErrFlushed) ||
		errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed)
}
