package features

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	ebpffeatures "github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
)

// Feature is one thing bindguard needs from the kernel, and whether the
// running kernel has it.
type Feature struct {
	// Name says what the feature is, e.g. "the BPF ring buffer".
	Name string
	// Needed says what bindguard needs it for, phrased to complete
	// "bindguard cannot …", e.g. "report events".
	Needed string
	// MinKernel is the first mainline Linux release that has the feature,
	// e.g. "5.8". Distribution kernels may backport it earlier.
	MinKernel string
	// Config is the kernel build option the feature also needs, if a kernel
	// of MinKernel can lack it, e.g. "CONFIG_DEBUG_INFO_BTF=y".
	Config string
	// Present is true when the probe found the feature.
	Present bool
	// Err is set when the probe could not tell (for lack of privileges, say);
	// Present is then false. A feature the kernel lacks has a nil Err.
	Err error
}

// probe is a Feature's description and how to find it. run returns nil when
// the feature is present, an error matching ebpf.ErrNotSupported when the
// kernel lacks it, and any other error when it cannot tell.
type probe struct {
	Feature
	run func() error
}

// The releases below are those of the mainline commits that added each
// feature (for helpers: that made the helper callable from the program type
// bindguard calls it from, which is often later than the helper itself).
var probes = []probe{
	// "bpf: Hooks for sys_bind" (Andrey Ignatov).
	{Feature{Name: "cgroup sock_addr programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR)", Needed: "judge bind() calls",
		MinKernel: "4.17", Config: "CONFIG_CGROUP_BPF=y"}, progType(ebpf.CGroupSockAddr)},
	// "bpf: introduce BPF_RAW_TRACEPOINT" (Alexei Starovoitov).
	{Feature{Name: "raw tracepoint programs (BPF_PROG_TYPE_RAW_TRACEPOINT)", Needed: "load its cgroup-watch programs",
		MinKernel: "4.17"}, progType(ebpf.RawTracepoint)},

	{Feature{Name: "BPF hash maps", Needed: "hold a policy", MinKernel: "3.19"}, mapType(ebpf.Hash)},
	{Feature{Name: "BPF array maps", Needed: "hold the rules and record the policy in force", MinKernel: "3.19"}, mapType(ebpf.Array)},
	{Feature{Name: "BPF per-CPU arrays", Needed: "count binds", MinKernel: "4.6"}, mapType(ebpf.PerCPUArray)},
	{Feature{Name: "BPF LRU hash maps", Needed: "rate-limit events", MinKernel: "4.10"}, mapType(ebpf.LRUHash)},
	{Feature{Name: "BPF array-of-maps", Needed: "install a policy's pairs map in one update", MinKernel: "4.12"}, mapType(ebpf.ArrayOfMaps)},
	// "bpf: Implement BPF ring buffer and verifier support for it" (457f44363a88).
	{Feature{Name: "the BPF ring buffer", Needed: "report events", MinKernel: "5.8"}, mapType(ebpf.RingBuf)},

	// Callable from sock_addr programs since they exist: sock_addr_func_proto
	// returned it from its first version.
	{Feature{Name: "bpf_get_current_uid_gid in sock_addr programs", Needed: "match uid owners",
		MinKernel: "4.17"}, helper(ebpf.CGroupSockAddr, asm.FnGetCurrentUidGid)},
	// "bpf: enable retrieval of pid/tgid/comm from bpf cgroup hooks" (Daniel Borkmann).
	{Feature{Name: "bpf_get_current_pid_tgid in sock_addr programs", Needed: "report the process of a violation",
		MinKernel: "5.7"}, helper(ebpf.CGroupSockAddr, asm.FnGetCurrentPidTgid)},
	{Feature{Name: "bpf_get_current_comm in sock_addr programs", Needed: "report the command of a violation",
		MinKernel: "5.7"}, helper(ebpf.CGroupSockAddr, asm.FnGetCurrentComm)},
	// "bpf: enable bpf cgroup hooks to retrieve cgroup v2 and ancestor id" (Daniel Borkmann).
	{Feature{Name: "bpf_get_current_cgroup_id in sock_addr programs", Needed: "match cgroup owners",
		MinKernel: "5.7"}, helper(ebpf.CGroupSockAddr, asm.FnGetCurrentCgroupId)},
	{Feature{Name: "bpf_get_current_ancestor_cgroup_id in sock_addr programs", Needed: "match owners that are parent cgroups",
		MinKernel: "5.7"}, helper(ebpf.CGroupSockAddr, asm.FnGetCurrentAncestorCgroupId)},
	// "bpf: add netns cookie and enable it for bpf cgroup hooks" (f318903c0bf4).
	{Feature{Name: "bpf_get_netns_cookie in sock_addr programs", Needed: "tell the host's binds from those of other network namespaces",
		MinKernel: "5.7"}, helper(ebpf.CGroupSockAddr, asm.FnGetNetnsCookie)},
	// The ring buffer helpers are in bpf_base_func_proto, so every program
	// type got them with the ring buffer itself.
	{Feature{Name: "bpf_ringbuf_reserve in sock_addr programs", Needed: "report events",
		MinKernel: "5.8"}, helper(ebpf.CGroupSockAddr, asm.FnRingbufReserve)},
	{Feature{Name: "bpf_ringbuf_submit in sock_addr programs", Needed: "report events",
		MinKernel: "5.8"}, helper(ebpf.CGroupSockAddr, asm.FnRingbufSubmit)},
	// "bpf: add bpf_ktime_get_boot_ns()" (71d19214776e), in bpf_base_func_proto.
	{Feature{Name: "bpf_ktime_get_boot_ns in sock_addr programs", Needed: "rate-limit events",
		MinKernel: "5.8"}, helper(ebpf.CGroupSockAddr, asm.FnKtimeGetBootNs)},
	// "bpf: Add probe_read_{user, kernel} and probe_read_{user, kernel}_str helpers".
	{Feature{Name: "bpf_probe_read_kernel in raw tracepoint programs", Needed: "load its cgroup-watch programs",
		MinKernel: "5.5"}, helper(ebpf.RawTracepoint, asm.FnProbeReadKernel)},
	{Feature{Name: "bpf_probe_read_kernel_str in raw tracepoint programs", Needed: "report the path of a new cgroup",
		MinKernel: "5.5"}, helper(ebpf.RawTracepoint, asm.FnProbeReadKernelStr)},
	{Feature{Name: "bpf_ringbuf_reserve in raw tracepoint programs", Needed: "load its cgroup-watch programs",
		MinKernel: "5.8"}, helper(ebpf.RawTracepoint, asm.FnRingbufReserve)},

	// "cgroup: add tracepoints for basic operations" (Tejun Heo).
	{Feature{Name: "the cgroup_mkdir and cgroup_rmdir tracepoints", Needed: "put owners in force for cgroups created after it started",
		MinKernel: "4.13"}, probeCgroupTracepoints},

	// "bpf: Implement bpf_link-based cgroup BPF program attachment" (Andrii Nakryiko).
	{Feature{Name: "cgroup bpf_link", Needed: "pin its programs so that they outlive a restart and are taken over without a gap",
		MinKernel: "5.7"}, probeCgroupLink},
	// "net: retrieve netns cookie via getsocketopt" (Martynas Pumputis, 5.14);
	// before it, the loader reads the cookie with a cgroup/sock_create
	// program ("bpf: add netns cookie and enable it for bpf cgroup hooks", 5.7).
	{Feature{Name: "the host network namespace's cookie (SO_NETNS_COOKIE, or bpf_get_netns_cookie in sock_create programs)", Needed: "tell host binds from binds in other network namespaces",
		MinKernel: "5.7"}, probeNetnsCookie},
	// "btf: expose BTF info through sysfs" (Andrii Nakryiko).
	{Feature{Name: "kernel BTF (/sys/kernel/btf/vmlinux)", Needed: "relocate its cgroup-watch programs (CO-RE)",
		MinKernel: "5.4", Config: "CONFIG_DEBUG_INFO_BTF=y"}, probeBTF},
}

