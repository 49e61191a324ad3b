package vmsystemd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Ports of the guest's registry (scripts/vmtest-systemd.sh writes it):
// declared is declared for anyone, undeclared is not, and reloaded is
// declared by the fragment the reload step adds.
const (
	declared   = 43200
	undeclared = 43201
	reloaded   = 43210
	unit       = "bindguard.service"
	registry   = "/etc/bindguard/registry.d"
	bindEnv    = "BINDGUARD_VM_BIND"
)

func TestMain(m *testing.M) {
	// The unit that binds an undeclared port runs this binary in bind mode.
	if p := os.Getenv(bindEnv); p != "" {
		port, _ := strconv.Atoi(p)
		if err := bind(port); err != nil {
			fmt.Fprintf(os.Stderr, "bind 0.0.0.0:%d: %v\n", port, err)
			os.Exit(1)
		}
		fmt.Printf("bound 0.0.0.0:%d\n", port)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// bind binds a TCP socket to 0.0.0.0:port and closes it. It holds
// syscall.ForkLock, as the standard library does around descriptors it
// creates, so that a fork for systemctl (which holds the read side) never
// carries the bound socket into a child and makes the next bind fail with
// EADDRINUSE.
func bind(port int) error {
	syscall.ForkLock.Lock()
	defer syscall.ForkLock.Unlock()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet4{Port: port})
}

// TestSystemd runs the steps of the systemd deployment in order; each step
// leaves the service running for the next.
func TestSystemd(t *testing.T) {
	if os.Getenv("BINDGUARD_SYSTEMD_VM") != "1" {
		t.Skip("runs only in the VM of scripts/vmtest-systemd.sh (it starts and stops services)")
	}
	for _, step := range []struct {
		name string
		fn   func(t *testing.T)
	}{
		{"start", stepStart},
		{"reload", stepReload},
		{"restart", stepRestart},
		{"stop", stepStop},
		{"kill9", stepKill9},
		{"undeclared-unit", stepUndeclaredUnit},
		{"capabilities", stepCapabilities},
	} {
		t0 := time.Now()
		ok := t.Run(step.name, step.fn)
		t.Logf("step %s: ok=%v in %.1fs", step.name, ok, time.Since(t0).Seconds())
	}
}

// stepStart: systemctl start gives an enforcing daemon, ready, with its
// records and a violation's event in the journal.
func stepStart(t *testing.T) {
	systemctl(t, "start", unit)
	if s := show(t, "ActiveState"); s != "active" {
		t.Fatalf("ActiveState %s after start", s)
	}
	waitJournal(t, "attached", func(m map[string]any) bool { return m["msg"] == "bind programs attached" && m["mode"] == "enforce" })
	if _, err := os.Stat("/run/bindguard/ready"); err != nil {
		t.Errorf("ready file: %v", err)
	}
	expectBind(t, declared, nil)
	expectBind(t, undeclared, unix.EPERM)
	waitJournal(t, "the denied bind's event", func(m map[string]any) bool {
		return m["msg"] == "bind denied" && m["port"] == float64(undeclared)
	})
	out := run(t, "/usr/local/bin/bindguard", "status")
	if !strings.Contains(out, "enforce") {
		t.Errorf("bindguard status does not say enforce:\n%s", out)
	}
}

// stepReload: systemctl reload (SIGHUP) puts a new fragment in force.
func stepReload(t *testing.T) {
	expectBind(t, reloaded, unix.EPERM)
	frag := registry + "/20-reload.yaml"
	body := fmt.Sprintf("apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata:\n  name: reload\nentries:\n  - port: %d\n    process: reloaded\n", reloaded)
	// Written elsewhere and renamed in, so the watcher never sees half a file.
	if err := os.WriteFile("/etc/bindguard/.20-reload.yaml", []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename("/etc/bindguard/.20-reload.yaml", frag); err != nil {
		t.Fatal(err)
	}
	systemctl(t, "reload", unit)
	// The directory watcher may reload first; either way a new policy is logged.
	waitJournal(t, "a reload", func(m map[string]any) bool { return m["msg"] == "policy in force" })
	expectBind(t, reloaded, nil)
	expectBind(t, undeclared, unix.EPERM)
}

// stepRestart: systemctl restart with a bind loop running across it: no
// wrong verdict.
func stepRestart(t *testing.T) {
	pid := show(t, "MainPID")
	l := startLoop()
	l.waitRounds(200)
	systemctl(t, "restart", unit)
	l.waitRounds(200)
	l.stopAndCheck(t)
	if show(t, "MainPID") == pid {
		t.Errorf("MainPID still %s after restart", pid)
	}
	waitJournal(t, "the new process taking over", func(m map[string]any) bool {
		return m["msg"] == "bind programs attached" && m["took_over"] == true
	})
}

// stepStop: as documented, stopping the unit leaves the pinned programs
// enforcing the last policy, and bindguard status still reads them.
func stepStop(t *testing.T) {
	systemctl(t, "stop", unit)
	if s := show(t, "ActiveState"); s != "inactive" {
		t.Errorf("ActiveState %s after stop", s)
	}
	waitJournal(t, "the exit message", func(m map[string]any) bool {
		return strings.HasPrefix(fmt.Sprint(m["msg"]), "exiting; pinned programs keep enforcing")
	})
	expectBind(t, undeclared, unix.EPERM)
	expectBind(t, declared, nil)
	if out := run(t, "/usr/local/bin/bindguard", "status"); !strings.Contains(out, "enforce") {
		t.Errorf("bindguard status after stop:\n%s", out)
	}
	systemctl(t, "start", unit)
}

// stepKill9: kill -9 of the main pid: systemd restarts the service, and the
// bind loop sees enforcement throughout.
func stepKill9(t *testing.T) {
	pid := show(t, "MainPID")
	restarts := show(t, "NRestarts")
	l := startLoop()
	l.waitRounds(200)
	run(t, "kill", "-9", pid)
	deadline := time.Now().Add(60 * time.Second)
	for show(t, "NRestarts") == restarts || show(t, "ActiveState") != "active" || show(t, "SubState") != "running" {
		if time.Now().After(deadline) {
			t.Fatalf("not restarted within 60s: %s", run(t, "systemctl", "status", "--no-pager", unit))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := os.Stat("/run/bindguard/ready"); err != nil {
		t.Errorf("ready file after the restart: %v", err)
	}
	l.waitRounds(200)
	l.stopAndCheck(t)
	if got := show(t, "MainPID"); got == pid {
		t.Errorf("MainPID still %s", got)
	}
}

// stepUndeclaredUnit: a unit whose process binds an undeclared port fails to
// start; its journal has the EPERM and bindguard's has the event naming it.
func stepUndeclaredUnit(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const name = "vmtest-undeclared.service"
	body := fmt.Sprintf("[Unit]\nDescription=binds an undeclared port\n[Service]\nType=oneshot\nEnvironment=%s=%d\nExecStart=%s\n", bindEnv, undeclared, self)
	if err := os.WriteFile("/run/systemd/system/"+name, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	systemctl(t, "daemon-reload")
	if out, err := exec.Command("systemctl", "start", name).CombinedOutput(); err == nil {
		t.Errorf("systemctl start %s succeeded:\n%s", name, out)
	}
	if s, _ := exec.Command("systemctl", "is-failed", name).Output(); strings.TrimSpace(string(s)) != "failed" {
		t.Errorf("%s is %q, want failed", name, strings.TrimSpace(string(s)))
	}
	want := fmt.Sprintf("bind 0.0.0.0:%d: operation not permitted", undeclared)
	waitFor(t, "the EPERM in the unit's journal", func() bool {
		return strings.Contains(journal(t, name), want)
	})
	ev := waitJournal(t, "bindguard's event naming the unit", func(m map[string]any) bool {
		return m["msg"] == "bind denied" && m["unit"] == name && m["port"] == float64(undeclared)
	})
	t.Logf("event: %v", ev)
}

// loop binds the declared and the undeclared port in turn until stopped,
// counting verdicts that differ from the policy.
type loop struct {
	rounds, wrong atomic.Int64
	stop          chan struct{}
	done          sync.WaitGroup
	mu            sync.Mutex
	first         []string
}

func startLoop() *loop {
	l := &loop{stop: make(chan struct{})}
	l.done.Add(1)
	go func() {
		defer l.done.Done()
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			for _, c := range []struct {
				port int
				want error
			}{{declared, nil}, {undeclared, unix.EPERM}} {
				if err := bind(c.port); !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
					l.wrong.Add(1)
					l.mu.Lock()
					if len(l.first) < 5 {
						l.first = append(l.first, fmt.Sprintf("%s: bind %d = %v, want %v", time.Now().Format(time.StampMicro), c.port, err, c.want))
					}
					l.mu.Unlock()
				}
			}
			l.rounds.Add(1)
		}
	}()
	return l
}

func (l *loop) waitRounds(n int64) {
	target := l.rounds.Load() + n
	for l.rounds.Load() < target {
		time.Sleep(10 * time.Millisecond)
	}
}

func (l *loop) stopAndCheck(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.done.Wait()
	t.Logf("bind loop: %d rounds (%d binds), %d wrong verdicts", l.rounds.Load(), 2*l.rounds.Load(), l.wrong.Load())
	if l.wrong.Load() != 0 {
		t.Errorf("%d wrong verdicts, first: %s", l.wrong.Load(), strings.Join(l.first, "; "))
	}
}

func expectBind(t *testing.T, port int, want error) {
	t.Helper()
	if err := bind(port); !errors.Is(err, want) && !(err == nil && want == nil) {
		t.Errorf("bind %d = %v, want %v", port, err, want)
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func systemctl(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
		t.Fatalf("systemctl %s: %v\n%s\n%s\n%s", strings.Join(args, " "), err, out,
			tryRun("systemctl", "status", "--no-pager", unit), tryRun("journalctl", "-u", unit, "-o", "cat", "--no-pager", "-n", "30"))
	}
}

func tryRun(name string, args ...string) string {
	out, _ := exec.Command(name, args...).CombinedOutput()
	return string(out)
}

// show reads one property of bindguard.service.
func show(t *testing.T, prop string) string {
	t.Helper()
	return strings.TrimSpace(run(t, "systemctl", "show", "-p", prop, "--value", unit))
}

func journal(t *testing.T, u string) string {
	t.Helper()
	return run(t, "journalctl", "-u", u, "-o", "cat", "--no-pager")
}

var (
	seenMu sync.Mutex
	seen   int // journal records of bindguard already matched or passed over
)

// waitJournal waits for a JSON record of bindguard's that match accepts,
// after those an earlier wait consumed.
func waitJournal(t *testing.T, what string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	waitFor(t, what, func() bool {
		seenMu.Lock()
		defer seenMu.Unlock()
		s := bufio.NewScanner(bytes.NewReader([]byte(journal(t, unit))))
		s.Buffer(make([]byte, 1<<20), 1<<20)
		for i := 0; s.Scan(); i++ {
			var m map[string]any
			if i < seen || json.Unmarshal(s.Bytes(), &m) != nil {
				continue
			}
			if match(m) {
				seen = i + 1
				found = m
				return true
			}
		}
		return false
	})
	return found
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within 30s; bindguard's journal:\n%s", what, tryRun("journalctl", "-u", unit, "-o", "cat", "--no-pager", "-n", "40"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// capabilities is the unit's CapabilityBoundingSet=. Without a required
// one a fresh start (no pins to take over) must fail; without
// CAP_DAC_READ_SEARCH it starts, but events cannot name the unit.
var capabilities = []struct {
	name     string
	required bool
}{
	{"CAP_BPF", true},
	{"CAP_PERFMON", true},
	{"CAP_NET_ADMIN", true},
	{"CAP_DAC_READ_SEARCH", false},
}

// stepCapabilities starts the unit from scratch with each capability of its
// bounding set removed in turn (a drop-in), and logs what happens; the ones
// the kernel requires must make the start fail. It is slow under TCG, so it
// runs only when BINDGUARD_VM_CAPS=1 (VMTEST_CAPS=1 on the host).
func stepCapabilities(t *testing.T) {
	if os.Getenv("BINDGUARD_VM_CAPS") != "1" {
		t.Skip("capability sweep not asked for (VMTEST_CAPS=1)")
	}
	const dropin = "/run/systemd/system/bindguard.service.d"
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.RemoveAll(dropin)
		systemctl(t, "daemon-reload")
	}()
	for _, c := range capabilities {
		var keep []string
		for _, o := range capabilities {
			if o.name != c.name {
				keep = append(keep, o.name)
			}
		}
		conf := "[Service]\nCapabilityBoundingSet=\nCapabilityBoundingSet=" + strings.Join(keep, " ") + "\nRestart=no\nTimeoutStartSec=30s\n"
		if err := os.WriteFile(dropin+"/caps.conf", []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		tryRun("systemctl", "stop", unit)
		run(t, "/usr/local/bin/bindguard", "detach")
		systemctl(t, "daemon-reload")
		tryRun("journalctl", "--rotate")
		since := time.Now().Format("2006-01-02 15:04:05")
		_, err := exec.Command("systemctl", "start", unit).CombinedOutput()
		last := lastError(tryRun("journalctl", "-u", unit, "-o", "cat", "--no-pager", "--since", since))
		t.Logf("without %s: start %v; %s", c.name, errOrOK(err), last)
		if c.required && err == nil {
			t.Errorf("without %s the unit started", c.name)
		}
		if res := show(t, "Result"); err != nil && res != "exit-code" {
			// "timeout": ExecStartPost= waited for a daemon already gone.
			t.Errorf("without %s: Result=%s, want exit-code", c.name, res)
		}
		if err == nil {
			// The test runs in vmtest.service: does the event say so?
			expectBind(t, undeclared, unix.EPERM)
			ev := waitJournal(t, "the event", func(m map[string]any) bool { return m["msg"] == "bind denied" && m["port"] == float64(undeclared) })
			t.Logf("without %s: the event's unit is %v", c.name, ev["unit"])
			if c.name == "CAP_DAC_READ_SEARCH" && ev["unit"] != nil {
				t.Errorf("without %s the event still names the unit: the capability is not needed", c.name)
			}
		}
		if err != nil && !strings.Contains(last, strings.ToLower(strings.TrimPrefix(c.name, "CAP_"))) && !strings.Contains(last, c.name) {
			t.Errorf("without %s: the error does not name it: %s", c.name, last)
		}
	}
	tryRun("systemctl", "stop", unit)
	os.RemoveAll(dropin)
	systemctl(t, "daemon-reload")
	systemctl(t, "start", unit)
}

func errOrOK(err error) string {
	if err == nil {
		return "ok"
	}
	return "failed (" + err.Error() + ")"
}

// lastError is the last error of bindguard's in a journal excerpt (an
// error-level record, or the "bindguard: ..." line it exits with), or the
// excerpt's last line.
func lastError(j string) string {
	lines := strings.Split(strings.TrimSpace(j), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var m map[string]any
		if json.Unmarshal([]byte(lines[i]), &m) == nil && (m["level"] == "error" || m["level"] == "fatal") {
			return fmt.Sprint(m["msg"], ": ", m["error"])
		}
		if strings.HasPrefix(lines[i], "bindguard: ") {
			return lines[i]
		}
	}
	if len(lines) == 0 {
		return ""
	}
	return lines[len(lines)-1]
}
