package scan

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/bindguard/bindguard/policy"
)

// procSockets reads /proc/net/{tcp,tcp6,udp,udp6}: the path used where the
// socket iterators are missing. It cannot tell a kernel-chosen port from an
// explicit one, nor see a socket's own cgroup or TCP sockets bound but not
// listening; its sockets have Bound == BoundUnknown.
func procSockets(proc string) ([]Socket, error) {
	eph, err := ephemeralRange(filepath.Join(proc, "sys/net/ipv4/ip_local_port_range"))
	if err != nil {
		return nil, err
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
			return nil, err
		}
		s, err := parseTable(f, t.proto, t.family, eph)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s/net/%s: %w", proc, t.file, err)
		}
		socks = append(socks, s...)
	}
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
		connected, st := false, StateUnconnected
		switch {
		case proto == policy.TCP && state == stateListen:
			st = StateListen
		case proto == policy.UDP && state == stateClose:
		case proto == policy.UDP && state == stateEstablished:
			connected, st = true, StateConnected
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
			State: st, UID: uint32(uid), Inode: inode})
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
