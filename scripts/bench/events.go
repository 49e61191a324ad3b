package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// eventRates are the violation rates offered per step (binds/s over all
// binders); 0 is as fast as the binders can go.
var eventRates = []int{10000, 25000, 50000, 100000, 200000, 0}

// eventBinders is how many processes bind at once (at most 7: see ports).
const eventBinders = 2

type eventStep struct {
	// Target is the rate asked for, 0 for flat out.
	Target int `json:"target_per_s"`
	// Offered is the violations per second the program judged (kernel counter).
	Offered float64 `json:"offered_per_s"`
	// Read is the events per second the reader decoded.
	Read float64 `json:"read_per_s"`
	// Violations, Events and Dropped are totals over the step.
	Violations uint64 `json:"violations"`
	Events     uint64 `json:"events"`
	Dropped    uint64 `json:"dropped"`
	// ReaderCPU is the reader thread's CPU time over the step's wall time, in %.
	ReaderCPU float64 `json:"reader_cpu_pct"`
	// ReaderNsPerEvent is the reader thread's CPU time per event.
	ReaderNsPerEvent float64 `json:"reader_ns_per_event"`
	Seconds          float64 `json:"seconds"`
}

type eventResult struct {
	Binders int         `json:"binders"`
	Steps   []eventStep `json:"steps"`
	// FirstDrop is the first step that dropped events, nil if none did;
	// BestClean the step with the highest offered rate that dropped none.
	FirstDrop *eventStep `json:"first_drop,omitempty"`
	BestClean *eventStep `json:"best_clean,omitempty"`
}

// readerSample is what the reader reports at each flush.
type readerSample struct {
	events uint64
	cpu    time.Duration
}

// eventBench measures how many violation events the daemon-side reader
// (loader.ReadEvent, one goroutine, as the daemon runs it) drains, with
// EventInterval 0 so every violation is an event, in audit mode so the binds
// succeed and the binders keep going.
func eventBench(ctx context.Context, e *env, o *options, p ports, log io.Writer) (*eventResult, error) {
	l, leaf, err := eventLoader(e, p)
	if err != nil {
		return nil, err
	}
	r := startEventReader(l)
	res := &eventResult{Binders: eventBinders}
	err = func() error {
		prev, err := r.sample()
		if err != nil {
			return err
		}
		for _, rate := range eventRates {
			if err := ctx.Err(); err != nil {
				return err
			}
			st, s, err := eventStepAt(ctx, r, leaf, o, p, rate, prev)
			if err != nil {
				return err
			}
			res.Steps = append(res.Steps, st)
			fmt.Fprintf(log, "bench: events at %s/s: offered %.0f/s, read %.0f/s, dropped %d, reader CPU %.0f%%\n",
				rateLabel(rate), st.Offered, st.Read, st.Dropped, st.ReaderCPU)
			prev = s
		}
		return nil
	}()
	res.markDrops()
	return res, errors.Join(err, r.stop())
}

// eventLoader loads, fills and attaches a bindguard in audit mode with
// EventInterval 0 and its event reader open, on a cgroup whose child
// "binders" is returned for the binders.
func eventLoader(e *env, p ports) (*loader.Loader, string, error) {
	dir, err := e.mkdir("events")
	if err != nil {
		return nil, "", err
	}
	leaf, err := e.mkdir("events/binders")
	if err != nil {
		return nil, "", err
	}
	l, err := loader.New(loader.Config{CgroupPath: dir, EventInterval: 0})
	if err != nil {
		return nil, "", fmt.Errorf("event bench: %w", err)
	}
	e.onClose(l.Close)
	c, err := buildPolicy(2, []policy.Rule{{Port: p.declared, Protocol: policy.TCP}}, p.all())
	if err != nil {
		return nil, "", err
	}
	if _, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeAudit}, loader.Sources{Cgroups: e.cg}); err != nil {
		return nil, "", fmt.Errorf("event bench: %w", err)
	}
	if err := l.Attach(); err != nil {
		return nil, "", fmt.Errorf("event bench: %w", err)
	}
	if err := l.EventReader(); err != nil {
		return nil, "", fmt.Errorf("event bench: %w", err)
	}
	return l, leaf, nil
}

