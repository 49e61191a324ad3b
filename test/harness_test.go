// Package test holds the end-to-end tests: they build the real bindguard
// binary, run it against the real kernel with its attach point in a
// temporary cgroup, and make real bind() calls from processes placed in
// child cgroups.
package test

import (
	"bufio"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bindguard/bindguard/internal/testutils"
)

var binPath string

// raceBuilt is set when the daemon under test has the race detector, which
// multiplies its memory: memory bounds do not apply then.
var raceBuilt bool

// raceWarning is how the race detector starts a report.
const raceWarning = "WARNING: DATA RACE"

func TestMain(m *testing.M) {
	testutils.MaybeBinder()
	testutils.MaybeListener()
	maybeFlood()
	dir, err := os.MkdirTemp("", "bindguard-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// BINDGUARD_BIN names a prebuilt binary (the VM runner has no Go);
	// otherwise the test builds the one in this tree, with the race
	// detector: every e2e test then fails on a data race in the daemon.
	binPath = os.Getenv("BINDGUARD_BIN")
	if binPath == "" {
		binPath = filepath.Join(dir, "bindguard")
		build := exec.Command("go", "build", "-race", "-o", binPath, "../cmd/bindguard")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build bindguard:", err)
			os.Exit(1)
		}
	}
	if info, err := buildinfo.ReadFile(binPath); err == nil {
		for _, s := range info.Settings {
			raceBuilt = raceBuilt || (s.Key == "-race" && s.Value == "true")
		}
	}
	code := m.Run()
	testutils.CleanupBinder()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: an attach cgroup, a private bpffs, a registry file.
type env struct {
	t        *testing.T
	cgAbs    string // attach point
	cgRel    string
	pinPath  string
	registry string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testutils.Privileged(t)
	abs, rel := testutils.Cgroup(t, "/")
	return &env{t: t, cgAbs: abs, cgRel: rel, pinPath: testutils.BPFFS(t), registry: filepath.Join(t.TempDir(), "registry.yaml")}
}

// startEnv makes a test's env, writes registry into it and starts a daemon
// there with mode and extra flags, as most tests begin.
func startEnv(t *testing.T, registry, mode string, extra ...string) (*env, *daemon) {
	t.Helper()
	e := newEnv(t)
	e.writeRegistry(registry)
	return e, e.start(mode, extra...)
}

// writeRegistry writes a registry; %CG% stands for the attach cgroup's registry path.
func (e *env) writeRegistry(body string) {
	e.t.Helper()
	body = strings.ReplaceAll(body, "%CG%", e.cgRel)
	doc := "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata:\n  name: e2e\n" + body
	tmp := e.registry + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.registry); err != nil {
		e.t.Fatal(err)
	}
}

// child creates a cgroup below the attach point.
func (e *env) child(path string) string {
	e.t.Helper()
	dir := e.cgAbs
	for _, p := range strings.Split(path, "/") {
		dir = filepath.Join(dir, p)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			e.t.Fatal(err)
		}
	}
	return dir
}

// binder starts a binder in the cgroup path below the attach point, made if
// needed, for the test that made the env.
func (e *env) binder(path string) *testutils.Binder {
	e.t.Helper()
	return testutils.StartBinder(e.t, e.child(path), testutils.BinderOptions{})
}

// daemon is a running `bindguard run`.
type daemon struct {
	t       *testing.T
	cmd     *exec.Cmd
	pinPath string // its --pin-path, for waitAccounted
	mu      sync.Mutex
	lines   []map[string]any
	raw     []string
	notify  chan struct{}
	done    chan struct{}
}

func (e *env) start(mode string, extra ...string) *daemon {
	e.t.Helper()
	ready := filepath.Join(e.t.TempDir(), "ready")
	// The host's ip_local_reserved_ports is left alone unless a test asks
	// (--reserve-state FILE in extra; the last flag wins).
	args := append([]string{"run", "--registry", e.registry, "--mode", mode, "--cgroup", e.cgRel,
		"--pin-path", e.pinPath, "--ready-file", ready, "--log-format", "json", "--event-interval", "0",
		"--reserve-state", "none"}, extra...)
	d := startDaemon(e.t, args...)
	d.waitFile(ready, 20*time.Second)
	return d
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	// The state file (written whenever pods are tracked) is the test's own
	// unless it names one, never the host's default that concurrent daemons
	// would share.
	if len(args) > 0 && args[0] == "run" && !slices.Contains(args, "--node-state-file") {
		args = append(slices.Clone(args), "--node-state-file", filepath.Join(t.TempDir(), "node.json"))
	}
	cmd := exec.Command(binPath, args...)
	// A daemon must not outlive a test binary that dies before its cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = os.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, cmd: cmd, notify: make(chan struct{}, 1), done: make(chan struct{})}
	for i, a := range args { // the last one wins, as for the flag parser
		if a == "--pin-path" && i+1 < len(args) {
			d.pinPath = args[i+1]
		} else if v, ok := strings.CutPrefix(a, "--pin-path="); ok {
			d.pinPath = v
		}
	}
	go func() {
		defer close(d.done)
		s := bufio.NewScanner(stderr)
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for s.Scan() {
			var m map[string]any
			json.Unmarshal(s.Bytes(), &m)
			d.mu.Lock()
			d.raw = append(d.raw, s.Text())
			if m != nil {
				d.lines = append(d.lines, m)
			}
			d.mu.Unlock()
			select {
			case d.notify <- struct{}{}:
			default:
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		d.stop(syscall.SIGKILL)
		d.checkRaces()
	})
	return d
}

// checkRaces fails the test when the daemon's race detector reported.
func (d *daemon) checkRaces() {
	d.t.Helper()
	out := d.output()
	if i := strings.Index(out, raceWarning); i >= 0 {
		end := min(len(out), i+4000)
		d.t.Errorf("the daemon reported a data race:\n%s", out[i:end])
	}
}

// exited reports whether the daemon has exited and its output is read.
func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) waitFile(path string, timeout time.Duration) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return
		}
		select {
		case <-d.done:
			d.t.Fatalf("daemon exited before it was ready:\n%s", d.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
	d.t.Fatalf("daemon not ready after %v:\n%s", timeout, d.output())
}

func (d *daemon) output() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.raw, "\n")
}

