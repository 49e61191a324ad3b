package test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testutils"
)

// The attacker: an unprivileged uid with a subtree delegated to it the way
// systemd delegates user@UID.service.
const (
	attackUID      = 4242
	attackDelegate = "user.slice/user-4242.slice/user@4242.service"

	victimPort  = 43600 // tcp and udp, owned by unit victim.service; inside ip_local_port_range
	localPort   = 43601 // bind: localhost
	removedPort = 43602 // removed
	cycleLo     = 20000 // undeclared ports the cycler walks through
	cycleHi     = 29999

	attackEnv = "BINDGUARD_TEST_ATTACKER"

	// legitBound is the stated bound for a legitimate owner created under
	// hostile churn to come into force (from its mkdir to its first
	// allowed bind).
	legitBound = 10 * time.Second
)

const attackRegistry = `entries:
  - port: 43600
    protocol: [tcp, udp]
    process: victim
    owners: [{unit: victim.service}, {cgroup: "%CG%/victim-group"}]
  - port: 43601
    process: local-only
    bind: localhost
removed:
  - port: 43602
    process: gone
    removed: "1.0"
`

func init() {
	if mode := os.Getenv(attackEnv); mode != "" {
		os.Exit(attackerMain(mode))
	}
}

// attackerTally is what an attacker process did: binds by the errno they
// got (only EPERM is expected), cgroups it created.
type attackerTally struct {
	Owner, Address, Removed, Undeclared int // EPERM binds by the reason the test expects
	Wrong                               []string
	Mkdirs                              int
}

