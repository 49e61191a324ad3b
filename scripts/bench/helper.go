package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The bench re-executes itself to run code in a cgroup: a child started with
// CLONE_INTO_CGROUP is in the cgroup from its first instruction, so every
// bind it makes is judged by the programs attached above that cgroup.
const helperEnv = "BINDGUARD_BENCH_HELPER"

// Helper modes.
const (
	helperLoop   = "loop"   // FAMILY PORT ITERS PROGID [DENY [PAIREDID]]: prints ns per socket()+bind()+close() and per program run
	helperHammer = "hammer" // FAMILY PORT RATE DURATION: binds at RATE/s (0: flat out), prints the count
	helperMem    = "mem"    // ENTRIES: loads a policy of ENTRIES map entries, prints a memReport
	helperOnce   = "once"   // FAMILY PORT: binds once, prints onceAllowed or onceDenied (EPERM)
)

// What a once helper prints.
const (
	onceAllowed = "allowed"
	onceDenied  = "denied"
)

// helper runs the bench binary in mode inside the cgroup directory cgroupAbs
// and returns what it printed.
func helper(ctx context.Context, cgroupAbs, mode string, args ...string) (string, error) {
	p, err := startHelper(ctx, cgroupAbs, mode, args...)
	if err != nil {
		return "", err
	}
	return p.wait()
}

// proc is a running helper.
type proc struct {
	cmd       *exec.Cmd
	mode      string
	out, errb bytes.Buffer
}

func startHelper(ctx context.Context, cgroupAbs, mode string, args ...string) (*proc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cg, err := os.Open(cgroupAbs)
	if err != nil {
		return nil, fmt.Errorf("helper cgroup: %w", err)
	}
	defer cg.Close()
	p := &proc{cmd: exec.CommandContext(ctx, exe, args...), mode: mode}
	// One P keeps the Go runtime's own threads out of the way of the loop.
	// Under the race detector (the smoke test's binary is the helper),
	// each exit would sleep a second unless told not to.
	p.cmd.Env = append(os.Environ(), helperEnv+"="+mode, "GOMAXPROCS=1", "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	p.cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	p.cmd.Stdout = &p.out
	p.cmd.Stderr = &p.errb
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s helper: %w", mode, err)
	}
	return p, nil
}

// wait returns what the helper printed on stdout, or its error with its stderr.
func (p *proc) wait() (string, error) {
	if err := p.cmd.Wait(); err != nil {
		if msg := strings.TrimSpace(p.errb.String()); msg != "" {
			return "", fmt.Errorf("%s helper: %w: %s", p.mode, err, msg)
		}
		return "", fmt.Errorf("%s helper: %w", p.mode, err)
	}
	return strings.TrimSpace(p.out.String()), nil
}

// helperMain is the child side. It returns the exit status.
func helperMain(mode string, args []string, stdout, stderr io.Writer) int {
	var err error
	switch mode {
	case helperLoop:
		err = loopMain(args, stdout)
	case helperHammer:
		err = hammerMain(args, stdout)
	case helperMem:
		err = memMain(args, stdout)
	case helperOnce:
		err = onceMain(args, stdout)
	default:
		err = fmt.Errorf("unknown helper mode %q", mode)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench %s helper: %v\n", mode, err)
		return 1
	}
	return 0
}

func atoi(args []string, i int) (int, error) {
	if i >= len(args) {
		return 0, fmt.Errorf("missing argument %d", i+1)
	}
	return strconv.Atoi(args[i])
}

// binder makes socket()+bind()+close() calls on one TCP port.
type binder struct {
	domain int
	sa     unix.Sockaddr
	port   int
	deny   bool
}

func newBinder(family, port int) (*binder, error) {
	switch family {
	case 4:
		return &binder{domain: unix.AF_INET, sa: &unix.SockaddrInet4{Port: port}, port: port}, nil
	case 6:
		return &binder{domain: unix.AF_INET6, sa: &unix.SockaddrInet6{Port: port, Addr: netip.IPv6Unspecified().As16()}, port: port}, nil
	}
	return nil, fmt.Errorf("family %d: want 4 or 6", family)
}

