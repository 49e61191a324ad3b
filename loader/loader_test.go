package loader_test

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

func TestMain(m *testing.M) {
	loader.MaybeNetnsProbe()
	testutils.MaybeBinder()
	code := m.Run()
	testutils.CleanupBinder()
	os.Exit(code)
}

var (
	any4 = netip.MustParseAddr("0.0.0.0")
	lo4  = netip.MustParseAddr("127.0.0.1")
)

// compiled builds a policy by hand: the policy package's compiler has its own tests.
func compiled(rules ...policy.Rule) *policy.Compiled {
	c := &policy.Compiled{Origins: []policy.Origin{{Pos: policy.Pos{File: "t.yaml", Line: 3}, Process: "p"}}}
	c.Rules = rules
	return c
}

func setup(t *testing.T, c *policy.Compiled, mode policy.Mode) (*loader.Loader, string, *cgroups.FS) {
	t.Helper()
	testutils.Privileged(t)
	abs, _ := testutils.Cgroup(t, "/")
	l, fs := setupIn(t, abs, c, mode)
	return l, abs, fs
}

// setupIn loads, applies and attaches c on the cgroup abs, detached when
// the test ends.
func setupIn(t *testing.T, abs string, c *policy.Compiled, mode policy.Mode) (*loader.Loader, *cgroups.FS) {
	t.Helper()
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	l, err := loader.New(loader.Config{CgroupPath: abs, PinPath: testutils.BPFFS(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Detach(); err != nil {
			t.Error(err)
		}
	})
	if _, err := l.Apply(c, loader.ApplyOptions{Mode: mode}, loader.Sources{Cgroups: fs}); err != nil {
		t.Fatal(err)
	}
	if err := l.Attach(); err != nil {
		t.Fatal(err)
	}
	return l, fs
}

func TestEnforceVerdicts(t *testing.T) {
	c := compiled(
		policy.Rule{Port: 18080, Protocol: policy.TCP},
		policy.Rule{Port: 18081, Protocol: policy.UDP, Localhost: true},
	)
	l, abs, _ := setup(t, c, policy.ModeEnforce)
	b := testutils.StartBinder(t, testutils.Mkdir(t, abs, "svc"), testutils.BinderOptions{})

	for _, tc := range []struct {
		proto string
		addr  netip.Addr
		port  uint16
		want  error
	}{
		{"tcp", any4, 18080, nil},
		{"tcp", any4, 18081, unix.EPERM},
		{"udp", lo4, 18081, nil},
		{"udp", any4, 18081, unix.EPERM},
		{"udp", any4, 18080, unix.EPERM},
		{"tcp", any4, 0, nil},
	} {
		if err := b.Bind(tc.proto, "4", tc.addr, tc.port); !errors.Is(err, tc.want) && err != tc.want {
			t.Errorf("bind %s %s:%d = %v, want %v", tc.proto, tc.addr, tc.port, err, tc.want)
		}
	}
	cnt, err := l.Counters()
	if err != nil {
		t.Fatal(err)
	}
	if cnt.Denied[loader.ReasonUndeclared] != 2 || cnt.Denied[loader.ReasonAddress] != 1 {
		t.Errorf("counters: %+v", cnt)
	}
	if err := l.EventReader(); err != nil {
		t.Fatal(err)
	}
	l.SetEventDeadline(time.Now().Add(2 * time.Second))
	ev, err := l.ReadEvent()
	if err != nil {
		t.Fatal(err)
	}
	if ev.Port != 18081 || ev.Protocol != policy.TCP || ev.Reason != loader.ReasonUndeclared || !ev.Denied || ev.PID != uint32(b.PID) {
		t.Errorf("event %+v", ev)
	}
}

// TestModeInEveryEntry: the node's mode reaches the verdict of every port,
// declared or not, through both slots: each entry of a slot carries it, and
// each reload rewrites the slot it fills.
func TestModeInEveryEntry(t *testing.T) {
	c := compiled(policy.Rule{Port: 18080, Protocol: policy.TCP, Owners: policy.Owners{UIDs: []uint32{4242}}})
	l, abs, fs := setup(t, c, policy.ModeAudit)
	b := testutils.StartBinder(t, testutils.Mkdir(t, abs, "svc"), testutils.BinderOptions{})
	binds := []struct {
		proto string
		port  uint16
	}{{"tcp", 18080}, {"tcp", 18082}, {"udp", 18082}, {"udp", 65535}, {"tcp", 1}}
	for i, mode := range []policy.Mode{policy.ModeAudit, policy.ModeEnforce, policy.ModeAudit, policy.ModeEnforce} {
		if i > 0 {
			if _, err := l.Apply(c, loader.ApplyOptions{Mode: mode}, loader.Sources{Cgroups: fs}); err != nil {
				t.Fatal(err)
			}
		}
		before, err := l.Counters()
		if err != nil {
			t.Fatal(err)
		}
		for _, bd := range binds {
			var want error
			if mode == policy.ModeEnforce {
				want = unix.EPERM
			}
			if err := b.Bind(bd.proto, "4", any4, bd.port); !errors.Is(err, want) && err != want {
				t.Errorf("%s: bind %s %d = %v, want %v", mode, bd.proto, bd.port, err, want)
			}
		}
		after, err := l.Counters()
		if err != nil {
			t.Fatal(err)
		}
		audited := after.Audited[loader.ReasonUndeclared] - before.Audited[loader.ReasonUndeclared] +
			after.Audited[loader.ReasonOwner] - before.Audited[loader.ReasonOwner]
		denied := after.Denied[loader.ReasonUndeclared] - before.Denied[loader.ReasonUndeclared] +
			after.Denied[loader.ReasonOwner] - before.Denied[loader.ReasonOwner]
		wantAudited, wantDenied := uint64(len(binds)), uint64(0)
		if mode == policy.ModeEnforce {
			wantAudited, wantDenied = 0, uint64(len(binds))
		}
		if audited != wantAudited || denied != wantDenied || after.NoPolicy != before.NoPolicy {
			t.Errorf("%s: %d audited, %d denied, %d without policy; want %d, %d, 0", mode, audited, denied,
				after.NoPolicy-before.NoPolicy, wantAudited, wantDenied)
		}
	}
}

// TestCloseIsIdempotent: Close and Detach may be called in any order, any
// number of times, and a closed loader refuses work instead of crashing.
func TestCloseIsIdempotent(t *testing.T) {
	testutils.Privileged(t)
	abs, _ := testutils.Cgroup(t, "/")
	fs, err := cgroups.Open("")
	if err != nil {
		t.Fatal(err)
	}
	pins := testutils.BPFFS(t)
	l, err := loader.New(loader.Config{CgroupPath: abs, PinPath: pins})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Attach(); err == nil {
		t.Error("Attach before Apply succeeded: binds would be judged against an empty policy")
	}
	if _, err := l.Apply(compiled(), loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}); err != nil {
		t.Fatal(err)
	}
	if err := l.Attach(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := l.Apply(compiled(), loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: fs}); err == nil {
		t.Error("Apply on a closed loader succeeded")
	}
	// Closed, but pinned: still enforcing until the pins go.
	if err := loader.RemovePins(pins); err != nil {
		t.Fatal(err)
	}
	if err := l.Detach(); err != nil {
		t.Errorf("Detach after Close: %v", err)
	}
}