// attackerMain runs as uid attackUID in its home cgroup: "churn" creates
// and removes victim.service look-alikes and binds restricted ports from
// them; "cycle" binds undeclared ports one after the other. It runs until
// its standard input ends (the test's stop, or the test's exit), says
// "started" at once and prints its tally as JSON at the end.
func attackerMain(mode string) int {
	var stopped atomic.Bool
	go func() {
		io.Copy(io.Discard, os.Stdin)
		stopped.Store(true)
	}()
	done := stopped.Load
	fmt.Println(`"started"`)
	var tally attackerTally
	var err error
	switch mode {
	case "churn":
		err = churn(os.Getenv("BG_ATTACK_DIR"), os.Getenv("BG_ATTACK_HOME"), done, &tally)
	case "cycle":
		for p := cycleLo; !done(); p++ {
			if p > cycleHi {
				p = cycleLo
			}
			tally.count(&tally.Undeclared, "udp", p, "0.0.0.0")
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "attacker:", err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(tally)
	return 0
}

// count binds proto port on addr once and files the result.
func (a *attackerTally) count(n *int, proto string, port int, addr string) {
	err := bindOnceRaw(proto, port, addr)
	if errors.Is(err, unix.EPERM) {
		*n++
		return
	}
	if len(a.Wrong) < 20 {
		cg, _ := os.ReadFile("/proc/self/cgroup")
		a.Wrong = append(a.Wrong, fmt.Sprintf("%s %s:%d = %v from %s", proto, addr, port, errOrOK(err), strings.TrimSpace(string(cg))))
	}
}

func bindOnceRaw(proto string, port int, addr string) error {
	typ := unix.SOCK_STREAM
	if proto == "udp" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	sa := &unix.SockaddrInet4{Port: port}
	if addr == "127.0.0.1" {
		sa.Addr = [4]byte{127, 0, 0, 1}
	}
	return unix.Bind(fd, sa)
}

// churn creates look-alikes of the victim's unit in the delegated subtree
// root (named exactly, deep chains of them, below names of 255 bytes; and
// the cgroup owner's name),
// moves itself in, binds the restricted ports, moves home and removes
// them; between, it creates and removes bare look-alikes.
func churn(root, home string, done func() bool, t *attackerTally) error {
	long := strings.Repeat("l", 255)
	shapes := [][]string{
		{"victim.service"},
		{"app.slice", "victim.service", "victim.service", "victim.service", "victim.service", "victim.service", "victim.service", "victim.service"},
		{long, long[:254] + "x", "victim.service"},
		{"victim-group"},                   // the name of the cgroup owner, in the wrong place
		{"system.slice", "victim.service"}, // the system's layout, inside the delegated subtree
	}
	for i := 0; !done(); i++ {
		chain := shapes[i%len(shapes)]
		leaf := filepath.Join(append([]string{root}, chain...)...)
		if err := os.MkdirAll(leaf, 0o755); err != nil {
			return err
		}
		t.Mkdirs += len(chain)
		if err := os.WriteFile(filepath.Join(leaf, "cgroup.procs"), []byte("0"), 0); err != nil {
			return err
		}
		t.count(&t.Owner, "tcp", victimPort, "0.0.0.0")
		t.count(&t.Owner, "udp", victimPort, "0.0.0.0")
		t.count(&t.Address, "tcp", localPort, "0.0.0.0")
		t.count(&t.Removed, "tcp", removedPort, "0.0.0.0")
		if err := os.WriteFile(filepath.Join(home, "cgroup.procs"), []byte("0"), 0); err != nil {
			return err
		}
		for dir := leaf; dir != root; dir = filepath.Dir(dir) {
			if err := os.Remove(dir); err != nil {
				return err
			}
		}
		for j := 0; j < 10; j++ {
			bare := filepath.Join(root, "victim.service")
			if err := os.Mkdir(bare, 0o755); err != nil {
				return err
			}
			t.Mkdirs++
			if err := os.Remove(bare); err != nil {
				return err
			}
		}
	}
	return nil
}

// attacker is one running attacker process.
type attacker struct {
	cmd  *exec.Cmd
	in   io.WriteCloser // closed: the attacker stops and prints its tally
	out  io.ReadCloser
	done chan struct{}
	res  attackerTally
	err  error
}

// attackerExecutable copies the test binary where uid attackUID can run it
// (go test builds it in a directory only root may enter).
func attackerExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "bindguard-attacker-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "attacker")
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// startAttacker runs mode as uid attackUID, placed in home from its first
// instruction, for secs seconds (0: until killed), and waits for it to start.
func startAttacker(t *testing.T, exe, mode, root, home string) *attacker {
	t.Helper()
	cg, err := os.Open(home)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), attackEnv+"="+mode, "BG_ATTACK_DIR="+root, "BG_ATTACK_HOME="+home,
		"GORACE=atexit_sleep_ms=0")
	cmd.Dir = "/"
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: attackUID, Gid: attackUID, NoSetGroups: true}}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start attacker %s: %v", mode, err)
	}
	a := &attacker{cmd: cmd, in: in, out: out, done: make(chan struct{})}
	started := make(chan struct{})
	go func() {
		defer close(a.done)
		dec := json.NewDecoder(out)
		var s string
		if a.err = dec.Decode(&s); a.err == nil && s == "started" {
			close(started)
		}
		a.err = dec.Decode(&a.res)
		if werr := cmd.Wait(); werr != nil && a.err == nil {
			a.err = werr
		}
	}()
	t.Cleanup(func() { a.kill() })
	select {
	case <-started:
	case <-a.done:
		t.Fatalf("attacker %s did not start: %v", mode, a.err)
	}
	return a
}

func (a *attacker) running() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

func (a *attacker) kill() {
	a.cmd.Process.Kill()
	<-a.done
}

// wait stops the attacker (it ends its standard input) and returns its tally.
func (a *attacker) wait(t *testing.T, name string) attackerTally {
	t.Helper()
	a.in.Close()
	select {
	case <-a.done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("attacker %s still running two minutes after it was told to stop", name)
	}
	if a.err != nil {
		t.Fatalf("attacker %s: %v", name, a.err)
	}
	for _, w := range a.res.Wrong {
		t.Errorf("attacker %s: bind not refused: %s", name, w)
	}
	return a.res
}

