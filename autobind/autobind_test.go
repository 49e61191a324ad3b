package autobind

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy"
)

func TestParseList(t *testing.T) {
	tests := []struct {
		in, want string
		err      bool
	}{
		{"", "", false},
		{"\n", "", false},
		{"8080\n", "8080", false},
		{"40000,40002-40005", "40000,40002-40005", false},
		{"3,1,2", "1-3", false},
		{"5-5", "5", false},
		{"1-65535", "1-65535", false},
		{"0", "", true},
		{"65536", "", true},
		{"5-4", "", true},
		{"1,,2", "", true},
		{"-3", "", true},
		{"a", "", true},
		{" 1 ", "1", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			s, err := ParseList(tt.in)
			if (err != nil) != tt.err {
				t.Fatalf("ParseList(%q) error %v, want error %v", tt.in, err, tt.err)
			}
			if err == nil && s.String() != tt.want {
				t.Errorf("ParseList(%q) = %q, want %q", tt.in, s, tt.want)
			}
		})
	}
}

func FuzzParseList(f *testing.F) {
	for _, s := range []string{"", "1", "40000,40002-40005", "1-65535", "0", "5-4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseList(in)
		if err != nil {
			return
		}
		if s[0] {
			t.Fatalf("ParseList(%q) holds port 0", in)
		}
		again, err := ParseList(s.String())
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("ParseList(%q).String() = %q does not parse back: %v", in, s, err)
		}
	})
}

func TestMerge(t *testing.T) {
	tests := []struct {
		name                 string
		current, added, want string
		wantValue, wantOwned string
	}{
		{"first reserve", "80,443", "", "40000,40001", "80,443,40000-40001", "40000-40001"},
		{"admin already had one", "40000", "", "40000,40001", "40000-40001", "40001"},
		{"reload drops a port", "80,40000-40001", "40000-40001", "40000", "80,40000", "40000"},
		{"admin added a port meanwhile", "80,40000-40001,50000", "40000-40001", "40000-40001", "80,40000-40001,50000", "40000-40001"},
		{"admin removed ours: added again", "80", "40000", "40000", "80,40000", "40000"},
		{"empty want takes back ours only", "80,40000", "40000", "", "80", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := func(s string) Set {
				x, err := ParseList(s)
				if err != nil {
					t.Fatal(err)
				}
				return x
			}
			v, o := merge(p(tt.current), p(tt.added), p(tt.want))
			if v.String() != tt.wantValue || o.String() != tt.wantOwned {
				t.Errorf("merge = %q owned %q, want %q owned %q", v, o, tt.wantValue, tt.wantOwned)
			}
		})
	}
}

