package scan

import (
	"encoding/binary"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/bindguard/bindguard/internal/testutils"
	"github.com/bindguard/bindguard/policy"
)

// The Go record, the decoder's size and struct bg_sock in the object's BTF
// (what the C compiler laid out) agree.
func TestRecordSize(t *testing.T) {
	spec, err := loadIter()
	if err != nil {
		t.Fatal(err)
	}
	var st *btf.Struct
	if err := spec.Types.TypeByName("bg_sock", &st); err != nil {
		t.Fatal(err)
	}
	c, err := btf.Sizeof(st)
	if err != nil {
		t.Fatal(err)
	}
	if n := binary.Size(iterBgSock{}); n != iterRecordSize || c != iterRecordSize {
		t.Fatalf("binary.Size(iterBgSock) = %d, sizeof(struct bg_sock) = %d, iterRecordSize = %d", n, c, iterRecordSize)
	}
}

func TestDecodeRecords(t *testing.T) {
	for _, n := range []int{1, 55, 57, 111} {
		if _, err := decodeRecords(make([]byte, n)); err == nil {
			t.Errorf("%d bytes: no error", n)
		}
	}
	b := make([]byte, 2*iterRecordSize)
	binary.NativeEndian.PutUint64(b[iterRecordSize:], 77) // cgroup_id of the second
	b[iterRecordSize+44] = 0x50                           // port 80 (host order, little end first)
	recs, err := decodeRecords(b)
	if err != nil || len(recs) != 2 || recs[1].CgroupId != 77 || recs[1].Port != 80 {
		t.Fatalf("decodeRecords = %+v, %v", recs, err)
	}
}

func rec(proto, family, state, locks uint8, addr string, port uint16, inode uint64) iterBgSock {
	r := iterBgSock{Protocol: proto, Family: family, State: state, Userlocks: locks, Port: port, Inode: inode, CgroupId: 9, NetnsCookie: 1}
	a := netip.MustParseAddr(addr)
	if family == 4 {
		copy(r.Addr[:], a.AsSlice())
	} else {
		r.Addr = a.As16()
	}
	return r
}

func TestFromRecords(t *testing.T) {
	const port = uint8(iterBgUserlocksBG_BINDPORT_LOCK)
	recs := []iterBgSock{
		rec(ipprotoTCP, 4, tcpListen, port, "0.0.0.0", 80, 1),
		rec(ipprotoTCP, 4, tcpEstablished, port, "10.0.0.1", 80, 2), // accepted by the listener on 0.0.0.0:80
		rec(ipprotoTCP, 6, tcpListen, port, "::1", 81, 20),
		rec(ipprotoTCP, 4, tcpEstablished, 0, "127.0.0.1", 81, 21),  // a client on 81: the listener is on ::1 only
		rec(ipprotoTCP, 6, tcpListen, 0, "::", 40001, 3),            // listen() without bind
		rec(ipprotoTCP, 4, tcpEstablished, 0, "10.0.0.1", 50000, 4), // connect autobind
		rec(ipprotoTCP, 4, tcpClose, port, "127.0.0.1", 9000, 5),    // bound, not listening
		rec(ipprotoUDP, 4, tcpClose, 0, "0.0.0.0", 50001, 6),        // sendto autobind
		rec(ipprotoUDP, 6, tcpEstablished, port, "::1", 53, 7),      // connected, explicit
		rec(ipprotoUDP, 6, tcpEstablished, port, "::1", 53, 7),      // the same socket twice
		rec(ipprotoTCP, 4, tcpListen, port, "0.0.0.0", 0, 8),        // no port: not listed
		rec(132, 4, tcpListen, port, "0.0.0.0", 5000, 9),            // SCTP: not listed
		{Family: 3, Protocol: ipprotoTCP, State: tcpListen, Port: 1, Inode: 10, NetnsCookie: 1},
	}
	other := rec(ipprotoTCP, 4, tcpClose, port, "0.0.0.0", 9001, 11) // bound in another namespace (task_file)
	other.NetnsCookie = 2
	recs = append(recs, other)
	got := fromRecords(recs, 1, nil)
	type row struct {
		proto       policy.Protocol
		family      int
		addr        string
		port        uint16
		state       string
		bound       Bound
		inode, cgid uint64
	}
	want := []row{
		{policy.TCP, 4, "0.0.0.0", 80, StateListen, BoundExplicit, 1, 9},
		{policy.TCP, 6, "::1", 81, StateListen, BoundExplicit, 20, 9},
		{policy.TCP, 4, "127.0.0.1", 81, StateConnected, BoundKernel, 21, 9},
		{policy.TCP, 6, "::", 40001, StateListen, BoundKernel, 3, 9},
		{policy.TCP, 4, "10.0.0.1", 50000, StateConnected, BoundKernel, 4, 9},
		{policy.TCP, 4, "127.0.0.1", 9000, StateBound, BoundExplicit, 5, 9},
		{policy.UDP, 4, "0.0.0.0", 50001, StateUnconnected, BoundKernel, 6, 9},
		{policy.UDP, 6, "::1", 53, StateConnected, BoundExplicit, 7, 9},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d sockets, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		s := got[i]
		if g := (row{s.Protocol, s.Family, s.Address.String(), s.Port, s.State, s.Bound, s.Inode, s.CgroupID}); g != w {
			t.Errorf("socket %d = %+v, want %+v", i, g, w)
		}
	}
}

