package scan

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// Socket is one bound socket of the host network namespace.
type Socket struct {
	Protocol policy.Protocol
	// Family is 4 or 6: the socket's family. An IPv6 socket bound to an
	// IPv4-mapped address is family 6.
	Family  int
	Address netip.Addr
	Port    uint16
	// Connected is set for a UDP socket with a peer. TCP sockets are
	// listeners and never connected.
	Connected bool
	// UID owns the socket: the fsuid of the task that created it.
	UID   uint32
	Inode uint64
	// PID is the lowest pid holding the socket open, 0 when none does.
	PID  int
	Comm string
	// Cgroup is the registry path of the process's cgroup ("" when PID is 0
	// or the process went away); Unit the systemd unit that path shows.
	Cgroup string
	Unit   string
}

// Options say where to read from.
type Options struct {
	// Proc is where procfs is mounted; "" means /proc.
	Proc string
}

// Sockets lists the TCP listeners and bound UDP sockets of the caller's
// network namespace, sorted by protocol, port, address and pid. A connected
// UDP socket whose port lies in the ephemeral range (ip_local_port_range) is
// left out: it was bound implicitly by connect or sendto, which no bind
// program sees; one outside that range was bound explicitly and is listed.
func Sockets(o Options) ([]Socket, error) {
	proc := o.Proc
	if proc == "" {
		proc = "/proc"
	}
	eph, err := ephemeralRange(filepath.Join(proc, "sys/net/ipv4/ip_local_port_range"))
	if err != nil {
		return nil, fmt.Errorf("scan: %w", err)
	}
	var socks []Socket
	for _, t := range []struct {
		file   string
		proto  policy.Protocol
		family int
	}{
		{"tcp", policy.TCP, 4}, {"tcp6", policy.TCP, 6},
		{"udp", policy.UDP, 4}, {"udp6", policy.UDP, 6},
	} {
		f, err := os.Open(filepath.Join(proc, "net", t.file))
		if errors.Is(err, fs.ErrNotExist) && t.family == 6 {
			continue // IPv6 disabled
		}
		if err != nil {
			return nil, fmt.Errorf("scan: %w", err)
		}
		s, err := parseTable(f, t.proto, t.family, eph)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("scan: %s/net/%s: %w", proc, t.file, err)
		}
		socks = append(socks, s...)
	}
	inodes := make(map[uint64]bool, len(socks))
	for _, s := range socks {
		if s.Inode != 0 {
			inodes[s.Inode] = true
		}
	}
	pids := holders(proc, inodes)
	procs := map[int]*Socket{}
	for i := range socks {
		s := &socks[i]
		s.PID = pids[s.Inode]
		if s.PID == 0 {
			continue
		}
		if p, ok := procs[s.PID]; ok {
			s.Comm, s.Cgroup, s.Unit = p.Comm, p.Cgroup, p.Unit
			continue
		}
		s.Comm, s.Cgroup = processInfo(proc, s.PID)
		if s.Cgroup != "" {
			s.Unit = cgroups.Unit(s.Cgroup)
		}
		procs[s.PID] = s
	}
	slices.SortFunc(socks, func(a, b Socket) int {
		return cmp.Or(cmp.Compare(a.Protocol, b.Protocol), cmp.Compare(a.Port, b.Port),
			a.Address.Compare(b.Address), cmp.Compare(a.PID, b.PID), cmp.Compare(a.Inode, b.Inode))
	})
	return socks, nil
}

// portRange is an inclusive range of ports.
type portRange struct{ lo, hi uint16 }

func (r portRange) contains(p uint16) bool { return p >= r.lo && p <= r.hi }

func ephemeralRange(path string) (portRange, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return portRange{}, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return portRange{}, fmt.Errorf("%s: want two ports, got %q", path, b)
	}
	lo, err1 := strconv.ParseUint(f[0], 10, 16)
	hi, err2 := strconv.ParseUint(f[1], 10, 16)
	if err := errors.Join(err1, err2); err != nil {
		return portRange{}, fmt.Errorf("%s: %w", path, err)
	}
	return portRange{uint16(lo), uint16(hi)}, nil
}

// Socket states of /proc/net/{tcp,udp} (include/net/tcp_states.h).
const (
	stateEstablished = 0x01 // a connected UDP socket
	stateClose       = 0x07 // an unconnected UDP socket
	stateListen      = 0x0a
)