// delegate makes dir (and its parents below the attach point) a cgroup
// delegated to uid attackUID, as systemd delegates user@UID.service.
func delegate(t *testing.T, e *env, rel string) string {
	t.Helper()
	dir := e.child(rel)
	for _, f := range []string{"", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} {
		if err := os.Chown(filepath.Join(dir, f), attackUID, attackUID); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUnprivilegedAttack: uid 4242 with a delegated subtree attacks a
// daemon in enforce mode for a few seconds. It creates cgroups named after
// the victim's unit (exactly, in deep chains, below 255-byte names,
// thousands of mkdir/rmdir) and binds the victim's, the localhost-only and
// the removed ports from them; it cycles through undeclared ports; it tries
// IP_LOCAL_PORT_RANGE autobind onto the victim's port. Every one of those
// binds must fail with EPERM, the kernel counters must count each exactly,
// and the events of each of its cgroups must stay within the per-cgroup
// bucket (BG_EVENT_BURST, then BG_EVENTS_PER_SEC a second).
//
// Meanwhile the legitimate victim.service appears late: it must be in force
// within legitBound (10 s) of its mkdir, and a cgroup created below it
// inherits at once. Last, SIGTERM while the churn and the cycling run: the
// daemon must exit while the attack still runs (its own bound is 1 s; the
// test logs what it took).
func TestUnprivilegedAttack(t *testing.T) {
	e := newEnv(t)
	e.writeRegistry(attackRegistry)
	e.child("system.slice")
	// The attach cgroup is made 0700; systemd's slices are 0755, so that a
	// user can reach the subtree delegated to it.
	if err := os.Chmod(e.cgAbs, 0o755); err != nil {
		t.Fatal(err)
	}
	// The production default: the harness's --event-interval 0 reports
	// every violation and turns the per-cgroup bucket off with the rest.
	d := e.start("enforce", "--event-interval", "10s")
	exe := attackerExecutable(t)
	root := delegate(t, e, attackDelegate)
	homes := map[string]string{}
	for _, h := range []string{"churn-home", "cycler", "autobind", "autobind/victim.service"} {
		homes[h] = delegate(t, e, attackDelegate+"/"+h)
	}
	// The attack's length is a volume, not a bound: every part of it runs
	// until the test stops it, after the owner step and at least this long.
	least := 4 * time.Second
	if testing.Short() { // the VM runner: software emulation, same paths
		least = 1500 * time.Millisecond
	}

	start := time.Now()
	ch := startAttacker(t, exe, "churn", root, homes["churn-home"])
	cy := startAttacker(t, exe, "cycle", root, homes["cycler"])
	uid := uint32(attackUID)
	stopAuto := make(chan struct{})
	auto := autobindUntil(t, testutils.StartBinder(t, homes["autobind/victim.service"], testutils.BinderOptions{UID: &uid}), stopAuto)
	var stopOnce sync.Once
	stopAutobinds := func() { stopOnce.Do(func() { close(stopAuto) }) }
	// Before the binder stops (cleanups run last first), also when the
	// test fails early: the loop then ends without reporting its binder
	// gone.
	t.Cleanup(func() {
		stopAutobinds()
		<-auto
	})
	time.Sleep(least / 3) // pacing: the owner comes late, into the churn
	legitDenied := legitOwnerLate(t, e, d)
	if !ch.running() {
		t.Error("the churn (which runs until stopped) ended before the legitimate owner was in force: the bound was not measured under churn")
	}
	time.Sleep(least - time.Since(start)) // pacing: at least the attack's volume
	stopAutobinds()
	autobinds := <-auto
	churned, cycled := ch.wait(t, "churn"), cy.wait(t, "cycle")
	attackDur := time.Since(start)
	t.Logf("attack: %v, %d cgroups created and removed, %d restricted binds and %d undeclared binds refused, %d autobinds refused",
		attackDur.Round(time.Millisecond), churned.Mkdirs, churned.Owner+churned.Address+churned.Removed, cycled.Undeclared, autobinds.refused)
	if churned.Mkdirs == 0 || churned.Owner == 0 || cycled.Undeclared == 0 {
		t.Errorf("the attack made no attempt of some kind (%d mkdirs, %d owner binds, %d undeclared binds): it proves nothing",
			churned.Mkdirs, churned.Owner, cycled.Undeclared)
	}
	switch {
	case autobinds.unsupported:
		t.Logf("kernel %s has no IP_LOCAL_PORT_RANGE (6.3): no autobind aimed at the victim's port", kernelRelease())
	case autobinds.refused == 0:
		t.Errorf("no autobind onto the victim's port was refused (%d found it held by another socket): that attack was not made", autobinds.busy)
	}

	checkCounters(t, e, map[string]int{
		"owner": churned.Owner + legitDenied, "address": churned.Address, "removed": churned.Removed,
		"undeclared": cycled.Undeclared, "autobind": autobinds.refused,
	})
	checkAttackEvents(t, d, attackDur)
	if n := membershipEntries(t, e.pinPath); n >= 0 {
		t.Logf("memberships in the hash map: %d entries after the churn", n)
	} else {
		t.Log("memberships in cgroup storage")
	}
	stopUnderAttack(t, d, exe, root, homes)
}

// autobinds is what autobindUntil saw.
type autobinds struct {
	refused, busy int  // EPERM; EADDRINUSE (another socket held the port)
	unsupported   bool // the kernel has no IP_LOCAL_PORT_RANGE (before 6.3)
}

// autobindUntil asks b for the victim's port by autobind until stop is
// closed, and then sends what it saw.
func autobindUntil(t *testing.T, b *testutils.Binder, stop <-chan struct{}) <-chan autobinds {
	res := make(chan autobinds, 1)
	go func() {
		var a autobinds
		defer func() { res <- a; close(res) }() // a second receive returns at once
		for {
			select {
			case <-stop:
				if a.busy > 0 {
					t.Logf("%d autobinds found the victim's port held by another socket; %d were refused", a.busy, a.refused)
				}
				return
			default:
			}
			p, err := b.Autobind("tcp", "4", any4, victimPort)
			switch {
			case errors.Is(err, unix.EPERM):
				a.refused++
			case errors.Is(err, unix.EADDRINUSE):
				// Another socket on the machine holds the port (it lies in
				// the ephemeral range): the kernel found nothing to give,
				// so no post_bind ran and nothing was counted.
				a.busy++
			case errors.Is(err, unix.ENOPROTOOPT):
				a.unsupported = true
				<-stop
				return
			case err == nil:
				t.Errorf("the attacker's autobind got port %d", p)
			default:
				t.Errorf("the attacker's autobind: %v", err)
			}
		}
	}()
	return res
}

// legitOwnerLate creates system.slice/victim.service under the churn,
// measures the time from its mkdir to the first bind allowed from it, and
// checks that a cgroup created below it inherits at once. It returns the
// binds refused before the owner was in force.
func legitOwnerLate(t *testing.T, e *env, d *daemon) int {
	t.Helper()
	b := e.binder("legit-home")
	dir := filepath.Join(e.cgAbs, "system.slice", "victim.service")
	mkdir := time.Now()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.Move(dir); err != nil {
		t.Fatal(err)
	}
	took, denied := bindUntilAllowed(t, d, b, victimPort, mkdir, "the legitimate owner")
	t.Logf("legitimate owner in force %v after its mkdir, under churn (%d binds refused before)", took, denied)
	below := filepath.Join(dir, "worker", "x")
	if err := os.MkdirAll(below, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := b.Move(below); err != nil {
		t.Fatal(err)
	}
	for _, proto := range []string{"tcp", "udp"} {
		if err := b.Bind(proto, "4", any4, victimPort); err != nil {
			t.Errorf("first %s bind from a cgroup created below the owner: %v", proto, err)
		}
	}
	return denied
}

// checkCounters compares the kernel's denied counters with what the test's
// processes saw refused, reason by reason.
func checkCounters(t *testing.T, e *env, want map[string]int) {
	t.Helper()
	out, code := bindguard(t, "status", "--pin-path", e.pinPath, "-o", "json")
	if code != 0 {
		t.Fatalf("status: exit %d\n%s", code, out)
	}
	var st struct {
		Audited map[string]uint64 `json:"audited"`
		Denied  map[string]uint64 `json:"denied"`
		Dropped uint64            `json:"eventsDropped"`
		Folded  uint64            `json:"eventsSuppressed"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	for reason, n := range want {
		if st.Denied[reason] != uint64(n) {
			t.Errorf("denied[%s] = %d, the attack saw %d refused", reason, st.Denied[reason], n)
		}
	}
	for reason, n := range st.Audited {
		if n != 0 {
			t.Errorf("audited[%s] = %d in enforce mode", reason, n)
		}
	}
	t.Logf("kernel counters: denied %v; events dropped %d, suppressed %d", st.Denied, st.Dropped, st.Folded)
}

// checkAttackEvents counts the events of the attacker's binds (uid 4242)
// per cgroup: each cgroup's must stay within its bucket, BG_EVENT_BURST and
// then BG_EVENTS_PER_SEC a second for as long as the attack ran, plus one
// second of slack. No event may name the victim's unit.
func checkAttackEvents(t *testing.T, d *daemon, attackDur time.Duration) {
	t.Helper()
	const cyclerRel = "/user@4242.service/cycler"
	d.waitLog("an event of the cycler", func(m map[string]any) bool {
		c, _ := m["cgroup"].(string)
		return m["reason"] == "undeclared" && strings.HasSuffix(c, cyclerRel)
	})
	d.waitAccounted() // every event the ring holds is logged: the counts below are final
	limit := 32 + int(16*attackDur.Seconds()) + 16
	perCgroup := map[float64]int{}
	total, most, cyclerEvents, lookAlike := 0, 0, 0, 0
	for _, ev := range d.events() {
		if ev["uid"] != float64(attackUID) {
			continue
		}
		total++
		id, _ := ev["cgroup_id"].(float64)
		perCgroup[id]++
		most = max(most, perCgroup[id])
		if c, _ := ev["cgroup"].(string); strings.HasSuffix(c, cyclerRel) {
			cyclerEvents++
		}
		if c, _ := ev["cgroup"].(string); strings.HasSuffix(c, "/victim.service") {
			lookAlike++
		}
		if u, ok := ev["unit"]; ok && u == "victim.service" {
			t.Errorf("an attacker's event names the victim's unit: %v", ev)
		}
	}
	for id, n := range perCgroup {
		if n > limit {
			t.Errorf("cgroup %d logged %d events in %v, over its bucket of %d", uint64(id), n, attackDur, limit)
		}
	}
	if cyclerEvents == 0 || lookAlike == 0 {
		t.Errorf("events logged: %d of the port cycler, %d of a look-alike still present; want some of each", cyclerEvents, lookAlike)
	}
	t.Logf("attacker's events: %d in %d cgroups, at most %d per cgroup (bound %d), %d from the port cycler, %d from look-alikes, none naming the unit",
		total, len(perCgroup), most, limit, cyclerEvents, lookAlike)
}

// stopUnderAttack restarts the churn and the cycling without end, sends
// SIGTERM and checks that the daemon exits while both still run.
func stopUnderAttack(t *testing.T, d *daemon, exe, root string, homes map[string]string) {
	t.Helper()
	ch := startAttacker(t, exe, "churn", root, homes["churn-home"])
	cy := startAttacker(t, exe, "cycle", root, homes["cycler"])
	sent := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(2 * time.Minute):
		t.Fatal("the daemon has not exited two minutes after SIGTERM under attack")
	}
	took := time.Since(sent)
	if !ch.running() || !cy.running() {
		t.Errorf("the attack ended before the daemon's exit was seen (churn running %v, cycler running %v): the test proves nothing",
			ch.running(), cy.running())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code %d after SIGTERM under attack:\n%s", code, tail(d.output(), 20))
	}
	// The process exit includes the race detector's wait at exit; the
	// daemon's own shutdown ends with its last log line.
	var last time.Time
	for _, m := range d.logs() {
		if ts, err := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"])); err == nil && m["reason"] == nil {
			last = ts
		}
	}
	t.Logf("under attack, the daemon logged its last line %v after SIGTERM and its process was reaped after %v",
		last.Sub(sent).Round(time.Millisecond), took.Round(time.Millisecond))
	ch.kill()
	cy.kill()
}