const judgeRegistry = `apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - {port: 40000, process: owned, owners: [{cgroup: /owner}]}
  - {port: 40001, process: local, bind: localhost}
  - {port: 40002, process: open}
  - {port: 40004, process: audited, owners: [{uid: 7}], mode: audit}
removed:
  - {port: 40003, process: old, removed: "1.0"}
`

func TestJudgeBound(t *testing.T) {
	reg, err := policy.Parse("r.yaml", []byte(judgeRegistry))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		bound   Bound
		port    uint16
		addr    string
		cgroup  string
		mode    policy.Mode
		verdict string
		reason  string
	}{
		{"explicit undeclared", BoundExplicit, 45000, "0.0.0.0", "/x", policy.ModeEnforce, "deny", "undeclared"},
		{"kernel undeclared", BoundKernel, 45000, "0.0.0.0", "/x", policy.ModeEnforce, "ephemeral", ""},
		{"procfs undeclared judged as explicit", BoundUnknown, 45000, "0.0.0.0", "/x", policy.ModeEnforce, "deny", "undeclared"},
		{"kernel on owned port, not owner", BoundKernel, 40000, "0.0.0.0", "/x", policy.ModeEnforce, "deny", "autobind"},
		{"kernel on owned port, audit node", BoundKernel, 40000, "0.0.0.0", "/x", policy.ModeAudit, "audit", "autobind"},
		{"kernel on owned port, owner", BoundKernel, 40000, "0.0.0.0", "/owner/a", policy.ModeEnforce, "ephemeral", ""},
		{"explicit on owned port, owner", BoundExplicit, 40000, "0.0.0.0", "/owner", policy.ModeEnforce, "allow", ""},
		{"kernel on localhost-only, wildcard", BoundKernel, 40001, "::", "/x", policy.ModeEnforce, "deny", "autobind"},
		{"kernel on localhost-only, loopback", BoundKernel, 40001, "127.0.0.1", "/x", policy.ModeEnforce, "ephemeral", ""},
		{"kernel on an open declared port", BoundKernel, 40002, "0.0.0.0", "/x", policy.ModeEnforce, "ephemeral", ""},
		{"kernel on removed port", BoundKernel, 40003, "0.0.0.0", "/x", policy.ModeEnforce, "deny", "autobind"},
		{"kernel on audit-only rule", BoundKernel, 40004, "0.0.0.0", "/x", policy.ModeEnforce, "audit", "autobind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Socket{Protocol: policy.TCP, Family: 4, Address: netip.MustParseAddr(tt.addr), Port: tt.port,
				State: StateListen, Bound: tt.bound, Cgroup: tt.cgroup, UID: 1000}
			f := Judge(c, tt.mode, []Socket{s}, policy.DecideOptions{})[0]
			if f.Verdict != tt.verdict || f.Reason != tt.reason {
				t.Errorf("verdict %q reason %q, want %q %q (decision %+v)", f.Verdict, f.Reason, tt.verdict, tt.reason, f.Decision)
			}
			sum := Summarize([]Finding{f})
			if (sum.Audited+sum.Denied > 0) != (tt.reason != "") || (sum.Ephemeral == 1) != (tt.verdict == "ephemeral") {
				t.Errorf("summary %+v for verdict %s reason %q", sum, f.Verdict, tt.reason)
			}
		})
	}
}

