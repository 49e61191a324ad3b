package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/internal/testutils"
)

// scanSocket is what the test reads of `bindguard scan -o json`.
type scanSocket struct {
	Protocol string `json:"protocol"`
	Family   int    `json:"family"`
	Address  string `json:"address"`
	Port     uint16 `json:"port"`
	PID      int    `json:"pid"`
	Comm     string `json:"comm"`
	UID      uint32 `json:"uid"`
	Cgroup   string `json:"cgroup"`
	Unit     string `json:"unit"`
	Inode    uint64 `json:"inode"`
	State    string `json:"state"`
	Bound    string `json:"bound"`
	CgroupID uint64 `json:"cgroup_id"`
	ProcCg   string `json:"process_cgroup"`
	Verdict  string `json:"verdict"`
	PolicyR  string `json:"policy_reason"`
	Reason   string `json:"reason"`
	Rule     string `json:"rule"`
	Process  string `json:"process"`
}

type scanOutput struct {
	Mode    string       `json:"mode"`
	Path    string       `json:"path"`
	PathWhy string       `json:"path_reason"`
	Sockets []scanSocket `json:"sockets"`
	Summary struct {
		Sockets    int            `json:"sockets"`
		Allowed    int            `json:"allowed"`
		Ephemeral  int            `json:"ephemeral"`
		Audited    int            `json:"audited"`
		Denied     int            `json:"denied"`
		Violations map[string]int `json:"violations"`
	} `json:"summary"`
}

