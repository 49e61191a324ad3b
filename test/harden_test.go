package test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Two registries that both own port 43010 for the cgroup "owner", with the
// entry on a different line, so an event decorated with the wrong
// generation's origins shows.
const (
	ownedAt6 = "entries:\n  - {port: 43010, process: owned, owners: [{cgroup: %CG%/owner}]}\n"
	ownedAt7 = "entries:\n  - {port: 43011, process: other}\n  - {port: 43010, process: owned, owners: [{cgroup: %CG%/owner}]}\n"
)

// TestReloadUnderEventFlood: reloads while owner-violation events flow.
// The origins were a map the reload wrote while the event reader read it:
// the race detector (the daemon under test is built with -race) reported it,
// and an unsynchronised map can crash the daemon.
func TestReloadUnderEventFlood(t *testing.T) {
	e := newEnv(t)
	e.child("owner")
	e.writeRegistry(ownedAt6)
	d := e.start("enforce", "--no-watch")
	startFlood(t, e.child("intruder"), 43010)
	d.eventFor(43010, "tcp")

	reloads := 60
	if testing.Short() { // the VM runner, under software emulation
		reloads = 15
	}
	for i := 0; i < reloads; i++ {
		if i%2 == 0 {
			e.writeRegistry(ownedAt7)
		} else {
			e.writeRegistry(ownedAt6)
		}
		d.cmd.Process.Signal(syscall.SIGHUP)
		gen := i + 2
		d.waitLog(fmt.Sprintf("generation %d", gen), func(m map[string]any) bool {
			return m["msg"] == "policy in force" && generation(m) == gen
		})
	}
	d.stop(syscall.SIGTERM)

	withRule := 0
	evs := d.events()
	for _, ev := range evs {
		rule, ok := ev["rule"].(string)
		if !ok {
			// Read more than keepOrigins reloads after its policy was
			// replaced (a slow reader under the race detector): logged
			// without its rule, as documented.
			continue
		}
		withRule++
		if (rule != e.registry+":6" && rule != e.registry+":7") || ev["process"] != "owned" {
			t.Errorf("event decorated with the wrong origin: rule %q process %v", rule, ev["process"])
		}
	}
	t.Logf("%d reloads, %d events logged, %d with their rule", reloads, len(evs), withRule)
	if withRule == 0 {
		t.Error("no event carried its rule")
	}
	if strings.Contains(d.output(), raceWarning) {
		t.Error("the daemon reported a data race") // checkRaces prints it
	}
}

// TestStopDuringFlood: SIGTERM while violations flow as fast as two
// processes can bind. The daemon used to drain the ring until the flood
// stopped. Now it must exit while the flood still runs: the flood is
// stopped only after the exit is seen.
func TestStopDuringFlood(t *testing.T) {
	e, d := startEnv(t, registryA, "enforce", "--no-watch")
	var floods []*flood
	for i := range 2 {
		floods = append(floods, startFlood(t, e.child(fmt.Sprintf("flood%d", i)), 43003))
	}
	d.eventFor(43003, "tcp")

	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the daemon has not exited two minutes after SIGTERM during a flood")
	}
	took := time.Since(start)
	for i, f := range floods {
		if !f.running() {
			t.Errorf("flood %d ended before the daemon's exit was seen: the test proves nothing", i)
		}
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d:\n%s", code, tail(d.output(), 20))
	}
	// The process exit includes the race detector's one-second wait at
	// exit; the daemon's own shutdown ends with its last log line.
	var last time.Time
	for _, m := range d.lines {
		if m["msg"] == "stopped reading events; those left in the ring are dropped" {
			t.Logf("left unread: %v events", m["events"])
		}
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"])); err == nil && m["reason"] == nil {
			last = ts
		}
	}
	t.Logf("with the flood running, the daemon logged its last line %v after SIGTERM and its process was reaped after %v", last.Sub(start), took)
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestSecondDaemonRefused: a second daemon on the same pin path would take
// over the first's links, and whichever exits first would detach them.
func TestSecondDaemonRefused(t *testing.T) {
	e, first := startEnv(t, registryA, "enforce")
	b := e.binder("svc")

	second := startDaemon(t, "run", "--registry", e.registry, "--mode", "enforce", "--cgroup", e.cgRel,
		"--pin-path", e.pinPath, "--log-format", "json")
	select {
	case <-second.done:
	case <-time.After(time.Minute):
		t.Fatal("a second daemon on the same pin path is still running")
	}
	want := fmt.Sprintf("in use by another bindguard (pid %d)", first.cmd.Process.Pid)
	if code := second.cmd.ProcessState.ExitCode(); code == 0 || !strings.Contains(second.output(), want) {
		t.Errorf("second daemon: exit %d, want non-zero and %q:\n%s", code, want, second.output())
	}
	expect(t, b, []bindCase{{"first daemon still enforces", "tcp", "4", any4, 43003, unix.EPERM}})
	if out, code := bindguard(t, "status", "--pin-path", e.pinPath); code != 0 || !strings.Contains(out, "bind4") {
		t.Errorf("status exit %d:\n%s", code, out)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDetachWhileRunningIsVisible: `bindguard detach` under a running
// daemon ends enforcement; the daemon must then stop reporting healthy.
func TestDetachWhileRunningIsVisible(t *testing.T) {
	e := newEnv(t)
	e.writeRegistry(registryA)
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	d := e.start("enforce", "--metrics-addr", addr, "--check-interval", "100ms")
	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz before detach: %d %s", code, body)
	}
	out, code := bindguard(t, "detach", "--pin-path", e.pinPath)
	if code != 0 || !strings.Contains(out, fmt.Sprintf("a bindguard daemon (pid %d) holds", d.cmd.Process.Pid)) {
		t.Errorf("detach under a running daemon: exit %d, no warning naming it:\n%s", code, out)
	}
	assertNothingAttached(t, e.cgAbs)
	if code, body := httpGet(t, "http://"+addr+"/healthz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not attached") {
		t.Errorf("healthz after detach: %d %q, want 503 not attached", code, body)
	}
	if _, body := httpGet(t, "http://"+addr+"/metrics"); !strings.Contains(body, "\nbindguard_attached 0\n") {
		t.Errorf("metrics after detach do not say bindguard_attached 0")
	}
	d.waitLog("self-check", func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "bind programs are no longer attached")
	})
	if _, body := httpGet(t, "http://"+addr+"/metrics"); strings.Contains(body, "\nbindguard_attachment_lost_total 0\n") || !strings.Contains(body, "\nbindguard_attachment_lost_total ") {
		t.Errorf("the self-check's lost attachment is not counted")
	}
	if _, code := bindguard(t, "status", "--pin-path", e.pinPath); code == 0 {
		t.Error("status exits 0 after detach")
	}
	// Stopping a daemon whose links someone else detached is no error.
	d.stop(syscall.SIGTERM)
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after an outside detach:\n%s", code, tail(d.output(), 10))
	}
}

