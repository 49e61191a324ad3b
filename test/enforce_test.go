package test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
)

var (
	any4    = netip.MustParseAddr("0.0.0.0")
	lo4     = netip.MustParseAddr("127.0.0.1")
	lo4b    = netip.MustParseAddr("127.0.0.53")
	any6    = netip.MustParseAddr("::")
	lo6     = netip.MustParseAddr("::1")
	mapped4 = netip.MustParseAddr("::ffff:127.0.0.1")
	mapAny  = netip.MustParseAddr("::ffff:0.0.0.0")
)

type bindCase struct {
	name   string
	proto  string
	family string
	addr   netip.Addr
	port   uint16
	want   error // nil or unix.EPERM
}

func expect(t *testing.T, b *testutils.Binder, cases []bindCase) {
	t.Helper()
	for _, c := range cases {
		err := b.Bind(c.proto, c.family, c.addr, c.port)
		if c.want == nil && errors.Is(err, unix.EADDRINUSE) {
			// The test ports lie in the ephemeral range, where any socket
			// on the machine may hold one. The kernel checks the port only
			// after the bind hook allowed the bind: the hook's verdict is ok.
			t.Logf("%s: %s/%d held by another socket; the hook allowed the bind", c.name, c.proto, c.port)
			continue
		}
		if !errors.Is(err, c.want) && !(err == nil && c.want == nil) {
			t.Errorf("%s: bind %s/%s [%s]:%d = %v, want %v", c.name, c.proto, c.family, c.addr, c.port, err, errOrOK(c.want))
		}
	}
}

func errOrOK(err error) any {
	if err == nil {
		return "ok"
	}
	return err
}

const basicRegistry = `entries:
  - port: 41000
    protocol: tcp
    process: declared-tcp
  - port: "41010-41019"
    protocol: [tcp, udp]
    process: ranged
  - port: 41020
    protocol: udp
    process: udp-only
  - port: 41030
    process: loopback-only
    bind: localhost
  - port: 41040
    process: audited-entry
    mode: audit
removed:
  - port: 41050
    protocol: tcp
    process: old-feature
    removed: "1.0"
`

func TestEnforceMode(t *testing.T) {
	e, d := startEnv(t, basicRegistry, "enforce")
	b := e.binder("svc")

	if err := b.Bind("mptcp", "4", any4, 0); errors.Is(err, unix.EPROTONOSUPPORT) || errors.Is(err, unix.ENOPROTOOPT) {
		t.Log("kernel without MPTCP: its cases are skipped")
	} else {
		expect(t, b, []bindCase{
			{"declared as mptcp", "mptcp", "4", any4, 41000, nil},
			{"undeclared as mptcp", "mptcp", "6", any6, 41001, unix.EPERM},
		})
	}
	expect(t, b, []bindCase{
		{"declared", "tcp", "4", any4, 41000, nil},
		{"declared v6", "tcp", "6", any6, 41000, nil},
		{"undeclared", "tcp", "4", any4, 41001, unix.EPERM},
		{"undeclared v6", "tcp", "6", any6, 41001, unix.EPERM},
		{"ephemeral port 0", "tcp", "4", any4, 0, nil},
		{"ephemeral port 0 udp", "udp", "6", any6, 0, nil},
		{"tcp-only port over udp", "udp", "4", any4, 41000, unix.EPERM},
		{"udp-only port over tcp", "tcp", "4", any4, 41020, unix.EPERM},
		{"udp-only port over udp", "udp", "4", any4, 41020, nil},
		{"range below", "tcp", "4", any4, 41009, unix.EPERM},
		{"range first", "tcp", "4", any4, 41010, nil},
		{"range last", "udp", "4", any4, 41019, nil},
		{"range above", "udp", "4", any4, 41020 + 1, unix.EPERM},
		{"range last v6 udp", "udp", "6", any6, 41019, nil},
		{"audit entry still proceeds", "tcp", "4", any4, 41040, nil},
		{"removed port", "tcp", "4", any4, 41050, unix.EPERM},
	})
	ev := d.eventFor(41050, "tcp")
	if ev["reason"] != "removed" || ev["verdict"] != "deny" || ev["process"] != "old-feature" {
		t.Errorf("removed-port event: %v", ev)
	}
}

