package policy

import (
	"fmt"
	"strings"
	"testing"
)

func mustParse(t testing.TB, name, doc string) *Registry {
	t.Helper()
	reg, err := Parse(name, []byte(doc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return reg
}

// merged parses several documents as separate files and merges them as Load does.
func merged(t testing.TB, docs ...string) *Registry {
	t.Helper()
	reg := &Registry{}
	for i, d := range docs {
		r := mustParse(t, fmt.Sprintf("f%d.yaml", i+1), d)
		reg.Sources = append(reg.Sources, r.Sources...)
		reg.Entries = append(reg.Entries, r.Entries...)
		reg.Removed = append(reg.Removed, r.Removed...)
	}
	return reg
}

func validateLines(errs ErrorList) []string {
	var out []string
	for _, e := range errs {
		out = append(out, e.Error())
	}
	return out
}

func TestValidateConflicts(t *testing.T) {
	const rm = "removed:\n"
	tests := []struct {
		name   string
		docs   []string
		labels map[string]string
		want   []string // full error lines
	}{
		{
			name: "same port, different processes",
			docs: []string{header + "  - {port: 2379, process: etcd}\n  - {port: 2379, process: foo}\n"},
			want: []string{`f1.yaml:5:5: port 2379/tcp claimed by "foo" conflicts with "etcd" at f1.yaml:4:5`},
		},
		{
			name: "across files",
			docs: []string{header + "  - {port: 2379, process: etcd}\n", header + "  - {port: 2379, process: foo}\n"},
			want: []string{`f2.yaml:4:5: port 2379/tcp claimed by "foo" conflicts with "etcd" at f1.yaml:4:5`},
		},
		{
			name: "selector and no selector are compatible",
			docs: []string{header + "  - {port: 1, process: a, nodeSelector: {role: x}}\n  - {port: 1, process: b}\n"},
			want: []string{`f1.yaml:5:5: port 1/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name: "different keys are compatible",
			docs: []string{header + "  - {port: 1, process: a, nodeSelector: {role: x}}\n  - {port: 1, process: b, nodeSelector: {zone: y}}\n"},
			want: []string{`f1.yaml:5:5: port 1/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name: "same key, different values are not",
			docs: []string{header + "  - {port: 1, process: a, nodeSelector: {role: x}}\n  - {port: 1, process: b, nodeSelector: {role: y, zone: z}}\n"},
		},
		{
			name: "same process merges, case and spaces ignored",
			docs: []string{header + "  - {port: 1, process: etcd}\n  - {port: 1, process: \" ETCD \"}\n"},
		},
		{
			name: "different protocols",
			docs: []string{header + "  - {port: 53, protocol: udp, process: a}\n  - {port: 53, protocol: tcp, process: b}\n"},
		},
		{
			name: "overlapping ranges",
			docs: []string{header + "  - {port: 9200-9219, process: a}\n  - {port: 9210-9300, process: b}\n"},
			want: []string{`f1.yaml:5:5: ports 9210-9219/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name: "range inside range",
			docs: []string{header + "  - {port: 1-65535, process: a}\n  - {port: 80, process: b}\n"},
			want: []string{`f1.yaml:5:5: port 80/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name: "adjacent ranges",
			docs: []string{header + "  - {port: 9200-9209, process: a}\n  - {port: 9210-9219, process: b}\n"},
		},
		{
			name: "both protocols",
			docs: []string{header + "  - {port: 53, protocol: [tcp, udp], process: a}\n  - {port: 50-60, protocol: [udp, tcp], process: b}\n"},
			want: []string{`f1.yaml:5:5: port 53/tcp,udp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name: "three processes",
			docs: []string{header + "  - {port: 1, process: a}\n  - {port: 1, process: b}\n  - {port: 1, process: c}\n"},
			want: []string{
				`f1.yaml:5:5: port 1/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`,
				`f1.yaml:6:5: port 1/tcp claimed by "c" conflicts with "a" at f1.yaml:4:5`,
				`f1.yaml:6:5: port 1/tcp claimed by "c" conflicts with "b" at f1.yaml:5:5`,
			},
		},
		{
			name: "active and removed",
			docs: []string{header + "  - {port: 10256, process: ovnkube}\n" + rm + "  - {port: 10256, process: openshift-sdn, removed: \"4.17\"}\n"},
			want: []string{`f1.yaml:6:5: removed port 10256/tcp ("openshift-sdn", removed in 4.17) is still claimed by "ovnkube" at f1.yaml:4:5`},
		},
		{
			name: "removed before active",
			docs: []string{"apiVersion: bindguard.io/v1\nkind: PortRegistry\n" + rm + "  - {port: 1, process: old}\n", header + "  - {port: 1, process: new}\n"},
			want: []string{`f2.yaml:4:5: port 1/tcp claimed by "new" was removed at f1.yaml:4:5 ("old")`},
		},
		{
			name: "active and removed, same process",
			docs: []string{header + "  - {port: 1, process: a}\n" + rm + "  - {port: 1, process: a}\n"},
			want: []string{`f1.yaml:6:5: removed port 1/tcp ("a") is still claimed by "a" at f1.yaml:4:5`},
		},
		{
			name: "active and removed, incompatible selectors",
			docs: []string{header + "  - {port: 1, process: a, nodeSelector: {v: \"4.18\"}}\n" + rm + "  - {port: 1, process: b, nodeSelector: {v: \"4.16\"}}\n"},
		},
		{
			name: "removed twice",
			docs: []string{"apiVersion: bindguard.io/v1\nkind: PortRegistry\n" + rm + "  - {port: 1, process: a}\n  - {port: 1, process: b}\n"},
		},
		{
			name:   "node labels: other role ignored",
			docs:   []string{header + "  - {port: 1, process: a, nodeSelector: {role: cp}}\n  - {port: 1, process: b, nodeSelector: {role: cp}}\n  - {port: 2, process: c}\n"},
			labels: map[string]string{"role": "worker"},
		},
		{
			name:   "node labels: matching role checked",
			docs:   []string{header + "  - {port: 1, process: a, nodeSelector: {role: cp}}\n  - {port: 1, process: b, nodeSelector: {role: cp}}\n"},
			labels: map[string]string{"role": "cp", "zone": "a"},
			want:   []string{`f1.yaml:5:5: port 1/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name:   "node labels: entry without selector applies",
			docs:   []string{header + "  - {port: 1, process: a, nodeSelector: {role: cp}}\n  - {port: 1, process: b}\n"},
			labels: map[string]string{"role": "cp"},
			want:   []string{`f1.yaml:5:5: port 1/tcp claimed by "b" conflicts with "a" at f1.yaml:4:5`},
		},
		{
			name:   "node labels: removed port on other role ignored",
			docs:   []string{header + "  - {port: 1, process: a}\n" + rm + "  - {port: 1, process: b, nodeSelector: {role: cp}}\n"},
			labels: map[string]string{"role": "worker"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := merged(t, tt.docs...)
			got := validateLines(reg.Validate(tt.labels))
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("Validate:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			_, err := Compile(reg, tt.labels)
			if (err == nil) != (len(tt.want) == 0) {
				t.Errorf("Compile error %v, want error %v", err, len(tt.want) > 0)
			}
		})
	}
}

func TestValidateInMemoryEntries(t *testing.T) {
	pos := Pos{"mem", 1, 1}
	many := Owners{}
	for i := range MaxOwnersPerRule + 1 {
		many.UIDs = append(many.UIDs, uint32(i))
	}
	tests := []struct {
		name string
		e    Entry
		want string
	}{
		{"valid zero values", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a"}, ""},
		{"port zero", Entry{Pos: pos, Process: "a"}, "port 0 is not allowed"},
		{"reversed", Entry{Pos: pos, Ports: PortRange{9, 1}, Process: "a"}, "port range 9-1 is reversed"},
		{"no process", Entry{Pos: pos, Ports: PortRange{1, 1}}, "process is empty"},
		{"bad protocol", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Protocols: []Protocol{7}}, "unknown protocol protocol(7)"},
		{"duplicate protocol", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Protocols: []Protocol{UDP, UDP}}, "protocol udp is listed twice"},
		{"process control", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a\x1b[2K"}, `process "a\x1b[2K" contains the control character U+001B`},
		{"notes control", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Notes: "x\ny"}, `notes "x\ny" contains the control character U+000A`},
		{"team invalid utf-8", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Team: "\xff"}, `team "\xff" is not valid UTF-8`},
		{"bad bind", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Bind: "lo"}, `bind "lo"`},
		{"bad mode", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Mode: "x"}, `mode "x"`},
		{"bad cgroup", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Owners: Owners{Cgroups: []string{"x"}}}, "is not absolute"},
		{"bad unit", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Owners: Owners{Units: []string{"x"}}}, "has no unit suffix"},
		{"bad uid", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Owners: Owners{UIDs: []uint32{1<<32 - 1}}}, "uid 4294967295 is out of range"},
		{"too many owners", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", Owners: many}, "65 owners: at most 64"},
		{"bad selector", Entry{Pos: pos, Ports: PortRange{1, 1}, Process: "a", NodeSelector: LabelSelector(map[string]string{"": "x"})}, "node selector key is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := &Registry{Entries: []Entry{tt.e}}
			got := reg.Validate(nil).Err()
			if tt.want == "" {
				if got != nil {
					t.Fatalf("Validate: %v", got)
				}
				return
			}
			if got == nil || !strings.HasPrefix(got.Error(), "mem:1:1: ") || !strings.Contains(got.Error(), tt.want) {
				t.Fatalf("Validate: %v, want mem:1:1: …%s", got, tt.want)
			}
		})
	}
}

// TestRemovedGroupNotForgeable: removed entries used to merge under the
// process key "\x00removed", so an entry of that process merged with a
// removed port instead of conflicting, and compiled it as an allowed port.
func TestRemovedGroupNotForgeable(t *testing.T) {
	for _, proc := range []string{"\x00removed", "\x00REMOVED ", "removed"} {
		t.Run(fmt.Sprintf("%q", proc), func(t *testing.T) {
			reg := &Registry{
				Entries: []Entry{{Pos: Pos{"mem", 1, 1}, Ports: PortRange{10256, 10256}, Process: proc}},
				Removed: []Entry{{Pos: Pos{"mem", 2, 1}, Ports: PortRange{10256, 10256}, Process: "openshift-sdn", Removed: true}},
			}
			errs := reg.Validate(nil)
			if !strings.Contains(errs.Error(), `mem:2:1: removed port 10256/tcp ("openshift-sdn") is still claimed by`) {
				t.Errorf("Validate:\n%v\nwant the removed port still claimed", errs)
			}
			if c, err := Compile(reg, nil); err == nil {
				t.Errorf("compiled %+v", c.Rules)
			}
		})
	}
}

func TestValidateLimits(t *testing.T) {
	owners := func(n, base int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "{uid: %d}, ", base+i)
		}
		return "[" + strings.TrimSuffix(b.String(), ", ") + "]"
	}
	t.Run("merged owners per rule", func(t *testing.T) {
		reg := merged(t, header+
			"  - {port: 1-3, process: a, owners: "+owners(40, 0)+"}\n"+
			"  - {port: 3-5, process: a, owners: "+owners(40, 40)+"}\n")
		want := fmt.Sprintf(`f1.yaml:4:5: port 3/tcp: entries of "a" at f1.yaml:4:5, f1.yaml:5:5 together list 80 owners: at most %d are allowed per port`, MaxOwnersPerRule)
		if got := reg.Validate(nil).Error(); got != want {
			t.Errorf("Validate:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("merged owners, incompatible selectors", func(t *testing.T) {
		reg := merged(t, header+
			"  - {port: 1, process: a, nodeSelector: {r: x}, owners: "+owners(40, 0)+"}\n"+
			"  - {port: 1, process: a, nodeSelector: {r: y}, owners: "+owners(40, 40)+"}\n")
		if err := reg.Validate(nil).Err(); err != nil {
			t.Errorf("Validate: %v", err)
		}
	})
	t.Run("owners deduplicated when merging", func(t *testing.T) {
		reg := merged(t, header+
			"  - {port: 1, process: a, owners: "+owners(60, 0)+"}\n"+
			"  - {port: 1, process: a, owners: "+owners(60, 4)+"}\n")
		if err := reg.Validate(nil).Err(); err != nil {
			t.Errorf("Validate: %v", err)
		}
	})

	full := func(nOwners int, sel map[string]string) *Registry {
		o := Owners{}
		for i := range nOwners {
			o.UIDs = append(o.UIDs, uint32(i))
		}
		return &Registry{
			Sources: []Source{{File: "mem", Pos: Pos{"mem", 1, 1}}},
			Entries: []Entry{{Pos: Pos{"mem", 2, 3}, Ports: PortRange{1, 65535}, Protocols: []Protocol{TCP, UDP}, Process: "a", Owners: o, NodeSelector: LabelSelector(sel)}},
		}
	}
	t.Run("total map entries fit", func(t *testing.T) {
		// 1 meta + 131070 rules + 131070 owners = 262141 <= 262144
		if err := full(1, nil).Validate(nil).Err(); err != nil {
			t.Errorf("Validate: %v", err)
		}
	})
	t.Run("total map entries exceeded", func(t *testing.T) {
		want := "mem:1:1: the policy needs up to 393211 kernel map entries (1 meta + 131070 port rules + 262140 owners, a unit owner counting as 1): the limit is 262144"
		if got := full(2, nil).Validate(nil).Error(); got != want {
			t.Errorf("Validate:\n%s\nwant\n%s", got, want)
		}
	})
	t.Run("total map entries exceeded on one node", func(t *testing.T) {
		reg := full(2, map[string]string{"role": "big"})
		want := "mem:1:1: the policy for node [role=big] needs 393211 kernel map entries"
		if got := reg.Validate(map[string]string{"role": "big"}).Error(); !strings.HasPrefix(got, want) {
			t.Errorf("Validate:\n%s\nwant\n%s", got, want)
		}
		if err := reg.Validate(map[string]string{"role": "small"}).Err(); err != nil {
			t.Errorf("Validate on another node: %v", err)
		}
		if _, err := Compile(reg, map[string]string{"role": "big"}); err == nil {
			t.Error("Compile accepted a policy over the map limit")
		}
	})
}

// timed fails the test when the fastest of three runs of fn takes longer
// than limit; the best of three rules out noisy neighbours.
// bigRegistry has n single-port entries of different processes.
func bigRegistry(n int) *Registry {
	reg := &Registry{}
	for i := range n {
		proto := TCP
		if i >= 65535 {
			proto = UDP
		}
		port := uint16(i%65535 + 1)
		reg.Entries = append(reg.Entries, Entry{
			Pos: Pos{"big", i + 1, 3}, Ports: PortRange{port, port}, Protocols: []Protocol{proto},
			Process: fmt.Sprintf("p%d", i), Owners: Owners{UIDs: []uint32{uint32(i)}},
		})
	}
	return reg
}

// fullRanges has many whole-range entries: per node roles, and one process
// declared many times. Nothing here may cost per port per entry.
func fullRanges() *Registry {
	reg := &Registry{}
	for i := range 1000 {
		reg.Entries = append(reg.Entries, Entry{
			Pos: Pos{"big", i + 1, 3}, Ports: PortRange{1, 65535}, Protocols: []Protocol{TCP, UDP},
			Process: fmt.Sprintf("p%d", i), NodeSelector: LabelSelector(map[string]string{"role": fmt.Sprint(i)}),
		})
		reg.Entries = append(reg.Entries, Entry{
			Pos: Pos{"big", i + 1, 5}, Ports: PortRange{uint16(i + 1), 65535 - uint16(i)}, Process: "same",
			NodeSelector: LabelSelector(map[string]string{"role": "same"}),
		})
	}
	return reg
}

// manyConflicts has 65535 single ports each conflicting with one full range.
func manyConflicts() *Registry {
	reg := bigRegistry(65536)
	reg.Entries = append(reg.Entries, Entry{Pos: Pos{"big", 0, 1}, Ports: PortRange{1, 65535}, Process: "x"})
	return reg
}

// TestBigRegistries checks the results on the registries the benchmarks
// time (BenchmarkCompile65536, BenchmarkFullRanges, BenchmarkManyConflicts):
// time is measured there, not asserted here.
func TestBigRegistries(t *testing.T) {
	t.Run("65536 single ports", func(t *testing.T) {
		c, err := Compile(bigRegistry(65536), nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Rules) != 65536 || len(c.Origins) != 65536 {
			t.Errorf("got %d rules, %d origins", len(c.Rules), len(c.Origins))
		}
	})
	t.Run("full ranges", func(t *testing.T) {
		reg := fullRanges()
		if err := reg.Validate(nil).Err(); err != nil {
			t.Fatal(err)
		}
		c, err := Compile(reg, map[string]string{"role": "7"})
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Rules) != 2*65535 {
			t.Errorf("got %d rules", len(c.Rules))
		}
	})
	t.Run("many conflicts", func(t *testing.T) {
		if errs := manyConflicts().Validate(nil); len(errs) != 65535 {
			t.Errorf("got %d errors, want 65535", len(errs))
		}
	})
}

