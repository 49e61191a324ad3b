package builtin_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy"
	"github.com/bindguard/bindguard/policy/builtin"
)

// dim is one node label and the values the source document gives it; none
// stands for a node without the label.
type dim struct {
	key    string
	values []string
}

// none in a dim's values is a node without the label.
const none = "<none>"

// product returns every label set the dimensions describe.
func product(base map[string]string, dims ...dim) []map[string]string {
	out := []map[string]string{maps.Clone(base)}
	for _, d := range dims {
		var next []map[string]string
		for _, labels := range out {
			for _, v := range d.values {
				l := maps.Clone(labels)
				if l == nil {
					l = map[string]string{}
				}
				if v != none {
					l[d.key] = v
				}
				next = append(next, l)
			}
		}
		out = next
	}
	return out
}

// nodes lists, per builtin registry, every node-label combination its source
// document describes. Each must compile without errors.
var nodes = map[string][]map[string]string{
	"openshift": product(map[string]string{"kubernetes.io/os": "linux"},
		dim{"node-role.kubernetes.io/master", []string{none, ""}},
		dim{"node-role.kubernetes.io/worker", []string{none, ""}},
		dim{"bindguard.io/network-type", []string{none, "OVNKubernetes", "OpenShiftSDN"}},
	),
	"acos": product(nil,
		dim{"bindguard.io/acos-port-8510", []string{none, "consul", "consul-server"}},
		dim{"bindguard.io/acos-port-9943", []string{none, "amphi", "envoy"}},
		dim{"bindguard.io/acos-port-10809", []string{none, "vmtools-agent", "amphi"}},
	),
	"avi": product(nil, dim{"bindguard.io/avi-role", []string{"controller", "service-engine"}}),
	"kubean": append(
		product(map[string]string{"bindguard.io/role": "bootstrap"}),
		product(map[string]string{"kubernetes.io/os": "linux"},
			dim{"node-role.kubernetes.io/control-plane", []string{none, ""}},
			dim{"bindguard.io/kubean-cluster", []string{"global", "worker"}},
			dim{"bindguard.io/cni", []string{"calico", "cilium", "spiderpool"}},
			dim{"bindguard.io/metallb", []string{none, "enabled"}},
			dim{"bindguard.io/kube-vip", []string{none, "enabled"}},
			dim{"bindguard.io/component", []string{none, "istio-gateway", "container-registry"}},
		)...,
	),
	"ack-edge": product(nil, dim{"alibabacloud.com/is-edge-worker", []string{none, "true", "false"}}),
}

func TestNames(t *testing.T) {
	got := builtin.Names()
	want := []string{"ack-edge", "acos", "avi", "kubean", "openshift"}
	if !slices.Equal(got, want) {
		t.Fatalf("Names() = %v, want %v", got, want)
	}
	for _, n := range got {
		if _, ok := nodes[n]; !ok {
			t.Errorf("registry %q has no node combinations in this test", n)
		}
	}
}

func TestFiles(t *testing.T) {
	for _, name := range builtin.Names() {
		t.Run(name, func(t *testing.T) {
			files, err := builtin.Files(name)
			if err != nil {
				t.Fatal(err)
			}
			prefixed, err := builtin.Files("builtin:" + name)
			if err != nil || len(prefixed) != len(files) {
				t.Fatalf("Files(builtin:%s) = %d files, %v; want %d files", name, len(prefixed), err, len(files))
			}
			var names []string
			for _, f := range files {
				if !strings.HasPrefix(f.Name, "builtin:"+name+"/") || !strings.HasSuffix(f.Name, ".yaml") {
					t.Errorf("file name %q: want builtin:%s/*.yaml", f.Name, name)
				}
				if len(f.Data) == 0 {
					t.Errorf("%s is empty", f.Name)
				}
				names = append(names, f.Name)
			}
			if !slices.IsSorted(names) {
				t.Errorf("files not in name order: %v", names)
			}
		})
	}
}

func TestFilesUnknown(t *testing.T) {
	_, err := builtin.Files("nope")
	if err == nil {
		t.Fatal("Files(nope): no error")
	}
	for _, n := range append(builtin.Names(), `"nope"`) {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("error %q does not name %s", err, n)
		}
	}
}

func load(t *testing.T, name string) *policy.Registry {
	t.Helper()
	reg, err := policy.Load("builtin:" + name)
	if err != nil {
		t.Fatalf("load builtin:%s:\n%v", name, err)
	}
	return reg
}