// Check probes the running kernel for every feature bindguard needs, in a
// fixed order. It needs the privileges bindguard runs with (root with
// CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, or CAP_SYS_ADMIN); without them
// most probes report an Err. The cgroup bpf_link probe creates and removes a
// temporary cgroup (see probeCgroupLink).
func Check() []Feature {
	// Before 5.11 probe objects are charged to RLIMIT_MEMLOCK (64 KiB by
	// default): without this a probe may fail with EPERM even for root.
	// Unprivileged callers cannot raise it; their probes say so themselves.
	_ = rlimit.RemoveMemlock()
	out := make([]Feature, len(probes))
	for i, p := range probes {
		out[i] = result(p.Feature, p.run())
	}
	return out
}

// Require probes the kernel and returns nil when it has every feature, or an
// error naming each missing feature (and each that could not be probed), one
// per line. When the process lacks capabilities bindguard runs with, the
// error is a *CapError naming exactly those, in front of the probes' error.
func Require() error { return WithCapabilities(MissingCapabilities(), Verify(Check())) }

// Verify returns nil when every feature in fs is present, or the error
// Require would return for them.
func Verify(fs []Feature) error { return verify(fs, KernelRelease(), missingCaps()) }

// KernelRelease returns the running kernel's release (uname -r).
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// Error describes the features a kernel lacks, one per line.
type Error struct {
	// Release is the kernel's release (uname -r).
	Release string
	// Features are the missing features and those that could not be probed.
	Features []Feature
	// MissingCaps are the capabilities bindguard runs with that the probing
	// process lacked. Without them a kernel may hide a helper from a program
	// type (bpf_get_current_comm needs CAP_PERFMON), so a feature reported
	// missing may only be denied to this process.
	MissingCaps []string
}

