package test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testutils"
)

// Ports of the busy-node test. The restricted one lies inside the default
// ip_local_port_range (32768-60999): IP_LOCAL_PORT_RANGE can only narrow it.
const (
	busyNginx      = 45311
	busyRedis      = 45312
	busyBound      = 45313
	busyUndeclared = 45314
	busyRestricted = 45315
)

const busyRegistry = `entries:
  - {port: 45311, process: nginx, bind: localhost, owners: [{cgroup: %CG%/nginx.service}]}
  - {port: 45312, process: redis, bind: localhost, owners: [{cgroup: %CG%/redis.service}]}
  - {port: 45313, process: bound-not-listening}
  - {port: 45315, process: restricted, owners: [{cgroup: %CG%/owner.service}]}
`

// startDaemonProcess starts a server in the cgroup directory cgroupAbs and
// stops it (SIGTERM, then SIGKILL) when the test ends.
func startDaemonProcess(t *testing.T, cgroupAbs string, name string, args ...string) *exec.Cmd {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		testutils.Need(t, fmt.Sprintf("%s not installed (scripts/ci-setup.sh installs it): %v", name, err))
	}
	cg, err := os.Open(cgroupAbs)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		testutils.Terminate(cmd.Process, done, 5*time.Second)
	})
	return cmd
}