func BenchmarkFullRanges(b *testing.B) {
	reg := fullRanges()
	for b.Loop() {
		if err := reg.Validate(nil).Err(); err != nil {
			b.Fatal(err)
		}
		if _, err := Compile(reg, map[string]string{"role": "7"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkManyConflicts(b *testing.B) {
	reg := manyConflicts()
	for b.Loop() {
		reg.Validate(nil)
	}
}

func BenchmarkCompile65536(b *testing.B) {
	reg := bigRegistry(65536)
	for b.Loop() {
		if _, err := Compile(reg, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParse65536(b *testing.B) {
	var doc strings.Builder
	doc.WriteString(header)
	for i := range 65536 {
		fmt.Fprintf(&doc, "  - {port: %d, protocol: %s, process: p%d, owners: [{uid: %d}]}\n", i%65535+1, []string{"tcp", "udp"}[i/65535], i, i)
	}
	data := []byte(doc.String())
	for b.Loop() {
		if _, err := Parse("big.yaml", data); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTooManyOwnerLists(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: t}\nentries:\n")
	for i := 0; i <= MaxOwnerSets; i++ {
		fmt.Fprintf(&b, "  - {port: %d, process: p%d, owners: [{cgroup: /c%d}]}\n", 1000+i, i, i)
	}
	reg, err := Parse("many.yaml", []byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	errs := reg.Validate(nil)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "distinct owner lists") || !strings.Contains(errs[0].Error(), "many.yaml:5:") {
		t.Errorf("Validate = %v, want one error about %d owner lists at the first entry", errs, MaxOwnerSets+1)
	}
}