// TestReloadFromFIFO: a registry replaced by a FIFO blocked the reload in
// open() with the daemon's lock held, and SIGTERM went unheard.
func TestReloadFromFIFO(t *testing.T) {
	e, d := startEnv(t, registryA, "enforce", "--no-watch")
	if err := os.Remove(e.registry); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(e.registry, 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	rej := d.waitLog("rejected reload", func(m map[string]any) bool {
		return m["msg"] == "reload rejected; the previous policy stays in force"
	})
	if msg, _ := rej["error"].(string); !strings.Contains(msg, "not a regular file (a FIFO)") {
		t.Errorf("rejection: %q", msg)
	}
	d.stop(syscall.SIGTERM)
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after a FIFO reload", code)
	}
}

// TestRegistryDirReplaced: configuration management replaces the registry
// directory as a whole; the daemon must reload from the new one.
func TestRegistryDirReplaced(t *testing.T) {
	e := newEnv(t)
	dir := filepath.Join(t.TempDir(), "registry.d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.registry = filepath.Join(dir, "10-ports.yaml")
	e.writeRegistry(registryA)
	e.registry = dir
	d := e.start("enforce")
	b := e.binder("svc")
	expect(t, b, []bindCase{{"A in force", "tcp", "4", any4, 43002, unix.EPERM}})

	if err := os.Rename(dir, dir+".bak"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e.registry = filepath.Join(dir, "10-ports.yaml")
	e.writeRegistry(registryB)
	d.waitLog("reload from the new directory", func(m map[string]any) bool {
		return m["msg"] == "policy in force" && generation(m) >= 2
	})
	expect(t, b, []bindCase{{"B in force", "tcp", "4", any4, 43002, nil}})
}

// TestDetachThenNewDaemon: after `bindguard detach` under a running
// daemon, a new daemon may make the pin path anew. The old daemon's exit
// must then leave the new daemon's pins and links alone.
func TestDetachThenNewDaemon(t *testing.T) {
	e, old := startEnv(t, registryA, "enforce")
	if out, code := bindguard(t, "detach", "--pin-path", e.pinPath); code != 0 {
		t.Fatalf("detach: %s", out)
	}
	b := e.binder("svc")
	expect(t, b, []bindCase{{"detached", "tcp", "4", any4, 43003, nil}})

	e.start("enforce")
	expect(t, b, []bindCase{{"new daemon enforces", "tcp", "4", any4, 43003, unix.EPERM}})
	old.stop(syscall.SIGTERM)
	if code := old.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("old daemon exit code %d:\n%s", code, tail(old.output(), 10))
	}
	expect(t, b, []bindCase{{"new daemon still enforces after the old one exits", "tcp", "4", any4, 43003, unix.EPERM}})
	if out, code := bindguard(t, "status", "--pin-path", e.pinPath); code != 0 {
		t.Errorf("status after the old daemon exits: exit %d\n%s", code, out)
	}
}
