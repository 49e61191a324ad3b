package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/internal/testutils"
)

// env is the bench's corner of the machine: one temporary cgroup below the
// cgroup2 root, and everything to undo. close undoes it all, in reverse.
type env struct {
	cg   *cgroups.FS
	root string // file system path of the temporary cgroup
	undo []func() error
}

func newEnv() (*env, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root (BPF programs, cgroups)")
	}
	cg, err := cgroups.Open("")
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp(cg.Root, "bindguard-bench-")
	if err != nil {
		cg.Close()
		return nil, fmt.Errorf("create bench cgroup: %w", err)
	}
	return &env{cg: cg, root: root}, nil
}

// mkdir creates the cgroup rel (slash-separated, parents included) below the
// bench cgroup and returns its file system path.
func (e *env) mkdir(rel string) (string, error) {
	dir := filepath.Join(e.root, filepath.FromSlash(rel))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create cgroup: %w", err)
	}
	return dir, nil
}

// rel is the registry path of a cgroup below the bench cgroup.
func (e *env) rel(dir string) string {
	r, err := e.cg.Rel(dir)
	if err != nil {
		panic(err) // every dir comes from mkdir
	}
	return r
}

// onClose registers f to run at close, before the cgroups go.
func (e *env) onClose(f func() error) { e.undo = append(e.undo, f) }

// close undoes everything: links, programs and maps first (registered
// closers, last first), then kills what still runs in the bench cgroups and
// removes them, deepest first.
func (e *env) close() error {
	var errs []error
	for i := len(e.undo) - 1; i >= 0; i-- {
		errs = append(errs, e.undo[i]())
	}
	e.undo = nil
	errs = append(errs, testutils.RemoveTree(e.root), e.cg.Close())
	return errors.Join(errs...)
}

// enableStats turns on the kernel's BPF run-time statistics until the
// returned closer is closed.
func enableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable bpf stats: %w", err)
	}
	return c, nil
}

// statsSysctl reports whether kernel.bpf_stats_enabled was set by someone
// else: then the stats are on for the "stats off" loop runs too.
func statsSysctl() bool {
	b, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// machine says where a run was measured.
type machine struct {
	CPUs      int    `json:"cpus"`
	Model     string `json:"model"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	Cgroup2   string `json:"cgroup2"`
}

func machineInfo(cgroup2 string) machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Cgroup2: cgroup2}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}
