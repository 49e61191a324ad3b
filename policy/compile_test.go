package policy

import (
	"errors"
	"reflect"
	"slices"
	"testing"
)

func TestCompile(t *testing.T) {
	reg, err := Load("testdata/valid.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		labels  map[string]string
		tcp     int
		udp     int
		origins []string // process of each origin
		check   func(t *testing.T, c *Compiled)
	}{
		{
			name:    "no labels keeps entries without selector",
			tcp:     1 + 20 + 1, // kubelet, node-exporter range, removed 10256
			udp:     20,
			origins: []string{"kubelet", "node-exporter", "openshift-sdn"},
		},
		{
			name:    "control plane",
			labels:  map[string]string{"role": "control-plane"},
			tcp:     1 + 1 + 20 + 1,
			udp:     20,
			origins: []string{"etcd", "kubelet", "node-exporter", "openshift-sdn"},
			check: func(t *testing.T, c *Compiled) {
				r := c.Lookup(2379, TCP)
				want := Rule{Port: 2379, Protocol: TCP, Owners: Owners{
					Cgroups: []string{"/system.slice/etcd.service"}, Units: []string{"etcd.service"}, UIDs: []uint32{0},
				}}
				if r == nil || !reflect.DeepEqual(*r, want) {
					t.Errorf("Lookup(2379/tcp) = %+v, want %+v", r, want)
				}
				if o := c.Origins[0]; o.Pos != (Pos{"testdata/valid.yaml", 8, 5}) || o.Pos.FileLine() != "testdata/valid.yaml:8" {
					t.Errorf("etcd origin %+v", o)
				}
			},
		},
		{
			name:    "worker",
			labels:  map[string]string{"role": "worker", "zone": "a"},
			tcp:     1 + 20 + 1,
			udp:     20 + 1,
			origins: []string{"kubelet", "node-exporter", "dnsmasq", "openshift-sdn"},
			check: func(t *testing.T, c *Compiled) {
				if c.Lookup(2379, TCP) != nil {
					t.Error("control-plane port on a worker")
				}
				if r := c.Lookup(53, UDP); r == nil || r.Removed || !r.Owners.Any() || c.Origins[r.Origin].Process != "dnsmasq" {
					t.Errorf("Lookup(53/udp) = %+v", r)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Compile(reg, tt.labels)
			if err != nil {
				t.Fatal(err)
			}
			tcp, udp := 0, 0
			for _, r := range c.Rules {
				if r.Protocol == TCP {
					tcp++
				} else {
					udp++
				}
			}
			if tcp != tt.tcp || udp != tt.udp {
				t.Errorf("got %d tcp and %d udp rules, want %d and %d", tcp, udp, tt.tcp, tt.udp)
			}
			if gt, gu := reg.Coverage(tt.labels); len(tt.labels) > 0 && (gt != tt.tcp || gu != tt.udp) {
				t.Errorf("Coverage = %d, %d; want %d, %d", gt, gu, tt.tcp, tt.udp)
			}
			var procs []string
			for _, o := range c.Origins {
				procs = append(procs, o.Process)
			}
			if !slices.Equal(procs, tt.origins) {
				t.Errorf("origins %v, want %v", procs, tt.origins)
			}
			if !slices.IsSortedFunc(c.Rules, func(a, b Rule) int {
				if a.Protocol != b.Protocol {
					return int(a.Protocol) - int(b.Protocol)
				}
				return int(a.Port) - int(b.Port)
			}) {
				t.Error("rules are not sorted by protocol, then port")
			}
			for i := 1; i < len(c.Rules); i++ {
				if c.Rules[i].Protocol == c.Rules[i-1].Protocol && c.Rules[i].Port == c.Rules[i-1].Port {
					t.Errorf("two rules for %d/%v", c.Rules[i].Port, c.Rules[i].Protocol)
				}
			}
			for _, r := range c.Rules {
				if c.Origins[r.Origin].Removed != r.Removed {
					t.Errorf("rule %d/%v: Removed %v, origin's %v", r.Port, r.Protocol, r.Removed, c.Origins[r.Origin].Removed)
				}
			}
			if c.Digest != reg.Digest || len(c.Digest) != 64 {
				t.Errorf("digest %q", c.Digest)
			}
			if !reflect.DeepEqual(c.NodeLabels, tt.labels) {
				t.Errorf("NodeLabels %v", c.NodeLabels)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
			again, _ := Compile(reg, tt.labels)
			if !reflect.DeepEqual(c, again) {
				t.Error("Compile is not deterministic")
			}
		})
	}
}

func TestCompileRules(t *testing.T) {
	all := func(c *Compiled) []Rule { return c.Rules }
	tests := []struct {
		name string
		doc  string
		want []Rule
	}{
		{
			name: "defaults",
			doc:  header + "  - {port: 22, process: sshd}\n",
			want: []Rule{{Port: 22, Protocol: TCP}},
		},
		{
			name: "range and protocol list",
			doc:  header + "  - {port: 7-9, protocol: [udp, tcp], process: a, bind: localhost, mode: audit}\n",
			want: []Rule{
				{Port: 7, Protocol: TCP, Localhost: true, Audit: true},
				{Port: 8, Protocol: TCP, Localhost: true, Audit: true},
				{Port: 9, Protocol: TCP, Localhost: true, Audit: true},
				{Port: 7, Protocol: UDP, Localhost: true, Audit: true},
				{Port: 8, Protocol: UDP, Localhost: true, Audit: true},
				{Port: 9, Protocol: UDP, Localhost: true, Audit: true},
			},
		},
		{
			name: "mode enforce is the default",
			doc:  header + "  - {port: 1, process: a, mode: enforce}\n",
			want: []Rule{{Port: 1, Protocol: TCP}},
		},
		{
			name: "same process merges owners",
			doc: header + "  - {port: 1-2, process: a, owners: [{uid: 5}, {unit: b.service}], bind: localhost}\n" +
				"  - {port: 2-3, process: A, owners: [{uid: 1}, {uid: 5}, {cgroup: /x}], bind: localhost, mode: audit}\n",
			want: []Rule{
				{Port: 1, Protocol: TCP, Localhost: true, Owners: Owners{Units: []string{"b.service"}, UIDs: []uint32{5}}, Origin: 0},
				{Port: 2, Protocol: TCP, Localhost: true, Audit: true, Owners: Owners{Cgroups: []string{"/x"}, Units: []string{"b.service"}, UIDs: []uint32{1, 5}}, Origin: 0},
				{Port: 3, Protocol: TCP, Localhost: true, Audit: true, Owners: Owners{Cgroups: []string{"/x"}, UIDs: []uint32{1, 5}}, Origin: 1},
			},
		},
		{
			name: "merge with an entry without owners lets anyone bind",
			doc:  header + "  - {port: 1, process: a, owners: [{uid: 5}]}\n  - {port: 1, process: a, bind: localhost}\n",
			want: []Rule{{Port: 1, Protocol: TCP}},
		},
		{
			name: "removed",
			doc:  header + "  - {port: 2, process: a}\nremoved:\n  - {port: 1, protocol: [tcp, udp], process: old}\n  - {port: 1, process: older}\n",
			want: []Rule{{Port: 1, Protocol: TCP, Removed: true, Origin: 1}, {Port: 2, Protocol: TCP}, {Port: 1, Protocol: UDP, Removed: true, Origin: 1}},
		},
		{
			name: "empty registry",
			doc:  "apiVersion: bindguard.io/v1\nkind: PortRegistry\n",
			want: []Rule{},
		},
		{
			name: "selector not matching a node without labels",
			doc:  header + "  - {port: 1, process: a, nodeSelector: {role: x}}\n",
			want: []Rule{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Compile(mustParse(t, "t.yaml", tt.doc), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := all(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("rules:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestCompileEmpty(t *testing.T) {
	c, err := Compile(&Registry{}, map[string]string{"role": "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Rules == nil || len(c.Rules) != 0 || len(c.Origins) != 0 {
		t.Errorf("empty registry compiled to %+v", c)
	}
	if c.Lookup(80, TCP) != nil {
		t.Error("Lookup found a rule in an empty policy")
	}
}

func TestLookup(t *testing.T) {
	c, err := Compile(mustParse(t, "t.yaml", header+
		"  - {port: 1, protocol: udp, process: a}\n"+
		"  - {port: 80, process: b}\n"+
		"  - {port: 443, protocol: [tcp, udp], process: c}\n"+
		"  - {port: 65535, process: d}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		port  uint16
		proto Protocol
		want  string // process, "" for none
	}{
		{1, UDP, "a"}, {1, TCP, ""}, {80, TCP, "b"}, {80, UDP, ""}, {443, TCP, "c"}, {443, UDP, "c"},
		{65535, TCP, "d"}, {65535, UDP, ""}, {0, TCP, ""}, {444, TCP, ""}, {79, TCP, ""},
	}
	for _, tt := range tests {
		r := c.Lookup(tt.port, tt.proto)
		got := ""
		if r != nil {
			got = c.Origins[r.Origin].Process
			if r.Port != tt.port || r.Protocol != tt.proto {
				t.Errorf("Lookup(%d/%v) returned the rule for %d/%v", tt.port, tt.proto, r.Port, r.Protocol)
			}
		}
		if got != tt.want {
			t.Errorf("Lookup(%d/%v) = %q, want %q", tt.port, tt.proto, got, tt.want)
		}
	}
}

func TestCompileRejectsInvalid(t *testing.T) {
	reg := mustParse(t, "t.yaml", header+"  - {port: 1, process: a}\n  - {port: 1, process: b}\n")
	_, err := Compile(reg, nil)
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 {
		t.Fatalf("Compile: %v, want one conflict", err)
	}
}

func TestLoadAndCompile(t *testing.T) {
	labels := map[string]string{"node-role.kubernetes.io/control-plane": ""}
	c, reg, err := LoadAndCompile(labels, "testdata/pods.yaml")
	if err != nil || reg == nil {
		t.Fatalf("LoadAndCompile: %v", err)
	}
	want, err := Compile(reg, labels)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("LoadAndCompile = %+v, Compile = %+v", c, want)
	}

	c, reg, err = LoadAndCompile(nil, "testdata/three-mistakes.yaml")
	var errs ErrorList
	if c != nil || reg == nil || !errors.As(err, &errs) || len(errs) != 3 {
		t.Errorf("three mistakes: compiled %v, registry %v, error %v", c != nil, reg != nil, err)
	}
	c, reg, err = LoadAndCompile(nil, "testdata/missing.yaml")
	if c != nil || reg != nil || err == nil || errors.As(err, &errs) {
		t.Errorf("missing file: compiled %v, registry %v, error %T %v", c != nil, reg != nil, err, err)
	}
}