// parseTable reads one of /proc/net/{tcp,tcp6,udp,udp6}:
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//	 0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1060 ...
//
// Addresses are the kernel's 32-bit words printed in host byte order; ports
// are in host byte order already.
func parseTable(r io.Reader, proto policy.Protocol, family int, ephemeral portRange) ([]Socket, error) {
	var out []Socket
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 4096), 1<<20)
	first := true
	for s.Scan() {
		if first { // the header
			first = false
			continue
		}
		f := strings.Fields(s.Text())
		if len(f) < 10 {
			continue
		}
		state, err := strconv.ParseUint(f[3], 16, 8)
		if err != nil {
			return nil, fmt.Errorf("bad state %q", f[3])
		}
		connected := false
		switch {
		case proto == policy.TCP && state == stateListen:
		case proto == policy.UDP && state == stateClose:
		case proto == policy.UDP && state == stateEstablished:
			connected = true
		default:
			continue
		}
		addr, port, err := parseEndpoint(f[1])
		if err != nil {
			return nil, err
		}
		if port == 0 || (connected && ephemeral.contains(port)) {
			continue
		}
		uid, err := strconv.ParseUint(f[7], 10, 32)
		if err != nil {
			return nil, fmt.Errorf("bad uid %q", f[7])
		}
		inode, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("bad inode %q", f[9])
		}
		out = append(out, Socket{Protocol: proto, Family: family, Address: addr, Port: port,
			Connected: connected, UID: uint32(uid), Inode: inode})
	}
	return out, s.Err()
}

// parseEndpoint parses "0100007F:0CEA" or the 32-hex-digit IPv6 form.
func parseEndpoint(s string) (netip.Addr, uint16, error) {
	a, p, ok := strings.Cut(s, ":")
	if !ok || (len(a) != 8 && len(a) != 32) {
		return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
	}
	port, err := strconv.ParseUint(p, 16, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("bad port in %q", s)
	}
	var b [16]byte
	for i := 0; i < len(a)/8; i++ {
		w, err := strconv.ParseUint(a[8*i:8*i+8], 16, 32)
		if err != nil {
			return netip.Addr{}, 0, fmt.Errorf("bad address %q", s)
		}
		binary.NativeEndian.PutUint32(b[4*i:], uint32(w))
	}
	if len(a) == 8 {
		return netip.AddrFrom4([4]byte(b[:4])), uint16(port), nil
	}
	return netip.AddrFrom16(b), uint16(port), nil
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
	for line := range strings.Lines(s) {
		if p, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), "0::"); ok {
			return strings.TrimSuffix(p, " (deleted)")
		}
	}
	return ""
}

// Finding is a socket and the verdict a bind of it would get now.
type Finding struct {
	Socket
	Decision policy.Decision
}

// Judge decides each socket as a bind by its process, in the host network
// namespace, under policy c on a node in mode. Sockets without a process
// are judged as binds from the cgroup2 root.
func Judge(c *policy.Compiled, mode policy.Mode, socks []Socket, opts policy.DecideOptions) []Finding {
	out := make([]Finding, len(socks))
	for i, s := range socks {
		a := policy.BindAttempt{Port: s.Port, Protocol: s.Protocol, Family: policy.Family(s.Family), Address: s.Address,
			Cgroup: s.Cgroup, UID: s.UID, HostNetns: true}
		out[i] = Finding{Socket: s, Decision: policy.Decide(c, mode, a, opts)}
	}
	return out
}

// Summary counts findings.
type Summary struct {
	Sockets int
	Allowed int
	// Violations counts violations by reason; Audited and Denied by verdict.
	Violations map[string]int
	Audited    int
	Denied     int
}

// Summarize counts findings by verdict and reason.
func Summarize(fs []Finding) Summary {
	s := Summary{Sockets: len(fs), Violations: map[string]int{}}
	for _, f := range fs {
		switch f.Decision.Verdict {
		case policy.Allow:
			s.Allowed++
		case policy.Audit:
			s.Audited++
		case policy.Deny:
			s.Denied++
		}
		if f.Decision.Reason != "" {
			s.Violations[string(f.Decision.Reason)]++
		}
	}
	return s
}