// TestValid checks every registry for every node at once and for each
// described node combination.
func TestValid(t *testing.T) {
	for _, name := range builtin.Names() {
		t.Run(name, func(t *testing.T) {
			reg := load(t, name)
			if errs := reg.Validate(nil); errs != nil {
				t.Errorf("Validate(all nodes):\n%v", errs)
			}
			if len(reg.Entries) == 0 {
				t.Error("no entries")
			}
			meta := reg.Sources[0]
			for _, s := range reg.Sources {
				if s.Name == "" || s.Source == "" {
					t.Errorf("%s: metadata.name and metadata.source must be set", s.File)
				}
				if s.Name != meta.Name || s.Source != meta.Source {
					t.Errorf("%s: metadata %q/%q differs from %s's %q/%q", s.File, s.Name, s.Source, meta.File, meta.Name, meta.Source)
				}
			}
			for _, e := range append(slices.Clone(reg.Entries), reg.Removed...) {
				if !e.Owners.Any() {
					t.Errorf("%v: builtin entries list no owners (a site decision)", e.Pos)
				}
			}
			for _, labels := range nodes[name] {
				if _, err := policy.Compile(reg, labels); err != nil {
					t.Errorf("Compile(%s):\n%v", policy.FormatLabels(labels), err)
				}
			}
		})
	}
}

// port is one fact about a compiled node policy.
type port struct {
	port    uint16
	proto   policy.Protocol
	process string // "" means the port must be undeclared
	// localhost and removed are checked when process is set.
	localhost, removed bool
}