// Error has one line per feature, except that the features no probe was
// permitted to look for share one line: they all fail for the same reason.
func (e *Error) Error() string {
	var lines, denied []string
	for _, f := range e.Features {
		if f.Err != nil && errors.Is(f.Err, unix.EPERM) {
			denied = append(denied, f.Name)
			continue
		}
		lines = append(lines, f.describe(e.Release))
	}
	switch len(denied) {
	case 0:
	case 1:
		lines = append(lines, fmt.Sprintf("cannot tell whether kernel %s has %s: %s", e.Release, denied[0], e.deniedHint()))
	default:
		lines = append(lines, fmt.Sprintf("cannot tell whether kernel %s has %d of the features bindguard needs (%s, …): %s",
			e.Release, len(denied), denied[0], e.deniedHint()))
	}
	if len(e.MissingCaps) > 0 && len(denied) < len(e.Features) {
		lines = append(lines, fmt.Sprintf("(probed without %s: a feature reported missing may only be denied to this process)",
			strings.Join(e.MissingCaps, ", ")))
	}
	return strings.Join(lines, "\n")
}

// deniedHint says why probing was not permitted: the capabilities missing
// when there are, else what else denies bpf() to a process that has them.
func (e *Error) deniedHint() string {
	if len(e.MissingCaps) > 0 {
		return "probing is not permitted without " + strings.Join(e.MissingCaps, ", ")
	}
	return "probing is not permitted although the process has the capabilities bindguard runs with (or the kernel did not say which it has): " +
		"a seccomp profile (older runtimes' default profiles deny bpf() even with CAP_BPF), a security module (AppArmor's default container profile denies the pins in /sys/fs/bpf) or a user namespace may deny bpf()"
}

// Since is "Linux 5.8" or "Linux 5.4, CONFIG_DEBUG_INFO_BTF=y".
func (f Feature) Since() string {
	if f.Config != "" {
		return "Linux " + f.MinKernel + ", " + f.Config
	}
	return "Linux " + f.MinKernel
}

// describe is one line of an Error.
func (f Feature) describe(release string) string {
	if f.Err != nil {
		return fmt.Sprintf("cannot tell whether kernel %s has %s (%s): %v", release, f.Name, f.Since(), f.Err)
	}
	return fmt.Sprintf("kernel %s lacks %s (%s): bindguard cannot %s", release, f.Name, f.Since(), f.Needed)
}

