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

// TestRateLimitedEvents: a process retrying one bind yields one event per
// interval with a suppressed count, while the counters stay exact.
func TestRateLimitedEvents(t *testing.T) {
	e, d := startEnv(t, registryA, "enforce", "--event-interval", "1s")
	b := e.binder("svc")
	start := time.Now()
	const tries = 50
	for i := 0; i < tries; i++ {
		expect(t, b, []bindCase{{"retry", "tcp", "4", any4, 43003, unix.EPERM}})
	}
	if time.Since(start) > 900*time.Millisecond {
		t.Skip("machine too slow to stay within one interval")
	}
	d.eventFor(43003, "tcp")
	time.Sleep(1100 * time.Millisecond)
	expect(t, b, []bindCase{{"after the interval", "tcp", "4", any4, 43003, unix.EPERM}})
	ev := d.waitLog("event with suppressed count", func(m map[string]any) bool { return m["suppressed"] != nil })
	if ev["suppressed"] != float64(tries-1) {
		t.Errorf("suppressed = %v, want %d", ev["suppressed"], tries-1)
	}
	if n := len(d.events()); n != 2 {
		t.Errorf("%d events for %d violations in two intervals, want 2", n, tries+1)
	}
	out, _ := bindguard(t, "status", "-o", "json", "--pin-path", e.pinPath)
	if !regexp.MustCompile(`"undeclared": 51`).MatchString(out) || !regexp.MustCompile(`"eventsSuppressed": 49`).MatchString(out) {
		t.Errorf("counters not exact:\n%s", out)
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
// cache; the key's next event, sent from another CPU, carries them all.
func TestFoldsAcrossCPUs(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("needs two CPUs")
	}
	e := newEnv(t)
	e.writeRegistry(registryA)
	d := e.start("enforce", "--event-interval", "2s")
	b := testutils.StartBinder(t, e.child("svc"), testutils.BinderOptions{})
	retry := bindCase{"retry", "tcp", "4", any4, 43004, unix.EPERM}
	start := time.Now()
	expect(t, b, []bindCase{retry})
	folds := 0
	for _, step := range []struct{ cpu, binds int }{{0, 10}, {1, 10}, {0, 5}} {
		pinProcess(t, b.PID, step.cpu)
		for i := 0; i < step.binds; i++ {
			expect(t, b, []bindCase{retry})
		}
		folds += step.binds
	}
	if time.Since(start) > 1800*time.Millisecond {
		t.Skip("machine too slow to stay within one interval")
	}
	d.eventFor(43004, "tcp")
	time.Sleep(2100 * time.Millisecond)
	pinProcess(t, b.PID, 1)
	expect(t, b, []bindCase{{"after the interval", "tcp", "4", any4, 43004, unix.EPERM}})
	ev := d.waitLog("event with suppressed count", func(m map[string]any) bool { return m["suppressed"] != nil })
	if ev["suppressed"] != float64(folds) {
		t.Errorf("suppressed = %v, want %d: folds counted on other CPUs were not collected", ev["suppressed"], folds)
	}

	// The next event carries the folds since this one, and none it took
	// already: each fold is carried by exactly one event.
	start = time.Now()
	pinProcess(t, b.PID, 0)
	const later = 7
	for i := 0; i < later; i++ {
		expect(t, b, []bindCase{retry})
	}
	if time.Since(start) > 1800*time.Millisecond {
		t.Skip("machine too slow to stay within one interval")
	}
	time.Sleep(2100 * time.Millisecond)
	pinProcess(t, b.PID, 1)
	expect(t, b, []bindCase{{"after the next interval", "tcp", "4", any4, 43004, unix.EPERM}})
	n := 0
	ev = d.waitLog("a second event with suppressed count", func(m map[string]any) bool {
		if m["suppressed"] != nil {
			n++
		}
		return n == 2
	})
	if ev["suppressed"] != float64(later) {
		t.Errorf("second event: suppressed = %v, want %d: folds were carried twice or lost", ev["suppressed"], later)
	}
	out, _ := bindguard(t, "status", "-o", "json", "--pin-path", e.pinPath)
	if !regexp.MustCompile(fmt.Sprintf(`"eventsSuppressed": %d\b`, folds+later)).MatchString(out) {
		t.Errorf("counters not exact, want %d suppressed:\n%s", folds+later, out)
	}
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
