package scan

import (
	"cmp"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// Bound says who chose a socket's port.
type Bound int

const (
	// BoundUnknown: read from procfs, which does not say.
	BoundUnknown Bound = iota
	// BoundExplicit: the caller gave the port to bind() (SOCK_BINDPORT_LOCK).
	// The bind programs judged that port.
	BoundExplicit
	// BoundKernel: the kernel chose the port: bind(port 0), listen(),
	// connect() or sendto() without a bind. The bind programs saw port 0 or
	// nothing.
	BoundKernel
)

func (b Bound) String() string {
	switch b {
	case BoundExplicit:
		return "explicit"
	case BoundKernel:
		return "kernel"
	}
	return "unknown"
}

// Socket states as scan names them.
const (
	StateListen      = "listen"      // a TCP listener
	StateBound       = "bound"       // a TCP socket bound, neither listening nor connected
	StateConnected   = "connected"   // a TCP socket with a peer, or a connected UDP socket
	StateUnconnected = "unconnected" // a bound UDP socket without a peer
)

// Socket is one bound socket of the host network namespace.
type Socket struct {
	Protocol policy.Protocol
	// Family is 4 or 6: the socket's family. An IPv6 socket bound to an
	// IPv4-mapped address is family 6.
	Family  int
	Address netip.Addr
	Port    uint16
	// State is one of the State constants.
	State string
	// Bound says who chose the port.
	Bound Bound
	// UID owns the socket: the fsuid of the task that created it.
	UID   uint32
	Inode uint64
	// NetnsCookie is the socket's network namespace cookie; 0 from procfs.
	NetnsCookie uint64
	// CgroupID is the socket's own cgroup (the one it was created in, whose
	// bind programs ran); 0 from procfs. Cgroup is its registry path, the
	// cgroup the socket is judged with: from procfs, where the socket's
	// own is unknown, the holding process's. "" when neither is known.
	CgroupID uint64
	Cgroup   string
	// Unit is the systemd unit Cgroup shows.
	Unit string
	// PID is the lowest pid holding the socket open, 0 when none does.
	PID  int
	Comm string
	// ProcCgroup is the cgroup the holding process is in now ("" when PID
	// is 0 or the process went away); it differs from Cgroup when the
	// process moved or the descriptor was passed on.
	ProcCgroup string
}

// Connected reports whether the socket has a peer.
func (s Socket) Connected() bool { return s.State == StateConnected }

// Path names where a listing came from.
const (
	PathIterators = "iterators" // BPF socket iterators (bpf/iter.c)
	PathProcfs    = "procfs"    // /proc/net/{tcp,tcp6,udp,udp6}
)

// Listing is the sockets of the caller's network namespace and how they
// were found.
type Listing struct {
	Sockets []Socket
	// Path is PathIterators or PathProcfs; Why says why procfs was used.
	Path string
	Why  string
}

// Options say where to read from.
type Options struct {
	// Proc is where procfs is mounted; "" means /proc.
	Proc string
	// Procfs skips the socket iterators.
	Procfs bool
	// Cgroups resolves cgroup ids to paths; nil opens the cgroup2 mount.
	Cgroups *cgroups.FS

	// iterate replaces the iterators in tests.
	iterate func() ([]iterBgSock, error)
}

// Sockets lists the bound sockets of the caller's network namespace, sorted
// by protocol, port, address and pid: with the socket iterators where the
// kernel has them (Linux 5.9), from procfs otherwise; Listing.Path says which.
func Sockets(o Options) (Listing, error) {
	proc := o.Proc
	if proc == "" {
		proc = "/proc"
	}
	l := Listing{Path: PathIterators}
	var err error
	if o.Procfs {
		l.Path, l.Why = PathProcfs, "asked for"
	} else if l.Sockets, err = iterSockets(o); err != nil {
		l.Path, l.Why = PathProcfs, err.Error()
	}
	if l.Path == PathProcfs {
		if l.Sockets, err = procSockets(proc); err != nil {
			return Listing{}, fmt.Errorf("scan: %w", err)
		}
	}
	addHolders(proc, l.Sockets, l.Path == PathProcfs)
	slices.SortFunc(l.Sockets, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port),
			a.Address.Compare(b.Address), cmp.Compare(a.PID, b.PID), cmp.Compare(a.Inode, b.Inode))
	})
	return l, nil
}

// addHolders fills in the pid, comm and cgroup of the process holding each
// socket. With judgeByProcess (procfs), the holder's cgroup is also the one
// the socket is judged with.
func addHolders(proc string, socks []Socket, judgeByProcess bool) {
	inodes := make(map[uint64]bool, len(socks))
	for _, s := range socks {
		if s.Inode != 0 {
			inodes[s.Inode] = true
		}
	}
	pids := holders(proc, inodes)
	type info struct{ comm, cgroup string }
	procs := map[int]info{}
	for i := range socks {
		s := &socks[i]
		s.PID = pids[s.Inode]
		if s.PID != 0 {
			p, ok := procs[s.PID]
			if !ok {
				p.comm, p.cgroup = processInfo(proc, s.PID)
				procs[s.PID] = p
			}
			s.Comm, s.ProcCgroup = p.comm, p.cgroup
		}
		if judgeByProcess {
			s.Cgroup = s.ProcCgroup
		}
		// Only the system manager's unit names a socket's unit: a look-alike
		// in a delegated subtree is not the unit it imitates.
		if u, _, ok := cgroups.UnitOf("/", s.Cgroup); ok && s.Cgroup != "" {
			s.Unit = u
		}
	}
}

// holders maps each socket inode to the lowest pid with a file descriptor
// on it. Processes that go away while it looks are skipped.
func holders(proc string, inodes map[uint64]bool) map[uint64]int {
	out := map[uint64]int{}
	if len(inodes) == 0 {
		return out
	}
	des, err := os.ReadDir(proc)
	if err != nil {
		return out
	}
	var pids []int
	for _, de := range des {
		if pid, err := strconv.Atoi(de.Name()); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	for _, pid := range pids {
		fdDir := filepath.Join(proc, strconv.Itoa(pid), "fd")
		fds, err := os.ReadDir(fdDir)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			l, err := os.Readlink(filepath.Join(fdDir, fd.Name()))
			if err != nil {
				continue
			}
			n, ok := strings.CutPrefix(l, "socket:[")
			if !ok {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(n, "]"), 10, 64)
			if err != nil || !inodes[ino] {
				continue
			}
			if _, seen := out[ino]; !seen {
				out[ino] = pid
			}
		}
	}
	return out
}

// processInfo returns the command name and cgroup2 path of a process, or
// empty strings for what it cannot read.
func processInfo(proc string, pid int) (comm, cgroup string) {
	dir := filepath.Join(proc, strconv.Itoa(pid))
	if b, err := os.ReadFile(filepath.Join(dir, "comm")); err == nil {
		comm = strings.TrimSuffix(string(b), "\n")
	}
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup")); err == nil {
		cgroup = unifiedCgroup(string(b))
	}
	return comm, cgroup
}

// unifiedCgroup returns the path of the "0::PATH" line of /proc/PID/cgroup.
func unifiedCgroup(s string) string {
	p, _ := cgroups.ProcCgroup(s)
	return p
}