func TestFacts(t *testing.T) {
	tcp, udp := policy.TCP, policy.UDP
	tests := []struct {
		registry string
		labels   map[string]string
		ports    []port
	}{
		{"openshift", map[string]string{"node-role.kubernetes.io/master": "", "node-role.kubernetes.io/control-plane": ""}, []port{
			{port: 2379, proto: tcp, process: "etcd"},
			{port: 2380, proto: tcp, process: "etcd"},
			{port: 6443, proto: tcp, process: "kube-apiserver"},
			{port: 9258, proto: tcp, process: "cluster-cloud-controller-manager-operator"},
			{port: 9259, proto: tcp, process: "cluster-cloud-controller-manager-operator", localhost: true},
			{port: 10250, proto: tcp, process: "kubelet"},
			{port: 3306, proto: tcp, process: "mariadb", removed: true},
			{port: 9122, proto: udp, process: "metallb"},
		}},
		{"openshift", map[string]string{"node-role.kubernetes.io/worker": ""}, []port{
			{port: 2379, proto: tcp},
			{port: 6443, proto: tcp},
			{port: 9258, proto: tcp},
			{port: 3306, proto: tcp},
			{port: 9100, proto: tcp, process: "node-exporter"},
			{port: 10250, proto: tcp, process: "kubelet"},
			{port: 10248, proto: tcp, process: "kubelet", localhost: true},
			{port: 10443, proto: tcp, process: "haproxy", localhost: true},
			{port: 9210, proto: tcp, process: "various CSI drivers"}, // in 9200-9219
			{port: 6081, proto: udp, process: "ovn-kubernetes"},
			{port: 9101, proto: tcp, process: "sdn node rbac proxy", removed: true},
			{port: 10256, proto: tcp, process: "ovn-kubernetes ovnkube-node"}, // every cluster since 4.17
		}},
		{"openshift", map[string]string{"node-role.kubernetes.io/worker": "", "bindguard.io/network-type": "OVNKubernetes"}, []port{
			{port: 10256, proto: tcp, process: "ovn-kubernetes ovnkube-node"},
		}},
		{"openshift", map[string]string{"node-role.kubernetes.io/worker": "", "bindguard.io/network-type": "OpenShiftSDN"}, []port{
			{port: 10256, proto: tcp, process: "openshift-sdn", removed: true},
		}},
		{"acos", nil, []port{
			{port: 10100, proto: tcp, process: "zbs-metad"},
			{port: 2049, proto: tcp, process: "zbs-chunkd"},
			{port: 2049, proto: udp, process: "zbs-chunkd"},
			{port: 123, proto: udp, process: "chronyd"},
			{port: 10480, proto: udp, process: "disk-healthd"},
			{port: 10850, proto: tcp, process: "amphi"},
			{port: 8301, proto: tcp, process: "consul"},
			{port: 8510, proto: tcp},
			{port: 9943, proto: tcp},
			{port: 10809, proto: tcp},
		}},
		{"acos", map[string]string{"bindguard.io/acos-port-8510": "consul-server", "bindguard.io/acos-port-9943": "envoy", "bindguard.io/acos-port-10809": "vmtools-agent"}, []port{
			{port: 8510, proto: tcp, process: "consul-server"},
			{port: 9943, proto: tcp, process: "envoy"},
			{port: 10809, proto: tcp, process: "vmtools-agent"},
		}},
		{"avi", map[string]string{"bindguard.io/avi-role": "controller"}, []port{
			{port: 22, proto: tcp, process: "ssh"},
			{port: 8443, proto: tcp, process: "https"},
			{port: 123, proto: udp, process: "ntp"},
			{port: 161, proto: udp, process: "snmp-agent"},
			{port: 4001, proto: tcp},
			{port: 25, proto: tcp}, // outbound only
		}},
		{"avi", map[string]string{"bindguard.io/avi-role": "service-engine"}, []port{
			{port: 4001, proto: tcp, process: "objstore"},
			{port: 9001, proto: tcp, process: "objstore"},
			{port: 22, proto: tcp},
		}},
		{"kubean", map[string]string{"bindguard.io/role": "bootstrap"}, []port{
			{port: 443, proto: tcp, process: "docker-registry"},
			{port: 9000, proto: tcp, process: "minio"},
			{port: 10250, proto: tcp},
		}},
		{"kubean", map[string]string{"kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": "", "bindguard.io/kubean-cluster": "global", "bindguard.io/cni": "calico", "bindguard.io/metallb": "enabled", "bindguard.io/kube-vip": "enabled", "bindguard.io/component": "istio-gateway"}, []port{
			{port: 2379, proto: tcp, process: "etcd"},
			{port: 2381, proto: tcp, process: "etcd"},
			{port: 10257, proto: tcp, process: "kube-controller-manager"},
			{port: 179, proto: tcp, process: "calico-node"},
			{port: 4789, proto: udp, process: "calico-node"},
			{port: 7946, proto: tcp, process: "metallb"},
			{port: 7946, proto: udp, process: "metallb"},
			{port: 2112, proto: tcp, process: "kube-vip"},
			{port: 443, proto: tcp, process: "istio-gateway"},
			{port: 9200, proto: tcp, process: "insight"},
			{port: 30000, proto: tcp, process: "kube-proxy"},
			{port: 32767, proto: tcp, process: "kube-proxy"},
			{port: 8472, proto: udp},
		}},
		{"kubean", map[string]string{"kubernetes.io/os": "linux", "bindguard.io/kubean-cluster": "worker", "bindguard.io/cni": "cilium", "bindguard.io/kube-vip": "enabled", "bindguard.io/component": "container-registry"}, []port{
			{port: 2379, proto: tcp},
			{port: 2112, proto: tcp},
			{port: 179, proto: tcp},
			{port: 9200, proto: tcp},
			{port: 8472, proto: udp, process: "cilium-agent"},
			{port: 4240, proto: tcp, process: "cilium-agent"},
			{port: 443, proto: tcp, process: "container-registry"},
			{port: 22, proto: tcp, process: "sshd"},
			{port: 10250, proto: tcp, process: "kubelet"},
		}},
		{"kubean", map[string]string{"kubernetes.io/os": "linux", "bindguard.io/cni": "spiderpool"}, []port{
			{port: 5722, proto: tcp, process: "spiderpool-controller"},
			{port: 443, proto: tcp},
		}},
		{"ack-edge", map[string]string{"alibabacloud.com/is-edge-worker": "true"}, []port{
			{port: 10250, proto: tcp, process: "kubelet"},
			{port: 9445, proto: tcp, process: "node-exporter"},
			{port: 8472, proto: udp, process: "flannel"},
			{port: 6443, proto: tcp}, // outbound only
			{port: 4500, proto: udp}, // outbound only
		}},
	}
	for _, tt := range tests {
		t.Run(tt.registry+policy.FormatLabels(tt.labels), func(t *testing.T) {
			c, err := policy.Compile(load(t, tt.registry), tt.labels)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range tt.ports {
				r := c.Lookup(p.port, p.proto)
				switch {
				case p.process == "" && r != nil:
					t.Errorf("%d/%v: declared for %q, want undeclared", p.port, p.proto, c.Origins[r.Origin].Process)
				case p.process == "":
				case r == nil:
					t.Errorf("%d/%v: undeclared, want %q", p.port, p.proto, p.process)
				default:
					if got := c.Origins[r.Origin].Process; got != p.process {
						t.Errorf("%d/%v: process %q, want %q", p.port, p.proto, got, p.process)
					}
					if r.Localhost != p.localhost || r.Removed != p.removed {
						t.Errorf("%d/%v: localhost=%v removed=%v, want %v %v", p.port, p.proto, r.Localhost, r.Removed, p.localhost, p.removed)
					}
				}
			}
		})
	}
}