func TestLocalhostOnly(t *testing.T) {
	e, _ := startEnv(t, basicRegistry, "enforce")
	b := e.binder("svc")
	expect(t, b, []bindCase{
		{"127.0.0.1", "tcp", "4", lo4, 41030, nil},
		{"127.0.0.53", "tcp", "4", lo4b, 41030, nil},
		{"0.0.0.0", "tcp", "4", any4, 41030, unix.EPERM},
		{"::1", "tcp", "6", lo6, 41030, nil},
		{"::", "tcp", "6", any6, 41030, unix.EPERM},
		{"::ffff:127.0.0.1", "tcp", "6", mapped4, 41030, nil},
		{"::ffff:0.0.0.0", "tcp", "6", mapAny, 41030, unix.EPERM},
	})
}

func TestAuditMode(t *testing.T) {
	e, d := startEnv(t, basicRegistry, "audit")
	svc := e.child("svc")
	b := testutils.StartBinder(t, svc, testutils.BinderOptions{})
	expect(t, b, []bindCase{
		{"undeclared proceeds", "tcp", "4", any4, 41001, nil},
		{"removed proceeds", "tcp", "4", any4, 41050, nil},
		{"declared", "tcp", "4", any4, 41000, nil},
	})
	ev := d.eventFor(41001, "tcp")
	if ev["verdict"] != "audit" || ev["reason"] != "undeclared" {
		t.Errorf("audit event: %v", ev)
	}
	if _, ok := ev["rule"]; ok {
		t.Errorf("undeclared event names a rule: %v", ev)
	}
	d.eventFor(41050, "tcp")
	for _, ev := range d.events() {
		if p, _ := ev["port"].(float64); p == 41000 {
			t.Errorf("event for a declared bind: %v", ev)
		}
	}
}

func TestEventFields(t *testing.T) {
	e, d := startEnv(t, basicRegistry, "enforce")
	svc := e.child("web.service")
	b := testutils.StartBinder(t, svc, testutils.BinderOptions{})
	expect(t, b, []bindCase{{"address violation", "tcp", "6", any6, 41030, unix.EPERM}})
	ev := d.eventFor(41030, "tcp")

	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	cgID, err := cgroups.IDOf(svc)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"msg": "bind denied", "verdict": "deny", "reason": "address", "port": 41030.0, "protocol": "tcp",
		"family": "ipv6", "address": "::", "pid": float64(b.PID), "uid": 0.0,
		"cgroup": e.cgRel + "/web.service", "cgroup_id": float64(cgID), "unit": "web.service",
		"rule": e.registry + ":15", "process": "loopback-only",
	}
	_ = fs
	for k, v := range want {
		if fmt.Sprint(ev[k]) != fmt.Sprint(v) {
			t.Errorf("event %s = %v, want %v", k, ev[k], v)
		}
	}
	if comm, _ := ev["comm"].(string); comm == "" || !strings.HasPrefix(filepath.Base(os.Args[0]), comm) {
		t.Errorf("event comm = %q, want a prefix of %q", comm, filepath.Base(os.Args[0]))
	}
	if _, ok := ev["time"]; !ok {
		t.Errorf("event has no time: %v", ev)
	}
}