// TestReserverFiles runs a daemon's life against a stand-in sysctl file:
// reserve, reload, an admin edit, a restart, release.
func TestReserverFiles(t *testing.T) {
	dir := t.TempDir()
	r := &Reserver{Sysctl: filepath.Join(dir, "sysctl"), Range: filepath.Join(dir, "range"), State: filepath.Join(dir, "run", "state")}
	if err := os.WriteFile(r.Range, []byte("32768\t60999\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	write := func(s string) {
		if err := os.WriteFile(r.Sysctl, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sysctl := func() string {
		b, err := os.ReadFile(r.Sysctl)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}
	write("80,443\n")
	steps := []struct {
		name   string
		do     func() error
		sysctl string
		added  []uint16
	}{
		{"reserve", func() error { return r.Reserve([]uint16{40000, 40001, 443}) }, "80,443,40000-40001", []uint16{40000, 40001}},
		{"reload", func() error { return r.Reserve([]uint16{40001}) }, "80,443,40001", []uint16{40001}},
		{"admin adds 50000", func() error { write("80,443,40001,50000\n"); return nil }, "80,443,40001,50000", []uint16{40001}},
		{"restart: a new Reserver", func() error {
			r = &Reserver{Sysctl: r.Sysctl, Range: r.Range, State: r.State}
			return r.Reserve([]uint16{40001, 40002})
		}, "80,443,40001-40002,50000", []uint16{40001, 40002}},
		{"too many: refused, nothing changed", func() error {
			if err := r.Reserve(portRange(30000, 55000)); err == nil || !strings.Contains(err.Error(), "would leave") {
				return fmt.Errorf("reserving 30000-55000: %v, want a refusal", err)
			}
			return nil
		}, "80,443,40001-40002,50000", []uint16{40001, 40002}},
		{"release", func() error { return r.Release() }, "80,443,50000", nil},
		{"release again", func() error { return r.Release() }, "80,443,50000", nil},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		added, err := r.Added()
		if err != nil {
			t.Fatal(err)
		}
		if got := sysctl(); got != s.sysctl || !reflect.DeepEqual(added, s.added) && len(added)+len(s.added) > 0 {
			t.Errorf("%s: sysctl %q added %v, want %q %v", s.name, got, added, s.sysctl, s.added)
		}
	}
	if _, err := os.Stat(r.State); !os.IsNotExist(err) {
		t.Errorf("state file left after release: %v", err)
	}
}

// TestReserverCorruptState: a state file that does not parse is an error,
// and nothing is touched.
func TestReserverCorruptState(t *testing.T) {
	dir := t.TempDir()
	r := &Reserver{Sysctl: filepath.Join(dir, "sysctl"), Range: filepath.Join(dir, "range"), State: filepath.Join(dir, "state")}
	for path, body := range map[string]string{r.Sysctl: "80,443,50000\n", r.Range: "32768\t60999\n", r.State: "garbage"} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Reserve([]uint16{1}); err == nil || !strings.Contains(err.Error(), "left as they are") {
		t.Errorf("corrupt state: %v", err)
	}
	if err := r.Release(); err == nil {
		t.Error("Release with a corrupt state: no error")
	}
	if b, _ := os.ReadFile(r.Sysctl); string(b) != "80,443,50000\n" {
		t.Errorf("sysctl changed: %q", b)
	}
}

func portRange(lo, hi int) []uint16 {
	var out []uint16
	for p := lo; p <= hi; p++ {
		out = append(out, uint16(p))
	}
	return out
}

func TestInRange(t *testing.T) {
	reg, err := policy.Parse("r.yaml", []byte(`apiVersion: bindguard.io/v1
kind: PortRegistry
entries:
  - {port: 22, process: ssh, owners: [{uid: 0}]}
  - {port: 40000, process: owned, owners: [{uid: 0}]}
  - {port: 40001, protocol: udp, process: local, bind: localhost}
  - {port: 40002, process: open}
removed:
  - {port: 40003, process: old, removed: "1.0"}
`))
	if err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := Restricted(c); !reflect.DeepEqual(got, []uint16{22, 40000, 40001, 40003}) {
		t.Errorf("Restricted = %v", got)
	}
	got := inRange(c, 32768, 60999, Set{40000: true})
	var lines []string
	for _, cf := range got {
		lines = append(lines, cf.String())
	}
	want := []string{
		"r.yaml:5: port 40000/tcp (owners) lies inside ip_local_port_range: reserved (ip_local_reserved_ports) now, so the kernel does not hand it out",
		"r.yaml:9: port 40003/tcp (removed) lies inside ip_local_port_range: not reserved: the kernel may give it to any process that binds port 0, listens, connects or sends without a bind",
		"r.yaml:6: port 40001/udp (localhost) lies inside ip_local_port_range: not reserved: the kernel may give it to any process that binds port 0, listens, connects or sends without a bind",
	}
	if !reflect.DeepEqual(lines, want) {
		t.Errorf("conflicts:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	if lo, hi, err := PortRange(PortRangeSysctl); err != nil || lo > hi {
		t.Errorf("PortRange of this host: %d %d %v", lo, hi, err)
	}
}
