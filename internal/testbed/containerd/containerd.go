package containerd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bindguard/bindguard/internal/testutils"
)

// lockPath serialises test containerds on the machine.
const lockPath = "/run/lock/bindguard-testbed-containerd.lock"

// Containerd is one test containerd.
type Containerd struct {
	tb testing.TB
	// Dir holds config.toml, root/, state/, the socket and containerd.log.
	Dir    string
	Socket string
	// CgroupRel is the test's cgroup (relative to the cgroup2 root) below
	// which pods live, as kubelet's --cgroup-root: CgroupRel/kubepods/...
	CgroupRel string
	cgroupAbs string
	// Runtime is the CRI runtime service client.
	Runtime runtimeapi.RuntimeServiceClient
	conn    *grpc.ClientConn
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start starts containerd for the test, with pods below the test cgroup
// cgroupAbs (from testutils.Cgroup), imports the images, and registers a
// cleanup that removes every pod, stops containerd, kills leftover shims,
// unmounts what it mounted and removes runc's pod cgroups. The caller must
// have checked privileges (testutils.Privileged). Register Start after
// testutils.Cgroup, so that this cleanup runs first.
func Start(tb testing.TB, cgroupAbs, cgroupRel string) *Containerd {
	tb.Helper()
	for _, bin := range []string{"containerd", "ctr", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Fatalf("testbed: %s not installed (scripts/ci-setup.sh installs Debian's containerd and runc): %v", bin, err)
		}
	}
	c := &Containerd{tb: tb, CgroupRel: "/" + strings.Trim(cgroupRel, "/"), cgroupAbs: cgroupAbs}
	c.takeLock()
	reapStale()
	dir, err := os.MkdirTemp("", dirPrefix) // short: a unix socket path has 108 bytes
	if err != nil {
		tb.Fatal(err)
	}
	c.Dir, c.Socket = dir, filepath.Join(dir, "containerd.sock")
	tb.Cleanup(c.cleanup)
	if err := c.writeConfig(); err != nil {
		tb.Fatal(err)
	}
	if err := c.start(); err != nil {
		tb.Fatal(err)
	}
	if err := c.importImages(); err != nil {
		tb.Fatal(err)
	}
	return c
}

const dirPrefix = "bg-ctd-"

// takeLock takes the machine's test containerd lock and registers its
// release at once, before anything that can fail: registered before
// c.cleanup, the release runs after it (cleanups run last first), so the
// lock is held until what this containerd left is gone.
func (c *Containerd) takeLock() {
	if err := os.MkdirAll(filepath.Dir(lockPath), 0o755); err != nil {
		c.tb.Fatalf("testbed: lock: %v", err)
	}
	f, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		c.tb.Fatalf("testbed: lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		c.tb.Fatalf("testbed: lock %s: %v", lockPath, err)
	}
	c.tb.Cleanup(func() { f.Close() }) // releases the flock
}

func (c *Containerd) writeConfig() error {
	for _, d := range []string{"root", "state", "cni/bin", "cni/conf", "logs"} {
		if err := os.MkdirAll(filepath.Join(c.Dir, d), 0o700); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %[3]q
[ttrpc]
  address = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
`, filepath.Join(c.Dir, "root"), filepath.Join(c.Dir, "state"), c.Socket, c.Socket+".ttrpc",
		PauseImage, filepath.Join(c.Dir, "cni/bin"), filepath.Join(c.Dir, "cni/conf"))
	return os.WriteFile(filepath.Join(c.Dir, "config.toml"), []byte(cfg), 0o600)
}

// start runs containerd and waits until CRI answers.
func (c *Containerd) start() error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command("containerd", "--config", filepath.Join(c.Dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Dies with the test binary; the shims it started live on, as in
	// production, and the cleanup kills them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("testbed: start containerd: %w", err)
	}
	c.cmd, c.exited = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(c.exited)
	if c.conn == nil {
		conn, err := grpc.NewClient("unix://"+c.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		c.conn, c.Runtime = conn, runtimeapi.NewRuntimeServiceClient(conn)
	}
	return c.waitReady()
}

func (c *Containerd) waitReady() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Runtime.Version(ctx, &runtimeapi.VersionRequest{}, grpc.WaitForReady(true))
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("testbed: containerd exited at start: %s", c.logTail())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testbed: containerd not answering at %s: %w; %s", c.Socket, err, c.logTail())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *Containerd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// Kill kills containerd with SIGKILL, as a crash would; its shims and
// containers keep running.
func (c *Containerd) Kill() {
	c.tb.Helper()
	if c.cmd == nil {
		return
	}
	c.cmd.Process.Kill()
	<-c.exited
	c.cmd = nil
}

// Stop stops containerd with SIGTERM (SIGKILL after 10 s).
func (c *Containerd) Stop() {
	if c.cmd == nil {
		return
	}
	testutils.Terminate(c.cmd.Process, c.exited, 10*time.Second)
	c.cmd = nil
}

// Restart starts containerd again with the same config, root and state;
// it finds its pods and shims again.
func (c *Containerd) Restart() {
	c.tb.Helper()
	if c.cmd != nil {
		c.tb.Fatal("testbed: restart of a running containerd")
	}
	if err := c.start(); err != nil {
		c.tb.Fatal(err)
	}
}

// Running reports whether containerd runs.
func (c *Containerd) Running() bool { return c.cmd != nil }

func (c *Containerd) cleanup() {
	var errs []error
	if c.cmd == nil && c.conn != nil {
		if err := c.start(); err != nil { // to remove what it made
			errs = append(errs, err)
		}
	}
	if c.cmd != nil {
		errs = append(errs, c.removeAllPods())
	}
	c.Stop()
	if c.conn != nil {
		c.conn.Close()
	}
	c.killShims()
	errs = append(errs, unmountBelow(c.Dir), removeV1Cgroups(c.CgroupRel))
	if err := os.RemoveAll(c.Dir); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		c.tb.Errorf("testbed cleanup: %v", err)
	}
}

// reapStale removes what a test binary killed before its cleanup left:
// shims of earlier test containerds and the mounts in their directories.
// Called under the lock, so no other test containerd is running.
func reapStale() {
	stale := filepath.Join(os.TempDir(), dirPrefix)
	killShims(stale)
	dirs, _ := filepath.Glob(stale + "*")
	for _, d := range dirs {
		if unmountBelow(d) == nil {
			os.RemoveAll(d)
		}
	}
}

// killShims kills the runc shims of the containerd whose socket starts
// with sock (they outlive it); what runs in them dies with them or with
// the test cgroup.
func (c *Containerd) killShims() { killShims(c.Socket) }

func killShims(sock string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(b), "containerd-shim") || !strings.Contains(string(b), sock) {
			continue
		}
		var pid int
		fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
		if pid > 0 {
			unix.Kill(pid, unix.SIGKILL)
		}
	}
}

// unmountBelow lazily unmounts every mount point below dir, deepest first
// (rootfs overlays, sandbox shm).
func unmountBelow(dir string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mnts []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mnts = append(mnts, fields[4])
		}
	}
	var errs []error
	for i := len(mnts) - 1; i >= 0; i-- {
		if err := unix.Unmount(mnts[i], unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mnts[i], err))
		}
	}
	return errors.Join(errs...)
}