// openSock opens a socket of this process, bound to port (0: the kernel
// chooses) unless noBind; listen makes it listen.
func openSock(t *testing.T, typ int, port int, noBind, listen bool) uint64 {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if !noBind {
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatalf("bind %d: %v", port, err)
		}
	}
	if listen {
		if err := unix.Listen(fd, 4); err != nil {
			t.Fatal(err)
		}
	}
	if typ == unix.SOCK_DGRAM && noBind {
		if err := unix.Sendto(fd, []byte("x"), 0, &unix.SockaddrInet4{Port: 9, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestIteratorsLive reads sockets of this process through the real
// iterators: who chose each port, its state, and the socket's own cgroup.
func TestIteratorsLive(t *testing.T) {
	testutils.Privileged(t)
	tests := []struct {
		name   string
		typ    int
		port   int
		noBind bool
		listen bool
		state  string
		bound  Bound
	}{
		{"explicit listener", unix.SOCK_STREAM, 45917, false, true, StateListen, BoundExplicit},
		{"bind port 0 and listen", unix.SOCK_STREAM, 0, false, true, StateListen, BoundKernel},
		{"listen without bind", unix.SOCK_STREAM, 0, true, true, StateListen, BoundKernel},
		{"bound, not listening", unix.SOCK_STREAM, 45918, false, false, StateBound, BoundExplicit},
		{"udp explicit", unix.SOCK_DGRAM, 45919, false, false, StateUnconnected, BoundExplicit},
		{"udp sendto autobind", unix.SOCK_DGRAM, 0, true, false, StateUnconnected, BoundKernel},
	}
	inodes := map[uint64]int{}
	for i, tt := range tests {
		inodes[openSock(t, tt.typ, tt.port, tt.noBind, tt.listen)] = i
	}
	l, err := Sockets(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Path != PathIterators {
		t.Fatalf("path %s (%s), want iterators", l.Path, l.Why)
	}
	b, _ := os.ReadFile("/proc/self/cgroup")
	myCgroup := unifiedCgroup(string(b))
	found := map[int]bool{}
	for _, s := range l.Sockets {
		i, ok := inodes[s.Inode]
		if !ok {
			continue
		}
		found[i] = true
		tt := tests[i]
		t.Run(tt.name, func(t *testing.T) {
			if s.State != tt.state || s.Bound != tt.bound || s.PID != os.Getpid() || s.Cgroup != myCgroup || s.CgroupID == 0 {
				t.Errorf("socket %+v: want state %s, bound %s, pid %d, cgroup %s", s, tt.state, tt.bound, os.Getpid(), myCgroup)
			}
			if tt.port != 0 && int(s.Port) != tt.port {
				t.Errorf("port %d, want %d", s.Port, tt.port)
			}
		})
	}
	for i, tt := range tests {
		if !found[i] {
			t.Errorf("%s: not listed", tt.name)
		}
	}
}

func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"0100007F:0CEA", "00000000000000000000000001000000:1F90", ":", "0100007F:", "0100007F:10000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, _, err := parseEndpoint(s)
		if err != nil {
			return
		}
		if !a.IsValid() || (a.Is4() != (len(s) > 8 && strings.Index(s, ":") == 8)) {
			t.Errorf("parseEndpoint(%q) = %s", s, a)
		}
	})
}

func FuzzDecodeRecords(f *testing.F) {
	f.Add(make([]byte, iterRecordSize))
	f.Add(make([]byte, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := decodeRecords(b)
		if err != nil {
			return
		}
		for _, s := range fromRecords(recs, 0, nil) {
			if s.Port == 0 || !s.Address.IsValid() || (s.Family != 4 && s.Family != 6) {
				t.Errorf("listed %+v", s)
			}
		}
	})
}