// stop signals the daemon and waits for it to exit.
func (d *daemon) stop(sig syscall.Signal) {
	if d.exited() {
		return
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.done:
	case <-time.After(15 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		d.t.Errorf("daemon did not stop on %v", sig)
	}
}

// waitLog waits for a log record that match accepts, for up to 10 s.
func (d *daemon) waitLog(what string, match func(map[string]any) bool) map[string]any {
	d.t.Helper()
	return d.waitLogWithin(what, 10*time.Second, match)
}

// waitLogWithin is waitLog with another limit (waits across API server
// restarts take longer).
func (d *daemon) waitLogWithin(what string, limit time.Duration, match func(map[string]any) bool) map[string]any {
	d.t.Helper()
	deadline := time.After(limit)
	seen := 0
	for {
		d.mu.Lock()
		for ; seen < len(d.lines); seen++ {
			if match(d.lines[seen]) {
				m := d.lines[seen]
				d.mu.Unlock()
				return m
			}
		}
		d.mu.Unlock()
		select {
		case <-d.notify:
		case <-d.done:
			d.t.Fatalf("daemon exited while waiting for %s:\n%s", what, d.output())
		case <-deadline:
			d.t.Fatalf("no %s in the daemon's log after %v:\n%s", what, limit, d.output())
		}
	}
}

// events returns the violation records logged so far.
// logs returns every JSON log line read so far.
func (d *daemon) logs() []map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.lines)
}

func (d *daemon) events() []map[string]any {
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []map[string]any
	for _, m := range d.lines {
		if _, ok := m["reason"]; ok {
			evs = append(evs, m)
		}
	}
	return evs
}

// accounting is what `bindguard status -o json` says of violations and
// what became of their events: the kernel's counters.
type accounting struct {
	Checks     int            `json:"checks"`
	Allowed    int            `json:"allowed"`
	Audited    map[string]int `json:"audited"`
	Denied     map[string]int `json:"denied"`
	Dropped    int            `json:"eventsDropped"`
	Suppressed int            `json:"eventsSuppressed"`
}

// violations is every violation the kernel counted, audited or denied.
func (a accounting) violations() int {
	n := 0
	for _, m := range []map[string]int{a.Audited, a.Denied} {
		for _, c := range m {
			n += c
		}
	}
	return n
}

// status reads the kernel's counters of the daemon's pins.
func (d *daemon) status() accounting {
	d.t.Helper()
	if d.pinPath == "" {
		d.t.Fatal("the daemon was started without --pin-path: no status to read")
	}
	out, code := bindguard(d.t, "status", "-o", "json", "--pin-path", d.pinPath)
	var a accounting
	if err := json.Unmarshal([]byte(out), &a); code != 0 || err != nil {
		d.t.Fatalf("status: exit %d, %v\n%s", code, err, out)
	}
	return a
}

// waitAccounted waits until every violation the kernel counted is
// accounted for: its event logged by the daemon, dropped (the ring buffer
// was full) or suppressed (folded by rate limiting). Only then does a count
// of the logged events count all there will be of the violations so far;
// after a sleep it may count fewer, and an upper bound on it could not fail.
// Accounts that never balance (events lost without a count) fail the test.
func (d *daemon) waitAccounted() accounting {
	d.t.Helper()
	// The loop ends as soon as all are logged; the limit is for the
	// race-built daemon's reader under load (see TestBindStorm).
	deadline := time.Now().Add(time.Minute)
	for {
		a := d.status()
		logged := len(d.events())
		if logged+a.Dropped+a.Suppressed == a.violations() {
			return a
		}
		if time.Now().After(deadline) || d.exited() {
			d.t.Errorf("events not accounted for: %d logged + %d dropped + %d suppressed != %d violations",
				logged, a.Dropped, a.Suppressed, a.violations())
			return a
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eventFor waits for the event of a bind to port/protocol.
func (d *daemon) eventFor(port int, proto string) map[string]any {
	d.t.Helper()
	return d.waitLog(fmt.Sprintf("event for %d/%s", port, proto), func(m map[string]any) bool {
		p, _ := m["port"].(float64)
		return int(p) == port && m["protocol"] == proto && m["reason"] != nil
	})
}

// bindguard runs a bindguard subcommand and returns its output and exit code.
func bindguard(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(binPath, args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}
