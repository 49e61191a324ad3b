package test

import (
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

const floodEnv = "BINDGUARD_TEST_FLOOD"

// maybeFlood turns the process into a flooder when started by startFlood:
// it binds one TCP port on 0.0.0.0 in a loop until it is killed, so that
// every bind is a violation and an event.
func maybeFlood() {
	port, err := strconv.Atoi(os.Getenv(floodEnv))
	if err != nil {
		return
	}
	sa := &unix.SockaddrInet4{Port: port}
	for {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			os.Exit(1)
		}
		unix.Bind(fd, sa)
		unix.Close(fd)
	}
}

// flood is a process placed in a cgroup binding a port as fast as it can.
type flood struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startFlood starts a flooder in cgroupAbs; it is killed when the test ends.
func startFlood(t *testing.T, cgroupAbs string, port int) *flood {
	t.Helper()
	cg, err := os.Open(cgroupAbs)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), floodEnv+"="+strconv.Itoa(port))
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &flood{cmd: cmd, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *flood) running() bool {
	select {
	case <-f.done:
		return false
	default:
		return true
	}
}

func (f *flood) stop() {
	f.cmd.Process.Kill()
	<-f.done
}