// eventReader drains the loader's events on its own locked OS thread, so
// that RUSAGE_THREAD is its CPU, and reports a sample at every flush.
type eventReader struct {
	l       *loader.Loader
	halt    atomic.Bool
	samples chan readerSample
	done    chan error
}

func startEventReader(l *loader.Loader) *eventReader {
	r := &eventReader{l: l, samples: make(chan readerSample), done: make(chan error, 1)}
	go r.run()
	return r
}

func (r *eventReader) run() {
	runtime.LockOSThread()
	var n uint64
	for {
		_, err := r.l.ReadEvent()
		switch {
		case err == nil:
			n++
		case errors.Is(err, ringbuf.ErrFlushed):
			if r.halt.Load() {
				r.done <- nil
				return
			}
			r.samples <- readerSample{events: n, cpu: threadCPU()}
		default:
			r.done <- fmt.Errorf("read event: %w", err)
			return
		}
	}
}

// sample flushes the ring buffer and returns the reader's totals once it
// has read everything before the flush.
func (r *eventReader) sample() (readerSample, error) {
	if err := r.l.FlushEvents(); err != nil {
		return readerSample{}, err
	}
	select {
	case s := <-r.samples:
		return s, nil
	case err := <-r.done:
		return readerSample{}, err
	}
}

// stop ends the reader. It must run before the loader closes: ReadEvent is
// not safe against a concurrent Close.
func (r *eventReader) stop() error {
	r.halt.Store(true)
	if err := r.l.FlushEvents(); err != nil {
		return err
	}
	return <-r.done
}

// eventStepAt runs eventBinders binders at rate for one step and returns
// the step's figures and the reader's sample at its end.
func eventStepAt(ctx context.Context, r *eventReader, leaf string, o *options, p ports, rate int, prev readerSample) (eventStep, readerSample, error) {
	c0, err := r.l.Counters()
	if err != nil {
		return eventStep{}, prev, err
	}
	start := time.Now()
	if err := runBinders(ctx, leaf, o, p, rate); err != nil {
		return eventStep{}, prev, err
	}
	s, err := r.sample()
	if err != nil {
		return eventStep{}, prev, err
	}
	wall := time.Since(start)
	c1, err := r.l.Counters()
	if err != nil {
		return eventStep{}, prev, err
	}
	st := eventStep{
		Target:     rate,
		Violations: c1.Audited[loader.ReasonUndeclared] - c0.Audited[loader.ReasonUndeclared],
		Events:     s.events - prev.events,
		Dropped:    c1.EventsDropped - c0.EventsDropped,
		Seconds:    o.step.Seconds(),
	}
	st.Offered = float64(st.Violations) / o.step.Seconds()
	st.Read = float64(st.Events) / o.step.Seconds()
	cpu := s.cpu - prev.cpu
	st.ReaderCPU = 100 * cpu.Seconds() / wall.Seconds()
	if st.Events > 0 {
		st.ReaderNsPerEvent = float64(cpu.Nanoseconds()) / float64(st.Events)
	}
	return st, s, nil
}

// runBinders starts eventBinders hammer helpers in leaf, sharing rate, and
// waits for all of them.
func runBinders(ctx context.Context, leaf string, o *options, p ports, rate int) error {
	var procs []*proc
	for i := 0; i < eventBinders; i++ {
		pr, err := startHelper(ctx, leaf, helperHammer, "4", strconv.Itoa(int(p.hammer[i])), strconv.Itoa(rate/eventBinders), o.step.String())
		if err != nil {
			return err
		}
		procs = append(procs, pr)
	}
	var errs []error
	for _, pr := range procs {
		_, err := pr.wait()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// markDrops sets FirstDrop and BestClean from the steps.
func (res *eventResult) markDrops() {
	for i := range res.Steps {
		st := &res.Steps[i]
		if st.Dropped > 0 && res.FirstDrop == nil {
			res.FirstDrop = st
		}
		if st.Dropped == 0 && (res.BestClean == nil || st.Offered > res.BestClean.Offered) {
			res.BestClean = st
		}
	}
}

func threadCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func rateLabel(rate int) string {
	if rate == 0 {
		return "max"
	}
	return commas(rate)
}
