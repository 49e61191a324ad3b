package scan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

// iterRecordSize is sizeof(struct bg_sock) in bpf/iter.h.
const iterRecordSize = 56

// Values of struct bg_sock (bpf/iter.h).
const (
	ipprotoTCP     = 6
	ipprotoUDP     = 17
	tcpEstablished = 1
	tcpClose       = 7
	tcpListen      = 10
)

// maxIterBytes bounds what one iterator may return: about 4.8M sockets.
const maxIterBytes = 1 << 28

// runIterators loads the socket iterators, runs each once and returns their
// records. Loading fails on kernels without iterators (Linux 5.9), BTF or
// the fields read; the caller falls back to procfs.
func runIterators() ([]iterBgSock, error) {
	var objs iterObjects
	if err := loadIterObjects(&objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			// One line: it is the reason the output gives for the fallback.
			return nil, fmt.Errorf("load socket iterators: %v", ve)
		}
		return nil, fmt.Errorf("load socket iterators: %w", err)
	}
	defer objs.Close()
	var out []iterBgSock
	for _, p := range []*ebpf.Program{objs.BgIterTcp, objs.BgIterUdp, objs.BgIterBound} {
		recs, err := readIter(p)
		if err != nil {
			return nil, err
		}
		out = append(out, recs...)
	}
	return out, nil
}

// readIter attaches one iterator program, reads it to the end and decodes
// its records.
func readIter(p *ebpf.Program) ([]iterBgSock, error) {
	it, err := link.AttachIter(link.IterOptions{Program: p})
	if err != nil {
		return nil, fmt.Errorf("attach socket iterator %s: %w", p, err)
	}
	defer it.Close()
	r, err := it.Open()
	if err != nil {
		return nil, fmt.Errorf("open socket iterator %s: %w", p, err)
	}
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, maxIterBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read socket iterator %s: %w", p, err)
	}
	return decodeRecords(b)
}

// decodeRecords splits iterator output into struct bg_sock records.
func decodeRecords(b []byte) ([]iterBgSock, error) {
	if len(b) > maxIterBytes || len(b)%iterRecordSize != 0 {
		return nil, fmt.Errorf("socket iterator: %d bytes is not a whole number of %d-byte records", len(b), iterRecordSize)
	}
	out := make([]iterBgSock, len(b)/iterRecordSize)
	for i := range out {
		if _, err := binary.Decode(b[i*iterRecordSize:(i+1)*iterRecordSize], binary.NativeEndian, &out[i]); err != nil {
			return nil, fmt.Errorf("socket iterator record %d: %w", i, err)
		}
	}
	return out, nil
}

// iterSockets lists sockets with the iterators (or o.iterate) and resolves
// their cgroups.
func iterSockets(o Options) ([]Socket, error) {
	iterate := o.iterate
	if iterate == nil {
		iterate = runIterators
	}
	recs, err := iterate()
	if err != nil {
		return nil, err
	}
	netns, err := ownNetnsCookie()
	if err != nil {
		return nil, err
	}
	cg := o.Cgroups
	if cg == nil {
		if cg, err = cgroups.Open(""); err == nil {
			defer cg.Close()
		} else {
			cg = nil // cgroup ids stay unresolved
		}
	}
	return fromRecords(recs, netns, cg), nil
}

// ownNetnsCookie is the cookie of the caller's network namespace
// (SO_NETNS_COOKIE, Linux 5.14: older than the iterators' fields).
func ownNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("network namespace cookie: %w", err)
	}
	return c, nil
}

// fromRecords turns iterator records into sockets of the network namespace
// netns: each socket once, without the connections a listener accepted (they
// hold the listener's port, and no bind program ran for them). iter/tcp and
// iter/udp see only the caller's namespace; iter/task_file sees every
// process's sockets, in any namespace.
func fromRecords(recs []iterBgSock, netns uint64, cg *cgroups.FS) []Socket {
	listening := map[uint16][]netip.Addr{} // TCP listeners' addresses by port
	var socks []Socket
	seen := map[uint64]bool{}
	for _, r := range recs {
		s, ok := fromRecord(r)
		if !ok || r.NetnsCookie != netns || (s.Inode != 0 && seen[s.Inode]) {
			continue
		}
		seen[s.Inode] = s.Inode != 0
		if s.State == StateListen && s.Protocol == policy.TCP {
			listening[s.Port] = append(listening[s.Port], s.Address)
		}
		socks = append(socks, s)
	}
	out := socks[:0]
	for _, s := range socks {
		if s.Protocol == policy.TCP && s.State == StateConnected && accepted(s.Address, listening[s.Port]) {
			continue
		}
		if cg != nil && s.CgroupID != 0 {
			if p, err := cg.Path(s.CgroupID); err == nil {
				s.Cgroup = p
			}
		}
		out = append(out, s)
	}
	return out
}

// accepted reports whether a connected TCP socket on addr can be a
// connection accepted by one of the listeners on its port: one on the same
// address, or on a wildcard that covers it (:: covers IPv4 too). A client
// cannot hold a port a listener holds on the same or a covering address,
// so a client is never mistaken for an accepted connection.
func accepted(addr netip.Addr, listeners []netip.Addr) bool {
	for _, l := range listeners {
		switch {
		case l == addr, l.Unmap() == addr.Unmap():
			return true
		case l == netip.IPv6Unspecified():
			return true
		case l.Unmap() == netip.IPv4Unspecified() && addr.Unmap().Is4():
			return true
		}
	}
	return false
}

// fromRecord converts one record; false for one scan does not list.
func fromRecord(r iterBgSock) (Socket, bool) {
	s := Socket{Family: int(r.Family), Port: r.Port, UID: r.Uid, Inode: r.Inode,
		NetnsCookie: r.NetnsCookie, CgroupID: r.CgroupId, Bound: BoundKernel}
	if r.Userlocks&uint8(iterBgUserlocksBG_BINDPORT_LOCK) != 0 {
		s.Bound = BoundExplicit
	}
	switch r.Family {
	case 4:
		s.Address = netip.AddrFrom4([4]byte(r.Addr[:4]))
	case 6:
		s.Address = netip.AddrFrom16(r.Addr)
	default:
		return Socket{}, false
	}
	switch {
	case r.Protocol == ipprotoTCP && r.State == tcpListen:
		s.Protocol, s.State = policy.TCP, StateListen
	case r.Protocol == ipprotoTCP && r.State == tcpClose:
		s.Protocol, s.State = policy.TCP, StateBound
	case r.Protocol == ipprotoTCP:
		s.Protocol, s.State = policy.TCP, StateConnected
	case r.Protocol == ipprotoUDP && r.State == tcpEstablished:
		s.Protocol, s.State = policy.UDP, StateConnected
	case r.Protocol == ipprotoUDP:
		s.Protocol, s.State = policy.UDP, StateUnconnected
	default:
		return Socket{}, false
	}
	return s, s.Port != 0
}
