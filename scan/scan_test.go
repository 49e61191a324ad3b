package scan

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy"
)

const tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func TestParseEndpoint(t *testing.T) {
	tests := []struct {
		in   string
		addr string
		port uint16
	}{
		{"0100007F:0CEA", "127.0.0.1", 3306},
		{"00000000:0016", "0.0.0.0", 22},
		{"020200C0:FFFF", "192.0.2.2", 65535},
		{"00000000000000000000000001000000:1F90", "::1", 8080},
		{"00000000000000000000000000000000:0035", "::", 53},
		{"0000000000000000FFFF00000100007F:0050", "::ffff:127.0.0.1", 80},
		{"B80D0120000000000000000001000000:0001", "2001:db8::1", 1},
	}
	for _, tt := range tests {
		a, p, err := parseEndpoint(tt.in)
		if err != nil {
			t.Errorf("parseEndpoint(%q): %v", tt.in, err)
			continue
		}
		if a != netip.MustParseAddr(tt.addr) || p != tt.port {
			t.Errorf("parseEndpoint(%q) = %s %d, want %s %d", tt.in, a, p, tt.addr, tt.port)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:", "0100007:0016", "0100007G:0016", "0100007F:10000"} {
		if _, _, err := parseEndpoint(bad); err == nil {
			t.Errorf("parseEndpoint(%q): no error", bad)
		}
	}
}

func TestParseTable(t *testing.T) {
	eph := portRange{32768, 60999}
	tcp := tcpHeader +
		"   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0\n" +
		"   1: 020200C0:9BD2 507100CB:01BB 01 00000000:00000000 03:0000145A 00000000  1000        0 1002 3 0\n" + // established: not a listener
		"   2: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1003 1 0\n"
	got, err := parseTable(strings.NewReader(tcp), policy.TCP, 4, eph)
	if err != nil {
		t.Fatal(err)
	}
	want := []Socket{
		{Protocol: policy.TCP, Family: 4, Address: netip.MustParseAddr("0.0.0.0"), Port: 22, State: StateListen, UID: 0, Inode: 1001},
		{Protocol: policy.TCP, Family: 4, Address: netip.MustParseAddr("127.0.0.1"), Port: 3306, State: StateListen, UID: 999, Inode: 1003},
	}
	if !equalSockets(got, want) {
		t.Errorf("tcp:\n got %+v\nwant %+v", got, want)
	}

	udp := tcpHeader +
		"  10: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000   101        0 2001 2 0 0\n" + // unconnected
		"  11: 020200C0:9BD2 08080808:0035 01 00000000:00000000 00:00000000 00000000  1000        0 2002 2 0 0\n" + // connected, ephemeral: implicit
		"  12: 020200C0:007B 08080808:007B 01 00000000:00000000 00:00000000 00000000     0        0 2003 2 0 0\n" + // connected, explicit port 123
		"  13: 00000000:0000 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 2004 2 0 0\n" // port 0
	got, err = parseTable(strings.NewReader(udp), policy.UDP, 4, eph)
	if err != nil {
		t.Fatal(err)
	}
	want = []Socket{
		{Protocol: policy.UDP, Family: 4, Address: netip.MustParseAddr("0.0.0.0"), Port: 53, State: StateUnconnected, UID: 101, Inode: 2001},
		{Protocol: policy.UDP, Family: 4, Address: netip.MustParseAddr("192.0.2.2"), Port: 123, State: StateConnected, Inode: 2003},
	}
	if !equalSockets(got, want) {
		t.Errorf("udp:\n got %+v\nwant %+v", got, want)
	}

	if _, err := parseTable(strings.NewReader(tcpHeader+"0: 0100007F:0CEA 00000000:0000 0A 0 0 0 x 0 1\n"), policy.TCP, 4, eph); err == nil {
		t.Error("bad uid: no error")
	}
}

func equalSockets(a, b []Socket) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestUnifiedCgroup(t *testing.T) {
	tests := map[string]string{
		"0::/system.slice/sshd.service\n":            "/system.slice/sshd.service",
		"12:memory:/x\n1:name=systemd:/y\n0::/a/b\n": "/a/b",
		"0::/\n":               "/",
		"4:memory:/only-v1\n":  "",
		"0::/gone (deleted)\n": "/gone",
		"0::/system.slice/containerd.service/kubepods.slice": "/system.slice/containerd.service/kubepods.slice",
	}
	for in, want := range tests {
		if got := unifiedCgroup(in); got != want {
			t.Errorf("unifiedCgroup(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeProc writes a procfs tree with the given files.
func fakeProc(t *testing.T, files map[string]string, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range links {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fakeNode is a procfs with four sockets: sshd, web and mysqld listeners,
// and a kernel NFS socket no process holds.
func fakeNode(t *testing.T) string {
	return fakeProc(t, map[string]string{
		"sys/net/ipv4/ip_local_port_range": "32768\t60999\n",
		"net/tcp": tcpHeader +
			"   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0\n" +
			"   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0\n",
		"net/tcp6": tcpHeader +
			"   0: 00000000000000000000000000000000:0CEA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1003 1 0\n",
		"net/udp": tcpHeader +
			"   0: 00000000:0801 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 0 2 0 0\n", // a kernel socket: no inode
		"net/udp6":   tcpHeader,
		"100/comm":   "sshd\n",
		"100/cgroup": "0::/system.slice/ssh.service\n",
		"200/comm":   "web\n",
		"200/cgroup": "1:name=systemd:/x\n0::/user.slice/app\n",
		"300/comm":   "mysqld\n",
		"300/cgroup": "0::/system.slice/mysql.service\n",
	}, map[string]string{
		"100/fd/0": "/dev/null",
		"100/fd/3": "socket:[1001]",
		"200/fd/7": "socket:[1002]",
		"300/fd/9": "socket:[1003]",
		"301/fd/9": "socket:[1003]", // shared after fork: the lower pid is reported
	})
}

// TestSocketsFallback fakes the iterators' absence: the procfs path is
// taken, and the listing says so and why.
func TestSocketsFallback(t *testing.T) {
	missing := func() ([]iterBgSock, error) { return nil, errors.New("load socket iterators: not supported") }
	l, err := Sockets(Options{Proc: fakeNode(t), iterate: missing})
	if err != nil {
		t.Fatal(err)
	}
	if l.Path != PathProcfs || l.Why != "load socket iterators: not supported" || len(l.Sockets) != 4 {
		t.Errorf("path %q (%q), %d sockets, want procfs with the iterators' error, 4", l.Path, l.Why, len(l.Sockets))
	}
	if r := (Report{Listing: l}); !strings.Contains(r.PathLine(), "/proc/net (load socket iterators: not supported)") {
		t.Errorf("path line %q does not say procfs was used and why", r.PathLine())
	}
	for _, s := range l.Sockets {
		if s.Bound != BoundUnknown || s.CgroupID != 0 || s.Cgroup != s.ProcCgroup {
			t.Errorf("procfs socket %+v: want bound unknown, no cgroup id, judged by the holder's cgroup", s)
		}
	}
}

func TestSocketsJudge(t *testing.T) {
	l, err := Sockets(Options{Proc: fakeNode(t), Procfs: true})
	if err != nil {
		t.Fatal(err)
	}
	socks := l.Sockets
	type row struct {
		proto  policy.Protocol
		port   uint16
		pid    int
		comm   string
		cgroup string
		unit   string
	}
	want := []row{
		{policy.TCP, 22, 100, "sshd", "/system.slice/ssh.service", "ssh.service"},
		{policy.TCP, 3306, 300, "mysqld", "/system.slice/mysql.service", "mysql.service"},
		{policy.TCP, 8080, 200, "web", "/user.slice/app", ""},
		{policy.UDP, 2049, 0, "", "", ""},
	}
	if len(socks) != len(want) {
		t.Fatalf("got %d sockets, want %d: %+v", len(socks), len(want), socks)
	}
	for i, w := range want {
		s := socks[i]
		if g := (row{s.Protocol, s.Port, s.PID, s.Comm, s.Cgroup, s.Unit}); g != w {
			t.Errorf("socket %d = %+v, want %+v", i, g, w)
		}
	}

	reg, err := policy.Parse("r.yaml", []byte(`apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - {port: 22, process: sshd, owners: [{unit: ssh.service}]}
  - {port: 3306, process: mysql, bind: localhost}
  - {port: 2049, protocol: udp, process: nfs, owners: [{uid: 0}]}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := Judge(c, policy.ModeEnforce, socks, policy.DecideOptions{})
	wantReasons := []string{"", string(policy.ReasonAddress), string(policy.ReasonUndeclared), ""}
	for i, f := range fs {
		if f.Reason != wantReasons[i] {
			t.Errorf("%d/%s: reason %q, want %q", f.Port, f.Protocol, f.Reason, wantReasons[i])
		}
	}
	sum := Summarize(fs)
	if sum.Sockets != 4 || sum.Allowed != 2 || sum.Denied != 2 || sum.Audited != 0 ||
		sum.Violations[string(policy.ReasonAddress)] != 1 || sum.Violations[string(policy.ReasonUndeclared)] != 1 {
		t.Errorf("summary %+v", sum)
	}
	if sum := Summarize(Judge(c, policy.ModeAudit, socks, policy.DecideOptions{})); sum.Audited != 2 || sum.Denied != 0 {
		t.Errorf("audit summary %+v", sum)
	}
}

// TestSocketsLive finds a listener of this process in the real procfs.
func TestSocketsLive(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	defer u.Close()
	ls, err := Sockets(Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("path %s %s", ls.Path, ls.Why)
	socks := ls.Sockets
	find := func(proto policy.Protocol, addr net.Addr) *Socket {
		ap := netip.MustParseAddrPort(addr.String())
		for i, s := range socks {
			if s.Protocol == proto && s.Port == ap.Port() && s.Address == ap.Addr() {
				return &socks[i]
			}
		}
		t.Errorf("%s %s not found", proto, addr)
		return nil
	}
	for _, s := range []*Socket{find(policy.TCP, l.Addr()), find(policy.UDP, u.LocalAddr())} {
		if s == nil {
			continue
		}
		if s.PID != os.Getpid() || s.UID != uint32(os.Geteuid()) || s.Comm == "" {
			t.Errorf("socket %+v: want pid %d, uid %d, a comm", *s, os.Getpid(), os.Geteuid())
		}
		want := 4
		if s.Protocol == policy.UDP {
			want = 6
		}
		if s.Family != want {
			t.Errorf("socket %+v: family %d, want %d", *s, s.Family, want)
		}
	}
}

func FuzzParseTable(f *testing.F) {
	f.Add(tcpHeader + "   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1060 1 0\n")
	f.Add(tcpHeader + "   0: 0000000000000000FFFF00000100007F:0050 00000000000000000000000000000000:0000 07 0 0 0 1000 0 7 2 0 0\n")
	f.Add(tcpHeader + "   0: 020200C0:007B 08080808:007B 01 0 0 0 0 0 9\n")
	f.Fuzz(func(t *testing.T, table string) {
		for _, proto := range []policy.Protocol{policy.TCP, policy.UDP} {
			socks, err := parseTable(strings.NewReader(table), proto, 4, portRange{32768, 60999})
			if err != nil {
				continue
			}
			for _, s := range socks {
				if s.Port == 0 || !s.Address.IsValid() || s.Protocol != proto {
					t.Errorf("parsed %+v", s)
				}
			}
		}
	})
}