// runScan runs `bindguard scan` and returns its stdout, stderr and exit code.
func runScan(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binPath, append([]string{"scan"}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

const scanViolating = `entries:
  - port: 45101
    protocol: [tcp, udp]
    process: web
    owners: [{cgroup: %CG%/web.service}]
  - port: 45103
    process: local-only
    bind: localhost
  - port: 45104
    process: local-ok
    bind: localhost
  - port: 45106
    protocol: udp
    process: web-udp
    owners: [{cgroup: %CG%/web.service}]
  - port: 45108
    process: uid-owned
    owners: [{uid: 4243}]
removed:
  - {port: 45107, process: old, removed: "1.0"}
`

const scanDeclared = `entries:
  - port: "45101-45108"
    protocol: [tcp, udp]
    process: everything
`

func TestScan(t *testing.T) {
	e := newEnv(t)
	web := e.child("web.service")
	other := e.child("other")
	uid := uint32(4243)

	type want struct {
		proto, family, addr string
		port                uint16
		l                   *testutils.Listener
		cgroup              string
		uid                 uint32
		reason              string // "" allowed
		line                int    // registry line of the rule, 0 none
		inode               uint64
	}
	webL := testutils.StartListener(t, web, testutils.BinderOptions{})
	otherL := testutils.StartListener(t, other, testutils.BinderOptions{})
	uidL := testutils.StartListener(t, other, testutils.BinderOptions{UID: &uid})
	podL := testutils.StartListener(t, e.child("pod"), testutils.BinderOptions{NewNet: true})
	wants := []*want{
		{"tcp", "4", "0.0.0.0", 45101, webL, "/web.service", 0, "", 6, 0},
		{"udp", "4", "0.0.0.0", 45101, webL, "/web.service", 0, "", 6, 0},
		{"tcp", "6", "::1", 45104, webL, "/web.service", 0, "", 13, 0},
		{"tcp", "4", "0.0.0.0", 45103, otherL, "/other", 0, "address", 10, 0},
		{"tcp", "6", "::", 45105, otherL, "/other", 0, "undeclared", 0, 0},
		{"udp", "6", "::ffff:0.0.0.0", 45106, otherL, "/other", 0, "owner", 16, 0},
		{"tcp", "4", "127.0.0.1", 45107, otherL, "/other", 0, "removed", 24, 0},
		{"tcp", "4", "0.0.0.0", 45108, uidL, "/other", uid, "", 20, 0},
	}
	for _, w := range wants {
		ino, err := w.l.Listen(w.proto, w.family, netip.MustParseAddr(w.addr), w.port)
		if err != nil {
			t.Fatalf("listen %s/%s [%s]:%d: %v", w.proto, w.family, w.addr, w.port, err)
		}
		w.inode = ino
	}
	// Not in the host network namespace: never listed.
	if _, err := podL.Listen("tcp", "4", netip.MustParseAddr("0.0.0.0"), 45109); err != nil {
		t.Fatalf("listen in pod netns: %v", err)
	}
	comm := filepath.Base(os.Args[0])
	if len(comm) > 15 {
		comm = comm[:15]
	}

	e.writeRegistry(scanViolating)
	check := func(t *testing.T, mode, violation string) {
		out, stderr, code := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel, "--mode", mode, "-o", "json")
		if code != 3 {
			t.Fatalf("exit %d, want 3; stderr: %s", code, stderr)
		}
		var got scanOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		if len(got.Sockets) != len(wants) {
			t.Errorf("%d sockets listed, want %d: %s", len(got.Sockets), len(wants), out)
		}
		for _, w := range wants {
			var s *scanSocket
			for i := range got.Sockets {
				if got.Sockets[i].Inode == w.inode {
					s = &got.Sockets[i]
				}
			}
			name := fmt.Sprintf("%s/%s [%s]:%d", w.proto, w.family, w.addr, w.port)
			if s == nil {
				t.Errorf("%s (inode %d) not listed", name, w.inode)
				continue
			}
			verdict, rule := "allow", ""
			if w.reason != "" {
				verdict = violation
			}
			if w.line > 0 {
				rule = fmt.Sprintf("%s:%d", e.registry, w.line)
			}
			wantS := scanSocket{Protocol: w.proto, Family: int(w.family[0] - '0'), Address: w.addr, Port: w.port,
				PID: w.l.PID, Comm: comm, UID: w.uid, Cgroup: e.cgRel + w.cgroup, Inode: w.inode,
				Verdict: verdict, Reason: w.reason, Rule: rule}
			if w.cgroup == "/web.service" {
				wantS.Unit = "web.service"
			}
			gotS := *s
			// procfs (kernels without the iterators scan reads, before 5.15)
			// knows neither who chose the port nor the socket's cgroup.
			if iterators := gotS.CgroupID != 0 || gotS.Bound != "unknown"; iterators && (gotS.Bound != "explicit" || gotS.CgroupID == 0 || gotS.ProcCg != gotS.Cgroup) {
				t.Errorf("%s: bound %q, cgroup id %d, process cgroup %q: want explicit, the socket's cgroup, the same as the holder's",
					name, gotS.Bound, gotS.CgroupID, gotS.ProcCg)
			}
			gotS.Process, gotS.State, gotS.Bound, gotS.CgroupID, gotS.ProcCg = "", "", "", 0, ""
			if gotS != wantS {
				t.Errorf("%s:\n got %+v\nwant %+v", name, gotS, wantS)
			}
		}
		sum := got.Summary
		if sum.Sockets != 8 || sum.Allowed != 4 || sum.Audited+sum.Denied != 4 ||
			fmt.Sprint(sum.Violations) != "map[address:1 autobind:0 owner:1 removed:1 undeclared:1]" {
			t.Errorf("summary %+v", sum)
		}
	}
	t.Run("enforce", func(t *testing.T) { check(t, "enforce", "deny") })
	t.Run("audit", func(t *testing.T) { check(t, "audit", "audit") })

	t.Run("table", func(t *testing.T) {
		out, _, code := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel)
		if code != 3 {
			t.Errorf("exit %d, want 3", code)
		}
		t.Logf("scan output:\n%s", out)
		lines := strings.Split(strings.TrimSpace(out), "\n")
		from := "sockets from: BPF socket iterators"
		if kernelBefore(5, 15) { // no iterators with the fields scan reads: procfs, and says so
			from = "sockets from: /proc/net"
		}
		if len(lines) != 11 || !strings.HasPrefix(lines[0], from) || !strings.HasPrefix(lines[1], "PROTO ") {
			t.Fatalf("want the path line, a header, 8 sockets and a summary:\n%s", out)
		}
		lines = lines[1:]
		if want := "8 sockets: 4 allowed, 0 ephemeral, 4 violations (4 denied, 0 audited): undeclared 1, owner 1, address 1, removed 1, autobind 0"; lines[9] != want {
			t.Errorf("summary %q, want %q", lines[9], want)
		}
		// Columns are aligned: every row has REASON where the header has it.
		col := strings.Index(lines[0], "REASON")
		for _, l := range lines[1:9] {
			if len(l) < col || l[col-1] != ' ' || l[col] == ' ' {
				t.Errorf("row not aligned with REASON at %d: %q", col, l)
			}
		}
	})

	t.Run("subtree filter", func(t *testing.T) {
		out, _, code := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel+"/web.service", "-o", "json")
		var got scanOutput
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatal(err)
		}
		if code != 0 || got.Summary.Sockets != 3 || got.Summary.Allowed != 3 {
			t.Errorf("exit %d, summary %+v, want 3 sockets allowed, exit 0", code, got.Summary)
		}
		out, _, _ = runScan(t, "--registry", e.registry, "--cgroup", e.cgRel+"/web", "-o", "json")
		got = scanOutput{}
		json.Unmarshal([]byte(out), &got)
		if got.Summary.Sockets != 0 {
			t.Errorf("%s/web listed sockets of %s/web.service: %s", e.cgRel, e.cgRel, out)
		}
	})

	t.Run("all declared", func(t *testing.T) {
		e.writeRegistry(scanDeclared)
		out, stderr, code := runScan(t, "--registry", e.registry, "--cgroup", e.cgRel)
		if code != 0 {
			t.Errorf("exit %d, want 0:\n%s%s", code, out, stderr)
		}
		if !strings.HasSuffix(out, "8 sockets: 8 allowed, 0 ephemeral, 0 violations (0 denied, 0 audited): undeclared 0, owner 0, address 0, removed 0, autobind 0\n") {
			t.Errorf("output:\n%s", out)
		}
	})
}