func TestOwners(t *testing.T) {
	e := newEnv(t)
	ownerUID := uint32(4242)
	e.writeRegistry(fmt.Sprintf(`entries:
  - port: 42000
    process: cgroup-owned
    owners:
      - cgroup: %%CG%%/owner
  - port: 42001
    process: uid-owned
    owners:
      - uid: %d
  - port: 42002
    process: unit-owned
    owners:
      - unit: owned-unit.service
  - port: 42003
    protocol: udp
    process: owned-localhost
    bind: localhost
    owners:
      - cgroup: %%CG%%/owner
`, ownerUID))
	owner := e.child("owner")
	deep := e.child("owner/a/b/c/d/e/f/g")
	unit := e.child("system.slice/owned-unit.service")
	other := e.child("other")
	d := e.start("enforce")

	t.Run("cgroup itself", func(t *testing.T) {
		b := testutils.StartBinder(t, owner, testutils.BinderOptions{})
		expect(t, b, []bindCase{
			{"owner", "tcp", "4", any4, 42000, nil},
			{"owner v6", "tcp", "6", any6, 42000, nil},
			{"not the uid owner", "tcp", "4", any4, 42001, unix.EPERM},
			{"owned localhost on loopback", "udp", "4", lo4, 42003, nil},
			{"owned localhost on wildcard", "udp", "4", any4, 42003, unix.EPERM},
		})
	})
	t.Run("cgroup subtree depth 8", func(t *testing.T) {
		b := testutils.StartBinder(t, deep, testutils.BinderOptions{})
		expect(t, b, []bindCase{{"descendant of owner", "tcp", "4", any4, 42000, nil}})
	})
	t.Run("unit", func(t *testing.T) {
		b := testutils.StartBinder(t, unit, testutils.BinderOptions{})
		expect(t, b, []bindCase{
			{"unit owner", "tcp", "4", any4, 42002, nil},
			{"unit is not the cgroup owner", "tcp", "4", any4, 42000, unix.EPERM},
		})
	})
	t.Run("uid", func(t *testing.T) {
		b := testutils.StartBinder(t, other, testutils.BinderOptions{UID: &ownerUID})
		expect(t, b, []bindCase{
			{"uid owner", "tcp", "4", any4, 42001, nil},
			{"uid owner v6", "tcp", "6", any6, 42001, nil},
			{"uid is not the cgroup owner", "tcp", "4", any4, 42000, unix.EPERM},
		})
	})
	t.Run("mismatch", func(t *testing.T) {
		b := testutils.StartBinder(t, other, testutils.BinderOptions{})
		expect(t, b, []bindCase{
			{"other cgroup", "tcp", "4", any4, 42000, unix.EPERM},
			{"other cgroup unit port", "tcp", "4", any4, 42002, unix.EPERM},
			{"other cgroup owner+localhost", "udp", "4", lo4, 42003, unix.EPERM},
		})
		ev := d.waitLog("owner event from other", func(m map[string]any) bool {
			return m["port"] == 42000.0 && m["cgroup"] == e.cgRel+"/other"
		})
		if ev["reason"] != "owner" || ev["verdict"] != "deny" || ev["process"] != "cgroup-owned" {
			t.Errorf("owner event: %v", ev)
		}
	})
	t.Run("sibling prefix is not a subtree", func(t *testing.T) {
		b := testutils.StartBinder(t, e.child("owner2"), testutils.BinderOptions{})
		expect(t, b, []bindCase{{"owner2 is not below owner", "tcp", "4", any4, 42000, unix.EPERM}})
	})
}

func TestOtherNetworkNamespace(t *testing.T) {
	for _, allNetns := range []bool{false, true} {
		t.Run(fmt.Sprintf("all-netns=%v", allNetns), func(t *testing.T) {
			e := newEnv(t)
			e.writeRegistry(basicRegistry)
			var extra []string
			want := error(nil)
			if allNetns {
				extra = append(extra, "--all-netns")
				want = unix.EPERM
			}
			e.start("enforce", extra...)
			pod := testutils.StartBinder(t, e.child("pod"), testutils.BinderOptions{NewNet: true})
			expect(t, pod, []bindCase{
				{"undeclared in own netns", "tcp", "4", any4, 41001, want},
				{"declared in own netns", "tcp", "4", any4, 41000, nil},
			})
			host := testutils.StartBinder(t, e.child("host"), testutils.BinderOptions{})
			expect(t, host, []bindCase{{"undeclared in host netns", "tcp", "4", any4, 41001, unix.EPERM}})
		})
	}
}

func TestEmptyRegistryDeniesAll(t *testing.T) {
	e, _ := startEnv(t, "entries: []\n", "enforce")
	b := e.binder("svc")
	expect(t, b, []bindCase{
		{"anything", "tcp", "4", any4, 41000, unix.EPERM},
		{"anything udp", "udp", "6", any6, 8080, unix.EPERM},
		{"ephemeral", "tcp", "4", any4, 0, nil},
	})
}

// TestNoLeftovers checks that a daemon stopped with SIGTERM removes its links
// and pins, and that binds are no longer judged afterwards.
func TestNoLeftovers(t *testing.T) {
	e, d := startEnv(t, basicRegistry, "enforce")
	svc := e.child("svc")
	b := testutils.StartBinder(t, svc, testutils.BinderOptions{})
	expect(t, b, []bindCase{{"enforced", "tcp", "4", any4, 41001, unix.EPERM}})
	d.stop(unix.SIGTERM)
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("daemon exit code %d:\n%s", code, d.output())
	}
	expect(t, b, []bindCase{{"after detach", "tcp", "4", any4, 41001, nil}})
	if _, err := os.Stat(e.pinPath); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(e.pinPath)
		t.Errorf("pin directory left behind: %v %v", err, entries)
	}
	assertNothingAttached(t, e.cgAbs)
}

// assertNothingAttached checks with the kernel that no program is attached to
// the bind hooks of dir.
func assertNothingAttached(t *testing.T, dir string) {
	t.Helper()
	for _, typ := range []string{"bind4", "bind6"} {
		progs, err := attachedPrograms(dir, typ)
		if err != nil {
			t.Fatal(err)
		}
		if len(progs) > 0 {
			t.Errorf("programs still attached to %s of %s: %v", typ, dir, progs)
		}
	}
}
