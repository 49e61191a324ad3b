package test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testutils"
)

// TestRateLimitedEvents: a process retrying one bind yields at most one
// event per interval, each carrying how many it folded, while the counters
// stay exact. What the test asserts holds however fast the machine runs
// the binds: it measures the time they took rather than assume one interval.
func TestRateLimitedEvents(t *testing.T) {
	const interval = time.Second
	e, d := startEnv(t, registryA, "enforce", "--event-interval", interval.String())
	b := e.binder("svc")
	retry := bindCase{"retry", "tcp", "4", any4, 43003, unix.EPERM}
	k := folding{d: d, b: b, port: 43003, proto: "tcp", interval: interval, bind: retry, start: time.Now()}
	const tries = 50
	for i := 0; i < tries; i++ {
		k.retry(t)
	}
	a := k.check(t, 0, k.flush(t))
	if a.Denied["undeclared"] != k.binds {
		t.Errorf("denied[undeclared] = %d, the binder saw %d refused", a.Denied["undeclared"], k.binds)
	}
}

// TestMetrics scrapes the Prometheus endpoint.
func TestMetrics(t *testing.T) {
	e, d := startEnv(t, registryA, "enforce", "--metrics-addr", "127.0.0.1:0")
	addr := d.waitLog("metrics address", func(m map[string]any) bool { return m["msg"] == "serving metrics" })["addr"].(string)
	b := e.binder("svc")
	expect(t, b, []bindCase{
		{"undeclared", "tcp", "4", any4, 43003, unix.EPERM},
		{"undeclared again", "udp", "6", any6, 43003, unix.EPERM},
		{"declared", "tcp", "4", any4, 43000, nil},
	})
	d.eventFor(43003, "udp")
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for metric, want := range map[string]float64{
		`bindguard_binds_denied_total{reason="undeclared"}`: 2,
		`bindguard_binds_allowed_total`:                     1,
		`bindguard_binds_checked_total`:                     3,
		`bindguard_reloads_total{result="ok"}`:              0,
		`bindguard_policy_generation`:                       1,
		`bindguard_events_dropped_total`:                    0,
	} {
		m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`).FindStringSubmatch(string(body))
		if m == nil {
			if want != 0 {
				t.Errorf("no %s in\n%s", metric, body)
			}
			continue
		}
		if got, _ := strconv.ParseFloat(m[1], 64); got != want {
			t.Errorf("%s = %v, want %v", metric, got, want)
		}
	}
}

// TestBindStorm: many cgroups binding undeclared ports as fast as they can.
// Every violation is accounted for, as a logged event or as a counted drop,
// and the daemon's memory stays bounded.
func TestBindStorm(t *testing.T) {
	e, d := startEnv(t, registryA, "audit")
	const binders, each = 8, 1500
	var wg sync.WaitGroup
	for i := 0; i < binders; i++ {
		b := testutils.StartBinder(t, e.child(fmt.Sprintf("storm%d", i)), testutils.BinderOptions{})
		base := uint16(44000 + 100*i) // ports of its own: no EADDRINUSE between binders
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				if err := b.Bind("udp", "4", any4, base+uint16(j%100)); err != nil {
					t.Errorf("audit mode refused a bind: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()

	var st struct {
		Audited       map[string]int
		EventsDropped int
	}
	// A generous bound for the reader to catch up: the race-built daemon
	// logs several times slower. The loop ends as soon as all are counted.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, _ := bindguard(t, "status", "-o", "json", "--pin-path", e.pinPath)
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("status: %v\n%s", err, out)
		}
		if len(d.events())+st.EventsDropped >= binders*each || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	logged := len(d.events())
	t.Logf("%d violations: %d logged, %d dropped", st.Audited["undeclared"], logged, st.EventsDropped)
	if st.Audited["undeclared"] != binders*each {
		t.Errorf("counted %d audits, want %d", st.Audited["undeclared"], binders*each)
	}
	if logged+st.EventsDropped != binders*each {
		t.Errorf("%d logged + %d dropped != %d violations: events lost without a count", logged, st.EventsDropped, binders*each)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status); m != nil {
		kb, _ := strconv.Atoi(string(m[1]))
		t.Logf("daemon peak RSS %d KiB", kb)
		if kb > 200<<10 && !raceBuilt {
			t.Errorf("daemon peak RSS %d KiB during a storm", kb)
		}
	}
}

// TestFoldsAcrossCPUs: folds of one key are counted in each CPU's fold
// cache; the key's next event, sent from another CPU, carries them all, and
// each fold is carried by exactly one event: the next event carries the
// folds since the last one and none that one took already.
func TestFoldsAcrossCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	e := newEnv(t)
	e.writeRegistry(registryA)
	const interval = 2 * time.Second
	d := e.start("enforce", "--event-interval", interval.String())
	b := testutils.StartBinder(t, e.child("svc"), testutils.BinderOptions{})
	retry := bindCase{"retry", "tcp", "4", any4, 43004, unix.EPERM}
	k := folding{d: d, b: b, port: 43004, proto: "tcp", interval: interval, bind: retry, start: time.Now(), pinFlush: true, flushCPU: 1}
	pinProcess(t, b.PID, 1)
	k.retry(t) // the key's first event, on CPU 1
	for _, step := range []struct{ cpu, binds int }{{0, 10}, {1, 10}, {0, 5}} {
		pinProcess(t, b.PID, step.cpu)
		for i := 0; i < step.binds; i++ {
			k.retry(t)
		}
	}
	// Sent from CPU 1, the flushing event must collect what CPU 0 folded:
	// CPU 0 binds nothing else for this daemon, so its folds leave its
	// cache only in an event of the key.
	round := k.check(t, 0, k.flush(t))

	// Folds on CPU 0 again; the next event, from CPU 1, carries them and
	// none of those the first round's events took.
	pinProcess(t, b.PID, 0)
	for i := 0; i < 7; i++ {
		k.retry(t)
	}
	a := k.check(t, round.events, k.flush(t))
	if a.Denied["undeclared"] != k.binds {
		t.Errorf("denied[undeclared] = %d, the binder saw %d refused", a.Denied["undeclared"], k.binds)
	}
}

// folding drives one rate-limit key (a binder's bind to port/proto, always
// refused) and checks the events the daemon logs for it against clock-free
// invariants: every violation is an event or is counted in exactly one
// event's suppressed count, and there are no more events than the intervals
// the binds spanned allow.
type folding struct {
	d        *daemon
	b        *testutils.Binder
	port     int
	proto    string
	interval time.Duration
	bind     bindCase
	start    time.Time // before the first bind
	end      time.Time // after the last
	pinFlush bool      // run the flushing binds on flushCPU
	flushCPU int
	binds    int // made so far, each refused
	// At the last balance (see check): the binds and the key's events.
	lastBinds int
}

func (k *folding) retry(t *testing.T) {
	t.Helper()
	expect(t, k.b, []bindCase{k.bind})
	k.end = time.Now()
	k.binds++
}

// keyEvents is the key's events logged so far and the violations they
// carry, 1 + suppressed each.
func (k *folding) keyEvents() (evs []map[string]any, carried int) {
	for _, ev := range k.d.events() {
		p, _ := ev["port"].(float64)
		if int(p) != k.port || ev["protocol"] != k.proto {
			continue
		}
		s, _ := ev["suppressed"].(float64)
		evs = append(evs, ev)
		carried += 1 + int(s)
	}
	return evs, carried
}

// flush makes binds after the key's interval has passed until one of them
// is an event that carries every fold so far: the key's events then carry
// all its violations. The sleep only saves rounds; it decides nothing. It
// returns the balanced accounts.
func (k *folding) flush(t *testing.T) accounting {
	t.Helper()
	const rounds = 5
	for i := 0; i < rounds; i++ {
		time.Sleep(k.interval + k.interval/20)
		if k.pinFlush {
			pinProcess(t, k.b.PID, k.flushCPU)
		}
		k.retry(t)
		a := k.d.waitAccounted()
		if len(k.d.events())+a.Dropped+a.Suppressed != a.violations() {
			t.FailNow() // waitAccounted said why
		}
		if _, carried := k.keyEvents(); carried == k.binds {
			return a
		}
	}
	_, carried := k.keyEvents()
	t.Fatalf("after %d binds, %d more after the interval each: the key's events carry %d violations, want %d: folds lost or carried twice\n%s",
		k.binds-rounds, rounds, carried, k.binds, k.d.output())
	return accounting{}
}

// balance is what check found.
type balance struct {
	accounting
	events int // the key's events so far
}

// check, after a flush that returned a (so the key's events carry all its
// binds, each once), checks that there are no more events than the time
// the binds took allows, and that none was dropped. It logs the events
// after the first `from`, those of the binds since the last check.
func (k *folding) check(t *testing.T, from int, a accounting) balance {
	t.Helper()
	span := k.end.Sub(k.start)
	evs, _ := k.keyEvents()
	var sup []int
	for _, ev := range evs[from:] {
		s, _ := ev["suppressed"].(float64)
		sup = append(sup, int(s))
	}
	t.Logf("%d binds, %d since the last check; %v since the first (interval %v); events since the last check: %d, suppressed %v",
		k.binds, k.binds-k.lastBinds, span.Round(time.Millisecond), k.interval, len(sup), sup)
	// Two events of the key are at least an interval apart on the rate
	// limiter's clock, which lags the monotonic clock by at most a tick
	// (the coarse clock's resolution); all of them fall between k.start and
	// k.end. A span of s thus holds at most floor((s+tick)/interval)+1.
	var res unix.Timespec
	if err := unix.ClockGetres(unix.CLOCK_MONOTONIC_COARSE, &res); err != nil {
		t.Fatal(err)
	}
	if limit := int((span+time.Duration(res.Nano()))/k.interval) + 1; len(evs) > limit {
		t.Errorf("%d events of the key in %v, at most %d with an interval of %v: not rate-limited", len(evs), span, limit, k.interval)
	}
	// waitAccounted found logged + dropped + suppressed = violations.
	if a.Dropped != 0 {
		t.Errorf("%d events dropped: the kernel's suppressed count is not what the events carried", a.Dropped)
	}
	k.lastBinds = k.binds
	return balance{accounting: a, events: len(evs)}
}

// pinProcess moves every thread of pid to one CPU.
func pinProcess(t *testing.T, pid, cpu int) {
	t.Helper()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			t.Fatalf("pin thread %d to CPU %d: %v", tid, cpu, err)
		}
	}
}