// TestNetnsCookieFallback: the fallback for kernels without SO_NETNS_COOKIE
// finds the same cookie as the socket option.
func TestNetnsCookieFallback(t *testing.T) {
	testutils.Privileged(t)
	want, err := loader.HostNetnsCookie()
	if err != nil {
		t.Skipf("no SO_NETNS_COOKIE to compare with: %v", err)
	}
	for _, tc := range []struct {
		name   string
		clone3 bool
	}{{"clone3 into the cgroup", true}, {"moved through cgroup.procs", false}} {
		t.Run(tc.name, func(t *testing.T) {
			if !tc.clone3 {
				// Under systemd's RestrictNamespaces= clone3 answers ENOSYS.
				loader.WithoutCloneIntoCgroup(t)
			}
			got, err := loader.NetnsCookieFromProbe()
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("fallback cookie %d, SO_NETNS_COOKIE %d", got, want)
			}
		})
	}
}

// TestLoadEveryConfiguration loads the programs of both membership
// variants with and without rate limiting and across network namespaces:
// the load-time constants decide which code the verifier sees, so each
// combination is its own verification (a 6.18 verifier EFAULT, and 5.10
// refusing an instruction in code only newer kernels run, each showed in
// one combination only).
func TestLoadEveryConfiguration(t *testing.T) {
	testutils.Privileged(t)
	for _, m := range []loader.Members{loader.MembersStorage, loader.MembersHash} {
		if m == loader.MembersStorage && features.HaveMapType(ebpf.CgroupStorage) != nil {
			continue // before 6.2: the hash variant only
		}
		for _, interval := range []time.Duration{0, time.Second} {
			for _, all := range []bool{false, true} {
				l, err := loader.New(loader.Config{Members: m, EventInterval: interval, AllNetns: all})
				if err != nil {
					t.Errorf("members %q, event interval %v, all netns %v: %v", m, interval, all, err)
					continue
				}
				if err := l.Close(); err != nil {
					t.Error(err)
				}
			}
		}
	}
}