// once binds and closes one socket. A port just released can, rarely, still
// be busy for the next bind: that bind is retried (the program ran for it
// too, so a check row may count a few more runs than binds).
func (b *binder) once() error {
	for try := 0; ; try++ {
		fd, err := unix.Socket(b.domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		err = unix.Bind(fd, b.sa)
		unix.Close(fd)
		if b.deny {
			if err == unix.EPERM {
				return nil
			}
			return fmt.Errorf("bind port %d: %v, want EPERM", b.port, err)
		}
		if err == nil {
			return nil
		}
		if err != unix.EADDRINUSE || try == 100 {
			return fmt.Errorf("bind port %d: %w", b.port, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// loopBatches is how many batches a loop helper splits its iterations into;
// it reports the median batch, so a preemption spoils one batch, not the figure.
const loopBatches = 10

// loopMain times ITERS binds after a warm-up of ITERS/10 (at least 10). It
// prints five figures, each the median over loopBatches batches: the
// thread's CPU time per bind (CLOCK_THREAD_CPUTIME_ID: time other tasks take
// from a noisy CPU is not in it), the wall time per bind, and, when PROGID
// is not 0, that program's kernel run time per run (BPF stats must be on;
// else -1); then, when PAIREDID is not 0, the run time per run of that
// program (a floor attached beside PROGID, so it runs on the same binds)
// and PROGID's run time over it, batch by batch (else -1 -1).
func loopMain(args []string, stdout io.Writer) error {
	var v [4]int
	for i := range v {
		var err error
		if v[i], err = atoi(args, i); err != nil {
			return err
		}
	}
	family, port, iters, progID := v[0], v[1], v[2], v[3]
	b, err := newBinder(family, port)
	if err != nil {
		return err
	}
	// A fifth argument 1: every bind must fail with EPERM (an enforcing row).
	b.deny = len(args) > 4 && args[4] == "1"
	prog, err := openProgram(progID)
	if err != nil {
		return err
	}
	pairedID := 0
	if len(args) > 5 {
		if pairedID, err = atoi(args, 5); err != nil {
			return err
		}
	}
	paired, err := openProgram(pairedID)
	if err != nil {
		return err
	}
	runtime.LockOSThread()
	for i := 0; i < warmup(iters); i++ {
		if err := b.once(); err != nil {
			return err
		}
	}
	var t loopTimes
	for done := 0; done < iters; {
		n := min(max(iters/loopBatches, 1), iters-done)
		if err := t.batch(b, prog, paired, n); err != nil {
			return err
		}
		done += n
	}
	_, err = fmt.Fprintf(stdout, "%.2f %.2f %.2f %.2f %.3f\n", summarize(t.cpu).Median, summarize(t.wall).Median,
		medianOr(t.check), medianOr(t.paired), medianOr(t.ratio))
	return err
}

// openProgram opens a program by id; id 0 is no program (nil). The
// program is closed when the helper exits.
func openProgram(id int) (*ebpf.Program, error) {
	if id == 0 {
		return nil, nil
	}
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return nil, fmt.Errorf("open program %d: %w", id, err)
	}
	return p, nil
}

// medianOr is the median of xs, or -1 when there are none.
func medianOr(xs []float64) float64 {
	if len(xs) == 0 {
		return -1
	}
	return summarize(xs).Median
}

// loopTimes are a loop helper's per-bind figures, one per batch: thread
// CPU ns, wall ns, the program's kernel run time per run, the paired
// floor's, and the ratio of the two.
type loopTimes struct {
	cpu, wall, check, paired, ratio []float64
}

// runTime is a program's run time per run between two stats readings.
func runTime(s0, s1 *ebpf.ProgramStats) (float64, bool) {
	runs := s1.RunCount - s0.RunCount
	if runs == 0 {
		return 0, false
	}
	return float64(s1.Runtime-s0.Runtime) / float64(runs), true
}

// stats reads the stats of each program that is not nil.
func stats(progs ...*ebpf.Program) ([]*ebpf.ProgramStats, error) {
	out := make([]*ebpf.ProgramStats, len(progs))
	for i, p := range progs {
		if p == nil {
			continue
		}
		s, err := p.Stats()
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// batch times n binds; prog, if not nil, is the program whose run-time
// stats give the per-run figure, and paired, if not nil, the floor beside it.
func (t *loopTimes) batch(b *binder, prog, paired *ebpf.Program, n int) error {
	s0, err := stats(prog, paired)
	if err != nil {
		return err
	}
	c0, w0 := threadCPUClock(), time.Now()
	for i := 0; i < n; i++ {
		if err := b.once(); err != nil {
			return err
		}
	}
	t.cpu = append(t.cpu, float64(threadCPUClock()-c0)/float64(n))
	t.wall = append(t.wall, float64(time.Since(w0).Nanoseconds())/float64(n))
	if prog == nil {
		return nil
	}
	s1, err := stats(prog, paired)
	if err != nil {
		return err
	}
	c, ok := runTime(s0[0], s1[0])
	if !ok {
		return nil
	}
	t.check = append(t.check, c)
	if paired == nil {
		return nil
	}
	if f, ok := runTime(s0[1], s1[1]); ok && f > 0 {
		t.paired = append(t.paired, f)
		t.ratio = append(t.ratio, c/f)
	}
	return nil
}

// threadCPUClock is the calling thread's CPU time in ns.
func threadCPUClock() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// warmup is how many binds a loop helper makes before timing.
func warmup(iters int) int { return max(iters/10, 10) }

// binderArgs makes the binder of a helper's FAMILY PORT arguments.
func binderArgs(args []string) (*binder, error) {
	family, err := atoi(args, 0)
	if err != nil {
		return nil, err
	}
	port, err := atoi(args, 1)
	if err != nil {
		return nil, err
	}
	return newBinder(family, port)
}

// onceMain binds once and says whether the bind was allowed.
func onceMain(args []string, stdout io.Writer) error {
	b, err := binderArgs(args)
	if err != nil {
		return err
	}
	switch err := b.once(); {
	case err == nil:
		fmt.Fprintln(stdout, onceAllowed)
	case errors.Is(err, unix.EPERM):
		fmt.Fprintln(stdout, onceDenied)
	default:
		return err
	}
	return nil
}

// hammerMain binds for DURATION at RATE binds per second (0: as fast as it
// can) and prints how many binds it made.
func hammerMain(args []string, stdout io.Writer) error {
	b, err := binderArgs(args)
	if err != nil {
		return err
	}
	rate, err := atoi(args, 2)
	if err != nil {
		return err
	}
	if len(args) < 4 {
		return fmt.Errorf("missing duration")
	}
	dur, err := time.ParseDuration(args[3])
	if err != nil {
		return err
	}
	start := time.Now()
	n := 0
	for {
		el := time.Since(start)
		if el >= dur {
			break
		}
		if rate > 0 {
			due := int(el.Seconds() * float64(rate))
			if n >= due {
				time.Sleep(time.Duration(float64(n-due+1) / float64(rate) * float64(time.Second)))
				continue
			}
		}
		for i := 0; i < 16; i++ {
			if err := b.once(); err != nil {
				return err
			}
		}
		n += 16
	}
	_, err = fmt.Fprintln(stdout, n)
	return err
}