func verify(fs []Feature, release string, caps []string) error {
	var bad []Feature
	for _, f := range fs {
		if !f.Present {
			bad = append(bad, f)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &Error{Release: release, Features: bad, MissingCaps: caps}
}

// result fills in Present and Err from a probe's error.
func result(f Feature, err error) Feature {
	switch {
	case err == nil:
		f.Present = true
	case errors.Is(err, ebpf.ErrNotSupported):
	default:
		f.Err = err
	}
	return f
}

func progType(pt ebpf.ProgramType) func() error {
	return func() error { return ebpffeatures.HaveProgramType(pt) }
}

func mapType(mt ebpf.MapType) func() error {
	return func() error { return ebpffeatures.HaveMapType(mt) }
}

func helper(pt ebpf.ProgramType, fn asm.BuiltinFunc) func() error {
	return func() error { return ebpffeatures.HaveProgramHelper(pt, fn) }
}

// probeCgroupLink attaches a program that allows every bind to a new, empty
// child cgroup and checks that the kernel made a bpf_link of it:
// link.AttachCgroup silently falls back to BPF_PROG_ATTACH, whose attachments
// cannot be pinned and have no link info.
//
// The child goes below this process's own cgroup, whose directory its owner
// (root) may write, or else below the cgroup2 root, whose directory is
// read-only (0555) to a root without CAP_DAC_OVERRIDE. When neither can be
// created (bindguard's units do not grant CAP_DAC_OVERRIDE, and a container
// may see its cgroup read-only), it asks for BPF_LINK_CREATE instead: that
// command came in the same commit as cgroup bpf_links, so either answers.
func probeCgroupLink() error {
	if err := ebpffeatures.HaveProgramType(ebpf.CGroupSockAddr); err != nil {
		return err
	}
	root, err := cgroups.Mount2()
	if err != nil {
		return err
	}
	parents := []string{root}
	if own, err := ownCgroup(); err == nil && own != "/" {
		parents = []string{filepath.Join(root, own), root}
	}
	var mkdirErr error
	for _, parent := range parents {
		dir, err := os.MkdirTemp(parent, "bindguard-probe-")
		if err != nil {
			mkdirErr = errors.Join(mkdirErr, err)
			continue
		}
		return attachCgroupLink(dir)
	}
	if !errors.Is(mkdirErr, unix.EACCES) && !errors.Is(mkdirErr, unix.EPERM) && !errors.Is(mkdirErr, unix.EROFS) {
		return fmt.Errorf("create probe cgroup: %w", mkdirErr)
	}
	return haveLinkCreate()
}

// attachCgroupLink attaches to dir, an empty cgroup, and removes dir.
func attachCgroupLink(dir string) (err error) {
	defer func() {
		if rmErr := unix.Rmdir(dir); rmErr != nil {
			err = errors.Join(err, fmt.Errorf("remove probe cgroup %s: %w", dir, rmErr))
		}
	}()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bg_probe_link",
		Type:         ebpf.CGroupSockAddr,
		AttachType:   ebpf.AttachCGroupInet4Bind,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		return fmt.Errorf("load probe program: %w", err)
	}
	defer prog.Close()
	l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: ebpf.AttachCGroupInet4Bind, Program: prog})
	if err != nil {
		return fmt.Errorf("attach probe program to %s: %w", dir, err)
	}
	defer l.Close()
	info, err := l.Info()
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("attached with BPF_PROG_ATTACH, not a bpf_link: %w", ebpf.ErrNotSupported)
	}
	if err != nil {
		return fmt.Errorf("probe link info: %w", err)
	}
	if info.Type != link.CgroupType {
		return fmt.Errorf("probe link has type %v, want a cgroup link", info.Type)
	}
	return nil
}

// haveLinkCreate issues BPF_LINK_CREATE for a cgroup attach type with
// invalid descriptors: a kernel with the command rejects them (EBADF), one
// without rejects the command (EINVAL).
func haveLinkCreate() error {
	var attr [64]byte // union bpf_attr's link_create: prog_fd, target_fd, attach_type, flags
	binary.NativeEndian.PutUint32(attr[0:], ^uint32(0))
	binary.NativeEndian.PutUint32(attr[4:], ^uint32(0))
	binary.NativeEndian.PutUint32(attr[8:], uint32(ebpf.AttachCGroupInet4Bind))
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_LINK_CREATE, uintptr(unsafe.Pointer(&attr[0])), uintptr(len(attr)))
	switch errno {
	case unix.EBADF:
		return nil
	case unix.EINVAL:
		return ebpf.ErrNotSupported
	case 0:
		unix.Close(int(fd))
		return errors.New("BPF_LINK_CREATE accepted invalid descriptors")
	}
	return fmt.Errorf("BPF_LINK_CREATE: %w", errno)
}

// ownCgroup returns this process's cgroup2 path from /proc/self/cgroup.
func ownCgroup() (string, error) { return cgroups.SelfCgroup() }

// probeCgroupTracepoints attaches a program that does nothing to the
// tracepoints the cgroup-watch programs use, and detaches it.
func probeCgroupTracepoints() error { return probeRawTracepoints("cgroup_mkdir", "cgroup_rmdir") }

func probeRawTracepoints(names ...string) error {
	if err := ebpffeatures.HaveProgramType(ebpf.RawTracepoint); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "bg_probe_tp",
		Type:         ebpf.RawTracepoint,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		return fmt.Errorf("load probe program: %w", err)
	}
	defer prog.Close()
	for _, name := range names {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: prog})
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("no tracepoint %s: %w", name, ebpf.ErrNotSupported)
		}
		if err != nil {
			return fmt.Errorf("attach probe program to %s: %w", name, err)
		}
		l.Close()
	}
	return nil
}

// probeNetnsCookie asks a socket for its network namespace's cookie, and
// where the kernel predates SO_NETNS_COOKIE, whether cgroup/sock_create
// programs may call bpf_get_netns_cookie (the loader's fallback).
func probeNetnsCookie() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("probe socket: %w", err)
	}
	defer unix.Close(fd)
	_, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if !errors.Is(err, unix.ENOPROTOOPT) {
		return err
	}
	return helper(ebpf.CGroupSock, asm.FnGetNetnsCookie)()
}

// probeBTF looks for the kernel's own BTF, which CO-RE relocations need.
func probeBTF() error {
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	if errors.Is(err, os.ErrNotExist) {
		return ebpf.ErrNotSupported
	}
	return err
}
