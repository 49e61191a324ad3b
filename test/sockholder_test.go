package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/bindguard/bindguard/internal/testutils"
)

// sockHolderPy makes sockets on request and holds them open until its input
// closes. Each input line is "OP PROTO FAMILY ADDR PORT [LO HI]":
//
//	bind     bind(ADDR:PORT), then listen() for tcp (PORT 0: the kernel chooses)
//	bound    tcp: bind(ADDR:PORT) without listen()
//	listen0  tcp: listen() without bind()
//	sendto   udp: sendto(loopback:9) without bind()
//	connect  tcp: connect(loopback:PORT) without bind()
//
// LO HI set IP_LOCAL_PORT_RANGE first (family 4). The reply is one JSON line
// {"port": P, "inode": I} or {"err": "..."}.
const sockHolderPy = `
import json, os, socket, sys
IP_LOCAL_PORT_RANGE = 51
held = []
for line in sys.stdin:
    f = line.split()
    op, proto, fam, addr, port = f[0], f[1], f[2], f[3], int(f[4])
    af = socket.AF_INET6 if fam == "6" else socket.AF_INET
    loop = "::1" if fam == "6" else "127.0.0.1"
    s = socket.socket(af, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    try:
        if len(f) == 7:
            lo, hi = int(f[5]), int(f[6])
            s.setsockopt(socket.IPPROTO_IP, IP_LOCAL_PORT_RANGE, (lo | hi << 16).to_bytes(4, "little"))
        if op in ("bind", "bound"):
            s.bind((addr, port))
            if op == "bind" and proto == "tcp":
                s.listen(1024)
        elif op == "listen0":
            s.listen(16)
        elif op == "sendto":
            s.sendto(b"x", (loop, 9))
        elif op == "connect":
            s.connect((loop, port))
        held.append(s)
        print(json.dumps({"port": s.getsockname()[1], "inode": os.fstat(s.fileno()).st_ino}), flush=True)
    except OSError as e:
        s.close()
        print(json.dumps({"err": str(e)}), flush=True)
`

// sockHolder is a python3 process placed in a cgroup, optionally under
// another uid, that makes and holds sockets.
type sockHolder struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
	PID int
}

type holderReply struct {
	Port  uint16 `json:"port"`
	Inode uint64 `json:"inode"`
	Err   string `json:"err"`
}

// startSockHolder starts a holder in the cgroup directory cgroupAbs from
// its first instruction; uid < 0 keeps root.
func startSockHolder(t *testing.T, cgroupAbs string, uid int) *sockHolder {
	t.Helper()
	return startSockHolderIn(t, cgroupAbs, uid, 0)
}

// startSockHolderIn is startSockHolder with clone flags (CLONE_NEWNET).
func startSockHolderIn(t *testing.T, cgroupAbs string, uid int, cloneflags uintptr) *sockHolder {
	t.Helper()
	cg, err := os.Open(cgroupAbs)
	if err != nil {
		t.Fatal(err)
	}
	defer cg.Close()
	// Debian's python3: one a pyenv shim under /root would hide from other uids.
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		testutils.Need(t, fmt.Sprintf("no %s (Debian: apt-get install python3; scripts/ci-setup.sh does): %v", py, err))
	}
	cmd := exec.Command(py, "-c", sockHolderPy)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd()), Pdeathsig: syscall.SIGKILL, Cloneflags: cloneflags}
	if uid >= 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), NoSetGroups: true}
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start socket holder: %v", err)
	}
	h := &sockHolder{t: t, cmd: cmd, in: in, out: bufio.NewReader(out), PID: cmd.Process.Pid}
	t.Cleanup(h.stop)
	return h
}

// do runs one request; a reply with err set is returned, not fatal.
func (h *sockHolder) do(req string) holderReply {
	h.t.Helper()
	if _, err := fmt.Fprintln(h.in, req); err != nil {
		h.t.Fatalf("socket holder: %v", err)
	}
	line, err := h.out.ReadString('\n')
	if err != nil {
		h.t.Fatalf("socket holder %q: %v", req, err)
	}
	var r holderReply
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		h.t.Fatalf("socket holder %q: %v: %q", req, err, line)
	}
	return r
}

// must runs a request that has to succeed.
func (h *sockHolder) must(req string) holderReply {
	h.t.Helper()
	r := h.do(req)
	if r.Err != "" {
		h.t.Fatalf("socket holder %q: %s", req, r.Err)
	}
	return r
}

func (h *sockHolder) stop() {
	if h.in != nil {
		h.in.Close()
		h.in = nil
		h.cmd.Wait()
	}
}

// scanJSON runs `bindguard scan -o json` with args and decodes the output.
func scanJSON(t *testing.T, args ...string) (scanOutput, int, string) {
	t.Helper()
	out, stderr, code := runScan(t, append(args, "-o", "json")...)
	var got scanOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("scan %s: exit %d: %v:\n%s%s", strings.Join(args, " "), code, err, out, stderr)
	}
	return got, code, stderr
}
