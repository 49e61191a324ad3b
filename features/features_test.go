package features

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
)

func TestProbeList(t *testing.T) {
	version := regexp.MustCompile(`^[1-9][0-9]*\.[0-9]+$`)
	seen := map[string]bool{}
	for _, p := range probes {
		f := p.Feature
		if f.Name == "" || f.Needed == "" || p.run == nil {
			t.Errorf("%+v: want a name, a need and a probe", f)
		}
		if !version.MatchString(f.MinKernel) {
			t.Errorf("%s: MinKernel %q: want a release such as 5.8", f.Name, f.MinKernel)
		}
		if seen[f.Name] {
			t.Errorf("%s: listed twice", f.Name)
		}
		seen[f.Name] = true
	}
}

func TestVerify(t *testing.T) {
	ringbuf := Feature{Name: "the BPF ring buffer", Needed: "report events", MinKernel: "5.8"}
	btf := Feature{Name: "kernel BTF (/sys/kernel/btf/vmlinux)", Needed: "relocate its cgroup-watch programs (CO-RE)",
		MinKernel: "5.4", Config: "CONFIG_DEBUG_INFO_BTF=y"}
	present := func(f Feature) Feature { f.Present = true; return f }
	failed := func(f Feature, err error) Feature { f.Err = err; return f }
	for _, tc := range []struct {
		name string
		fs   []Feature
		caps []string
		want string // "" for nil
	}{
		{"all present", []Feature{present(ringbuf), present(btf)}, nil, ""},
		{"none", nil, nil, ""},
		{"one missing", []Feature{ringbuf, present(btf)}, nil,
			"kernel 5.4.0 lacks the BPF ring buffer (Linux 5.8): bindguard cannot report events"},
		{"two missing, with config", []Feature{ringbuf, btf}, nil,
			"kernel 5.4.0 lacks the BPF ring buffer (Linux 5.8): bindguard cannot report events\n" +
				"kernel 5.4.0 lacks kernel BTF (/sys/kernel/btf/vmlinux) (Linux 5.4, CONFIG_DEBUG_INFO_BTF=y): bindguard cannot relocate its cgroup-watch programs (CO-RE)"},
		{"probe failed", []Feature{failed(ringbuf, errors.New("operation not permitted"))}, nil,
			"cannot tell whether kernel 5.4.0 has the BPF ring buffer (Linux 5.8): operation not permitted"},
		{"not permitted, once", []Feature{failed(ringbuf, unix.EPERM)}, nil,
			"cannot tell whether kernel 5.4.0 has the BPF ring buffer: probing is not permitted although the process has the capabilities bindguard runs with (or the kernel did not say which it has): " +
				"a seccomp profile (older runtimes' default profiles deny bpf() even with CAP_BPF), a security module (AppArmor's default container profile denies the pins in /sys/fs/bpf) or a user namespace may deny bpf()"},
		{"not permitted, folded", []Feature{failed(ringbuf, fmt.Errorf("load: %w", unix.EPERM)), failed(btf, unix.EPERM), present(btf)}, []string{"CAP_BPF"},
			"cannot tell whether kernel 5.4.0 has 2 of the features bindguard needs (the BPF ring buffer, …): probing is not permitted without CAP_BPF"},
		{"missing without a capability", []Feature{ringbuf}, []string{"CAP_PERFMON"},
			"kernel 5.4.0 lacks the BPF ring buffer (Linux 5.8): bindguard cannot report events\n" +
				"(probed without CAP_PERFMON: a feature reported missing may only be denied to this process)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verify(tc.fs, "5.4.0", tc.caps)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("got\n%v\nwant\n%s", err, tc.want)
			}
			var fe *Error
			if !errors.As(err, &fe) || fe.Release != "5.4.0" {
				t.Fatalf("got %T, want *Error for release 5.4.0", err)
			}
		})
	}
}

func TestResult(t *testing.T) {
	f := Feature{Name: "x"}
	if r := result(f, nil); !r.Present || r.Err != nil {
		t.Errorf("nil: got %+v, want present", r)
	}
	if r := result(f, ebpf.ErrNotSupported); r.Present || r.Err != nil {
		t.Errorf("ErrNotSupported: got %+v, want missing without error", r)
	}
	if r := result(f, os.ErrPermission); r.Present || r.Err == nil {
		t.Errorf("other error: got %+v, want not present with an error", r)
	}
}

// TestCheckPresent runs every probe against this kernel: CI's kernel has all
// of them, so any missing feature is a bug in a probe (or a CI kernel too old
// for bindguard).
func TestCheckPresent(t *testing.T) {
	testutils.Privileged(t)
	fs := Check()
	if len(fs) != len(probes) {
		t.Fatalf("Check returned %d features, want %d", len(fs), len(probes))
	}
	for _, f := range fs {
		if !f.Present {
			t.Errorf("%s: not present on %s (err: %v)", f.Name, KernelRelease(), f.Err)
		}
	}
	if err := Require(); err != nil {
		t.Errorf("Require: %v", err)
	}
}

// TestCgroupLinkProbeCleansUp checks the probe leaves no cgroup behind.
func TestCgroupLinkProbeCleansUp(t *testing.T) {
	testutils.Privileged(t)
	root, err := cgroups.Mount2()
	if err != nil {
		t.Fatal(err)
	}
	if err := probeCgroupLink(); err != nil {
		t.Fatalf("probeCgroupLink: %v", err)
	}
	// Look where the probe creates its cgroup: below this process's own
	// cgroup first, the root otherwise.
	dirs := []string{root}
	if own, err := ownCgroup(); err == nil && own != "/" {
		dirs = append(dirs, filepath.Join(root, own))
	}
	for _, dir := range dirs {
		des, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			if strings.HasPrefix(de.Name(), "bindguard-probe-") {
				t.Errorf("probe cgroup %s left behind in %s", de.Name(), dir)
			}
		}
	}
}

func TestHaveLinkCreate(t *testing.T) {
	testutils.Privileged(t)
	if err := haveLinkCreate(); err != nil {
		t.Fatalf("haveLinkCreate: %v", err)
	}
}

func TestRawTracepointProbe(t *testing.T) {
	testutils.Privileged(t)
	if err := probeRawTracepoints("cgroup_mkdir"); err != nil {
		t.Errorf("cgroup_mkdir: %v", err)
	}
	if err := probeRawTracepoints("bindguard_no_such_tracepoint"); !errors.Is(err, ebpf.ErrNotSupported) {
		t.Errorf("a tracepoint that does not exist: got %v, want ErrNotSupported", err)
	}
}