// waitListening waits until something listens on 127.0.0.1:port.
func waitListening(t *testing.T, port int) {
	t.Helper()
	for i := 0; i < 500; i++ {
		b, _ := os.ReadFile("/proc/net/tcp")
		if strings.Contains(string(b), fmt.Sprintf("0100007F:%04X 00000000:0000 0A", port)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on 127.0.0.1:%d", port)
}

// startNginx runs Debian's nginx on 127.0.0.1:port with its own config and
// temporary files in dir.
func startNginx(t *testing.T, cgroupAbs, dir string, port int) {
	t.Helper()
	conf := filepath.Join(dir, "nginx.conf")
	body := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  server { listen 127.0.0.1:%[2]d; return 204; }
}
`, dir, port)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	startDaemonProcess(t, cgroupAbs, "nginx", "-e", filepath.Join(dir, "error.log"), "-p", dir, "-c", conf)
	waitListening(t, port)
}

// startHTTPServer0 runs python's http.server on port 0 and returns the port
// it says it serves on.
func startHTTPServer0(t *testing.T, cgroupAbs string) int {
	t.Helper()
	cg, err := os.Open(cgroupAbs)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command("/usr/bin/python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", t.TempDir())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		testutils.Need(t, fmt.Sprintf("python3 http.server (Debian's /usr/bin/python3; scripts/ci-setup.sh installs it): %v", err))
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	m := regexp.MustCompile(`port (\d+)`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("http.server said %q (%v)", line, err)
	}
	port, _ := strconv.Atoi(m[1])
	return port
}

// busyNode is the servers and sockets of TestScanBusyNode.
type busyNode struct {
	// ephemeral names the kernel-chosen ports by what made them.
	ephemeral map[uint16]string
	bound     holderReply
}

// startBusyNode starts nginx, redis and http.server on port 0, and a holder
// with a listen-without-bind, a UDP sendto autobind and a TCP socket bound
// but not listening, each in its own cgroup below e's.
func startBusyNode(t *testing.T, e *env) busyNode {
	t.Helper()
	startNginx(t, e.child("nginx.service"), t.TempDir(), busyNginx)
	redisDir := t.TempDir()
	startDaemonProcess(t, e.child("redis.service"), "redis-server", "--port", strconv.Itoa(busyRedis),
		"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", redisDir, "--daemonize", "no",
		"--logfile", filepath.Join(redisDir, "redis.log"))
	waitListening(t, busyRedis)
	httpPort := startHTTPServer0(t, e.child("py"))
	misc := startSockHolder(t, e.child("misc"), -1)
	listen0 := misc.must("listen0 tcp 4 - 0")
	sendto := misc.must("sendto udp 4 - 0")
	bound := misc.must(fmt.Sprintf("bound tcp 4 127.0.0.1 %d", busyBound))
	return busyNode{ephemeral: map[uint16]string{uint16(httpPort): "http.server", listen0.Port: "listen0", sendto.Port: "sendto"}, bound: bound}
}

// check runs scan (the attach cgroup given as a path of the cgroup2 file
// system) and wants exit 0, every socket listed and judged as made.
func (b busyNode) check(t *testing.T, e *env) {
	t.Helper()
	got, code, stderr := scanJSON(t, "--registry", e.registry, "--cgroup", e.cgAbs)
	t.Logf("scan: path %s, %d sockets, summary %+v", got.Path, len(got.Sockets), got.Summary)
	if code != 0 || got.Path != "iterators" {
		t.Fatalf("exit %d, path %q (%s), want 0 from the iterators: %+v %s", code, got.Path, got.PathWhy, got.Sockets, stderr)
	}
	seen := map[string]bool{}
	for _, s := range got.Sockets {
		switch {
		case b.ephemeral[s.Port] != "":
			seen[b.ephemeral[s.Port]] = true
			if s.Verdict != "ephemeral" || s.Bound != "kernel" || s.Reason != "" {
				t.Errorf("%s socket %+v: want ephemeral, bound by the kernel", b.ephemeral[s.Port], s)
			}
		case s.Port == busyNginx || s.Port == busyRedis:
			seen[s.Comm] = true
			if s.Verdict != "allow" || s.Bound != "explicit" {
				t.Errorf("%s socket %+v: want allowed, explicit", s.Comm, s)
			}
		case s.Inode == b.bound.Inode:
			seen["bound"] = true
			if s.State != "bound" || s.Verdict != "allow" || s.Bound != "explicit" {
				t.Errorf("bound socket %+v: want state bound, allowed, explicit", s)
			}
		default:
			t.Errorf("unexpected socket %+v", s)
		}
	}
	for _, w := range []string{"http.server", "listen0", "sendto", "nginx", "redis-server", "bound"} {
		if !seen[w] {
			t.Errorf("%s not listed: %+v", w, got.Sockets)
		}
	}
}

// TestScanBusyNode runs real servers and the ways a port gets bound: with a
// registry that declares the explicit ones, scan exits 0, calls the
// kernel-chosen ones ephemeral and lists the TCP socket bound but not
// listening. Then one undeclared explicit listener and one socket autobound
// on a restricted port are planted: exit 3, naming exactly those two.
func TestScanBusyNode(t *testing.T) {
	e := newEnv(t)
	e.writeRegistry(busyRegistry)
	startBusyNode(t, e).check(t, e)

	planted := startSockHolder(t, e.child("planted"), -1)
	undeclared := planted.must(fmt.Sprintf("bind tcp 4 0.0.0.0 %d", busyUndeclared))
	want := map[uint64]string{undeclared.Inode: "undeclared"}
	autobound := planted.do(fmt.Sprintf("listen0 tcp 4 - 0 %d %d", busyRestricted, busyRestricted))
	switch {
	case strings.Contains(autobound.Err, "Protocol not available"):
		t.Logf("no IP_LOCAL_PORT_RANGE (Linux 6.3) to plant an autobind on a restricted port: %s", autobound.Err)
	case autobound.Err != "" || autobound.Port != busyRestricted:
		t.Fatalf("IP_LOCAL_PORT_RANGE [%d, %d] gave port %d (%s): is %d reserved?", busyRestricted, busyRestricted, autobound.Port, autobound.Err, busyRestricted)
	default:
		want[autobound.Inode] = "autobind"
	}
	got, code, _ := scanJSON(t, "--registry", e.registry, "--cgroup", e.cgRel)
	violations := map[uint64]string{}
	for _, s := range got.Sockets {
		if s.Reason != "" {
			violations[s.Inode] = s.Reason
		}
	}
	if code != 3 || fmt.Sprint(violations) != fmt.Sprint(want) {
		t.Errorf("planted: exit %d, violations %v, want 3 and %v: %+v", code, violations, want, got.Sockets)
	}
	out, _, _ := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel)
	t.Logf("scan table:\n%s", out)
	checkProcfsPath(t, e)
}

// checkProcfsPath runs the procfs path, as where the iterators are missing:
// it says so, and still finds the servers (judged by their holders' cgroups).
func checkProcfsPath(t *testing.T, e *env) {
	t.Helper()
	got, code, _ := scanJSON(t, "--registry", e.registry, "--cgroup", e.cgRel, "--procfs")
	servers := 0
	for _, s := range got.Sockets {
		if (s.Port == busyNginx || s.Port == busyRedis) && s.Verdict == "allow" && s.Bound == "unknown" {
			servers++
		}
	}
	if got.Path != "procfs" || got.PathWhy != "asked for" || servers != 2 || code != 3 {
		t.Errorf("--procfs: path %q (%q), %d servers allowed, exit %d: want procfs, 2, 3: %+v", got.Path, got.PathWhy, servers, code, got.Sockets)
	}
	out, _, _ := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel, "--procfs")
	if !strings.HasPrefix(out, "sockets from: /proc/net (asked for)") {
		t.Errorf("--procfs table does not say where its sockets came from:\n%s", out)
	}
}

// TestScanMovedProcess: a socket is judged with its own cgroup (the one whose
// programs ran at bind time), not the one its holder moved to since; scan
// shows both.
func TestScanMovedProcess(t *testing.T) {
	e := newEnv(t)
	e.writeRegistry("entries:\n  - {port: 45321, process: owned, owners: [{cgroup: %CG%/owner}]}\n")
	owner, elsewhere := e.child("owner"), e.child("elsewhere")
	h := startSockHolder(t, owner, -1)
	r := h.must("bind tcp 4 0.0.0.0 45321")
	if err := os.WriteFile(filepath.Join(elsewhere, "cgroup.procs"), []byte(strconv.Itoa(h.PID)), 0); err != nil {
		t.Fatal(err)
	}
	// --cgroup relative to the cgroup2 root, without the leading slash.
	got, code, stderr := scanJSON(t, "--registry", e.registry, "--cgroup", strings.TrimPrefix(e.cgRel, "/"))
	if code != 0 || len(got.Sockets) != 1 {
		t.Fatalf("exit %d, %d sockets, want 0 and 1: %+v %s", code, len(got.Sockets), got.Sockets, stderr)
	}
	s := got.Sockets[0]
	if s.Inode != r.Inode || s.Cgroup != e.cgRel+"/owner" || s.ProcCg != e.cgRel+"/elsewhere" || s.Verdict != "allow" {
		t.Errorf("socket %+v: want cgroup %s/owner (allowed), process cgroup %s/elsewhere", s, e.cgRel, e.cgRel)
	}
	out, _, _ := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel)
	if !strings.Contains(out, e.cgRel+"/owner (process in "+e.cgRel+"/elsewhere)") {
		t.Errorf("the table does not show both cgroups:\n%s", out)
	}
	// The procfs path can only judge the holder's cgroup now: an owner violation.
	if got, code, _ := scanJSON(t, "--registry", e.registry, "--cgroup", e.cgRel, "--procfs"); code != 3 || len(got.Sockets) != 1 || got.Sockets[0].Reason != "owner" {
		t.Errorf("--procfs: exit %d, %+v: want 3 with an owner violation", code, got.Sockets)
	}
}

// TestScanOtherNetns: sockets of another network namespace are never
// listed, not even a TCP socket bound but not listening, which only the
// task_file iterator (it walks every process's files) can see.
func TestScanOtherNetns(t *testing.T) {
	e := newEnv(t)
	e.writeRegistry("entries: []\n")
	pod := startSockHolderIn(t, e.child("pod"), -1, syscall.CLONE_NEWNET)
	pod.must("bound tcp 4 0.0.0.0 45331")
	pod.must("bind tcp 4 0.0.0.0 45332")
	host := startSockHolder(t, e.child("host"), -1)
	bound := host.must("bound tcp 4 0.0.0.0 45333")
	got, code, stderr := scanJSON(t, "--registry", e.registry, "--cgroup", e.cgRel)
	if code != 3 || len(got.Sockets) != 1 || got.Sockets[0].Inode != bound.Inode || got.Sockets[0].Reason != "undeclared" {
		t.Errorf("exit %d, sockets %+v: want 3 and only the host's bound socket, undeclared %s", code, got.Sockets, stderr)
	}
}

// selfSocket opens a socket in this process the way how says and returns
// its inode: "explicit" binds port 45341 and listens, "bind0" binds port 0
// and listens, "listen0" listens without a bind, "bound" binds 45342
// without listening, "sendto" sends a UDP datagram without a bind.
func selfSocket(t *testing.T, how string) uint64 {
	t.Helper()
	typ := unix.SOCK_STREAM
	if how == "sendto" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	loop := [4]byte{127, 0, 0, 1}
	switch how {
	case "explicit":
		err = errors.Join(unix.Bind(fd, &unix.SockaddrInet4{Addr: loop, Port: 45341}), unix.Listen(fd, 1))
	case "bind0":
		err = errors.Join(unix.Bind(fd, &unix.SockaddrInet4{Addr: loop}), unix.Listen(fd, 1))
	case "listen0":
		err = unix.Listen(fd, 1)
	case "bound":
		err = unix.Bind(fd, &unix.SockaddrInet4{Addr: loop, Port: 45342})
	case "sendto":
		err = unix.Sendto(fd, []byte("x"), 0, &unix.SockaddrInet4{Addr: loop, Port: 9})
	}
	if err != nil {
		t.Fatalf("%s: %v", how, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestScanSelfSockets needs nothing but the test binary (it runs in the VM
// suite): who chose each port of this process's sockets, and their state.
func TestScanSelfSockets(t *testing.T) {
	e := newEnv(t)
	e.writeRegistry("entries:\n  - {port: 45341, process: explicit}\n  - {port: 45342, process: bound}\n")
	type want struct{ state, bound, verdict string }
	wants := map[uint64]want{}
	for how, w := range map[string]want{
		"explicit": {"listen", "explicit", "allow"}, "bind0": {"listen", "kernel", "ephemeral"},
		"listen0": {"listen", "kernel", "ephemeral"}, "bound": {"bound", "explicit", "allow"},
		"sendto": {"unconnected", "kernel", "ephemeral"},
	} {
		wants[selfSocket(t, how)] = w
	}
	got, _, stderr := scanJSON(t, "--registry", e.registry)
	if got.Path != "iterators" && kernelBefore(5, 15) {
		t.Skipf("kernel %s has no socket iterators with the fields scan reads (5.15): scan used %s (%s)", kernelRelease(), got.Path, got.PathWhy)
	}
	if got.Path != "iterators" {
		t.Fatalf("path %q (%s), want iterators: %s", got.Path, got.PathWhy, stderr)
	}
	for _, s := range got.Sockets {
		w, ok := wants[s.Inode]
		if !ok {
			continue
		}
		delete(wants, s.Inode)
		if g := (want{s.State, s.Bound, s.Verdict}); g != w || s.PID != os.Getpid() {
			t.Errorf("socket %+v: got %+v, want %+v, pid %d", s, g, w, os.Getpid())
		}
	}
	if len(wants) > 0 {
		t.Errorf("not listed: %v", wants)
	}
}
