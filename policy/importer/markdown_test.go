package importer_test

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/bindguard/bindguard/policy"
	"github.com/bindguard/bindguard/policy/importer"
)

type E = importer.Entry

var cp = map[string]string{"role": "control-plane"}

func mustImport(t *testing.T, md string) *importer.Result {
	t.Helper()
	res, err := importer.Markdown("test", strings.NewReader(md))
	if err != nil {
		t.Fatalf("Markdown: %v", err)
	}
	return res
}

// stripLines zeroes the source lines so entries compare by content.
func stripLines(es []E) []E {
	out := slices.Clone(es)
	for i := range out {
		out[i].Line = 0
	}
	return out
}

func TestMarkdown(t *testing.T) {
	tests := []struct {
		name     string
		md       string
		entries  []E
		removed  []E
		warnings []string // substrings, one per warning, in order
	}{
		{
			name: "columns by name in any order, case-insensitive",
			md: `| owning TEAM | Notes | PROCESS | since | port |
|---|---|---|---|---|
| etcd | client | etcd | 4.4 | 2379 |`,
			entries: []E{{Port: 2379, Protocol: "tcp", Process: "etcd", Team: "etcd", Since: "4.4", Notes: "client"}},
		},
		{
			name: "service and component are process columns; team and added are aliases",
			md: `| Service | Port | Team | Added |
|-|-|-|-|
| sshd | 22 | node | 1.0 |

| Component | Port |
|-|-|
| kubelet | 10250 |`,
			entries: []E{
				{Port: 22, Protocol: "tcp", Process: "sshd", Team: "node", Since: "1.0"},
				{Port: 10250, Protocol: "tcp", Process: "kubelet"},
			},
		},
		{
			name: "description becomes the process when there is no process column",
			md: `Protocol | Port | Description
--- | --- | ---
TCP | 8081 | Chart Museum`,
			entries: []E{{Port: 8081, Protocol: "tcp", Process: "Chart Museum"}},
		},
		{
			name: "description and unknown columns go to notes",
			md: `| Port | Process | Description | Source | Notes |
|---|---|---|---|---|
| 9100 | node-exporter | metrics | Prometheus | scraped |`,
			entries: []E{{Port: 9100, Protocol: "tcp", Process: "node-exporter",
				Notes: "scraped; description: metrics; source: Prometheus"}},
		},
		{
			name: "TCP and UDP headings set the protocol default",
			md: `## External
### TCP
| Port | Process |
|---|---|
| 80 | haproxy |
### UDP
| Port | Process |
|---|---|
| 4789 | ovn-kubernetes |
## UDP and TCP
| Port | Process |
|---|---|
| 7946 | metallb |
## Neither
| Port | Process |
|---|---|
| 1 | x |`,
			entries: []E{
				{Port: 80, Protocol: "tcp", Process: "haproxy"},
				{Port: 4789, Protocol: "udp", Process: "ovn-kubernetes"},
				{Port: 7946, Protocol: []string{"tcp", "udp"}, Process: "metallb"},
				{Port: 1, Protocol: "tcp", Process: "x"},
			},
		},
		{
			name: "protocol cell overrides the heading; application protocols go to notes",
			md: `### UDP
| Port | Protocol | Process |
|---|---|---|
| 53 | TCP/UDP | dns |
| 500 | IPsec | ovn |
| 9099 | HTTPS | cvo |
| 123 | Typically UDP | ntp |
| 7472 | tcp or udp | metallb |`,
			entries: []E{
				{Port: 53, Protocol: []string{"tcp", "udp"}, Process: "dns"},
				{Port: 500, Protocol: "udp", Process: "ovn", Notes: "protocol: IPsec"},
				{Port: 9099, Protocol: "udp", Process: "cvo", Notes: "protocol: HTTPS"},
				{Port: 123, Protocol: "udp", Process: "ntp", Notes: "protocol: Typically UDP"},
				{Port: 7472, Protocol: []string{"tcp", "udp"}, Process: "metallb"},
			},
		},
		{
			name: "localhost section sets bind",
			md: `## Localhost-only
| Port | Process |
|---|---|
| 10248 | kubelet |
## External
| Port | Process |
|---|---|
| 10250 | kubelet |`,
			entries: []E{
				{Port: 10248, Protocol: "tcp", Process: "kubelet", Bind: "localhost"},
				{Port: 10250, Protocol: "tcp", Process: "kubelet"},
			},
		},
		{
			name: "localhost column and localhost only in notes",
			md: `| Port | Process | Localhost | Notes |
|---|---|---|---|
| 1 | a | yes | |
| 2 | b | no | |
| 3 | c | | internal frontend; localhost only |`,
			entries: []E{
				{Port: 1, Protocol: "tcp", Process: "a", Bind: "localhost"},
				{Port: 2, Protocol: "tcp", Process: "b"},
				{Port: 3, Protocol: "tcp", Process: "c", Bind: "localhost", Notes: "internal frontend; localhost only"},
			},
		},
		{
			name: "control plane only column values and note",
			md: `| Port | Process | Control-plane only | Notes |
|---|---|---|---|
| 1 | a | yes | |
| 2 | b | true | |
| 3 | c | x | |
| 4 | d | ✓ | |
| 5 | e | no | |
| 6 | f | | metrics, control plane only |
| 7 | g | maybe | |`,
			entries: []E{
				{Port: 1, Protocol: "tcp", Process: "a", NodeSelector: cp},
				{Port: 2, Protocol: "tcp", Process: "b", NodeSelector: cp},
				{Port: 3, Protocol: "tcp", Process: "c", NodeSelector: cp},
				{Port: 4, Protocol: "tcp", Process: "d", NodeSelector: cp},
				{Port: 5, Protocol: "tcp", Process: "e"},
				{Port: 6, Protocol: "tcp", Process: "f", NodeSelector: cp, Notes: "metrics, control plane only"},
				{Port: 7, Protocol: "tcp", Process: "g", Notes: "unparsed control-plane only cell: maybe"},
			},
		},
		{
			name: "control plane column header variant",
			md: `| Port | Process | Control plane |
|---|---|---|
| 6443 | kube-apiserver | Yes |`,
			entries: []E{{Port: 6443, Protocol: "tcp", Process: "kube-apiserver", NodeSelector: cp}},
		},
		{
			name: "port cells: single, ranges with hyphen and en dash, lists",
			md: `| Port | Process |
|---|---|
| 9100 | a |
| 9200-9219 | b |
| 9300–9309 | c |
| 10250, 10251 | d |
| 30000 - 32767 | e |
| 10280–10284<br>10290 | f |`,
			entries: []E{
				{Port: 9100, Protocol: "tcp", Process: "a"},
				{Port: "9200-9219", Protocol: "tcp", Process: "b"},
				{Port: "9300-9309", Protocol: "tcp", Process: "c"},
				{Port: 10250, Protocol: "tcp", Process: "d"},
				{Port: 10251, Protocol: "tcp", Process: "d"},
				{Port: "30000-32767", Protocol: "tcp", Process: "e"},
				{Port: "10280-10284", Protocol: "tcp", Process: "f"},
				{Port: 10290, Protocol: "tcp", Process: "f"},
			},
		},
		{
			name: "protocol and remarks inside port cells",
			md: `| Port | Service |
|---|---|
| TCP 22 (SSH), UDP 123 | controller |
| 53/udp | dns |
| 8090 (used only during upgrades) | upgrader |`,
			entries: []E{
				{Port: 22, Protocol: "tcp", Process: "controller", Notes: "port 22: SSH"},
				{Port: 123, Protocol: "udp", Process: "controller"},
				{Port: 53, Protocol: "udp", Process: "dns"},
				{Port: 8090, Protocol: "tcp", Process: "upgrader", Notes: "port 8090: used only during upgrades"},
			},
		},
		{
			name: "unparsed port pieces go to notes",
			md: `| Port | Process |
|---|---|
| 443, see below | web |
| 70000, 80 | bad |`,
			entries: []E{
				{Port: 443, Protocol: "tcp", Process: "web", Notes: "unparsed port cell: see below"},
				{Port: 80, Protocol: "tcp", Process: "bad", Notes: "unparsed port cell: 70000"},
			},
		},
		{
			name: "extra cells go to notes; short rows are padded",
			md: `| Port | Process | Notes |
|---|---|---|
| 1 | a | n | stray |
| 2 | b |`,
			entries: []E{
				{Port: 1, Protocol: "tcp", Process: "a", Notes: "n; extra cell: stray"},
				{Port: 2, Protocol: "tcp", Process: "b"},
			},
		},
		{
			name:    "inline markdown is stripped; escaped pipes are kept",
			md:      "| Port | Process | Notes |\n|---|---|---|\n| `10443` | **haproxy** | [fe](http://x) `fe_no_sni` a \\| b |",
			entries: []E{{Port: 10443, Protocol: "tcp", Process: "haproxy", Notes: "fe fe_no_sni a | b"}},
		},
		{
			name: "previously allocated section fills removed",
			md: `## Previously allocated
| Port | Process | Control-plane only | Owning Team | Added | Removed | Notes |
|---|---|---|---|---|---|---|
| 3306 | mariadb | yes | metal | 4.4 | 4.11 | ironic DB |
| 29101 | sdn rbac proxy | no | sdn | 4.0 | 4.17 | metrics, localhost-only |`,
			removed: []E{
				{Port: 3306, Protocol: "tcp", Process: "mariadb", NodeSelector: cp, Team: "metal", Since: "4.4", RemovedIn: "4.11", Notes: "ironic DB"},
				{Port: 29101, Protocol: "tcp", Process: "sdn rbac proxy", Team: "sdn", Since: "4.0", RemovedIn: "4.17", Notes: "metrics, localhost-only"},
			},
		},
		{
			name: "removed and deprecated headings; localhost in a removed section is a note",
			md: `## Removed ports
| Port | Process |
|---|---|
| 1 | a |
## Deprecated (localhost)
| Port | Process |
|---|---|
| 2 | b |`,
			removed: []E{
				{Port: 1, Protocol: "tcp", Process: "a"},
				{Port: 2, Protocol: "tcp", Process: "b", Notes: "localhost-only"},
			},
		},
		{
			name: "a removed column outside a removed section",
			md: `| Port | Process | Removed |
|---|---|---|
| 1 | a | |
| 2 | b | 4.17 |`,
			entries: []E{{Port: 1, Protocol: "tcp", Process: "a"}},
			removed: []E{{Port: 2, Protocol: "tcp", Process: "b", RemovedIn: "4.17"}},
		},
		{
			name: "a deeper heading keeps the outer context; a sibling resets it",
			md: `# Registry
## Localhost-only
### UDP
| Port | Process |
|---|---|
| 1 | a |
## TCP
| Port | Process |
|---|---|
| 2 | b |`,
			entries: []E{
				{Port: 1, Protocol: "udp", Process: "a", Bind: "localhost"},
				{Port: 2, Protocol: "tcp", Process: "b"},
			},
		},
		{
			name: "rows that cannot be entries are warned about",
			md: `| Protocol | Port | Description |
|---|---|---|
| ICMP | - | health checks |
| TCP | | nothing |
| TCP | 4240 | cilium-health |
| SCTP | 9999 | sctp thing |
| TCP | 1 | |
| TCP | any | x |`,
			entries: []E{{Port: 4240, Protocol: "tcp", Process: "cilium-health"}},
			warnings: []string{
				"line 3: row not imported: protocol icmp is not tcp or udp",
				"line 4: row not imported: no port",
				"line 6: row not imported: protocol sctp is not tcp or udp",
				"line 7: row not imported: no process, service or description",
				"line 8: row not imported: unparsed port cell: any",
			},
		},
		{
			name: "a table without a Port column is warned about",
			md: `| Source | Destination |
|---|---|
| a | b |

| Port | Process |
|---|---|
| 1 | a |`,
			entries:  []E{{Port: 1, Protocol: "tcp", Process: "a"}},
			warnings: []string{"line 1: table has no Port column (headers: Source, Destination); its 1 rows are not imported"},
		},
		{
			name:    "tables in code blocks are ignored",
			md:      "```\n| Port | Process |\n|---|---|\n| 9 | x |\n```\n| Port | Process |\n|---|---|\n| 1 | a |",
			entries: []E{{Port: 1, Protocol: "tcp", Process: "a"}},
		},
		{
			name: "setext headings set context",
			md: `UDP ports
---------
| Port | Process |
|---|---|
| 8472 | flannel |`,
			entries: []E{{Port: 8472, Protocol: "udp", Process: "flannel"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustImport(t, tt.md)
			if got := stripLines(res.Registry.Entries); !reflect.DeepEqual(got, tt.entries) && (len(got) > 0 || len(tt.entries) > 0) {
				t.Errorf("entries:\n got %#v\nwant %#v", got, tt.entries)
			}
			if got := stripLines(res.Registry.Removed); !reflect.DeepEqual(got, tt.removed) && (len(got) > 0 || len(tt.removed) > 0) {
				t.Errorf("removed:\n got %#v\nwant %#v", got, tt.removed)
			}
			if len(res.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings:\n got %q\nwant %q", res.Warnings, tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.HasPrefix(res.Warnings[i].String(), w) {
					t.Errorf("warning %d = %q, want prefix %q", i, res.Warnings[i], w)
				}
			}
			// Whatever came in, the output is a registry that parses.
			out, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := policy.Parse("out.yaml", out); err != nil {
				t.Errorf("output does not parse:\n%v\n%s", err, out)
			}
		})
	}
}

func TestMarkdownErrors(t *testing.T) {
	tests := []struct {
		name, regName, md, want string
	}{
		{"empty name", " ", "| Port |\n|-|\n| 1 |", "registry name is empty"},
		{"no table", "x", "# Ports\n\nport 22 is ssh\n", "no pipe table with a Port column"},
		{"only non-port tables", "x", "| a | b |\n|-|-|\n| 1 | 2 |", "no pipe table with a Port column"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := importer.Markdown(tt.regName, strings.NewReader(tt.md))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestYAML(t *testing.T) {
	res := mustImport(t, `---
title: Port list
---
| Port | Process |
|---|---|
| 1 | a |
| ? | b |
| 2 | c |

## Previously allocated
| Port | Process |
|---|---|
| x | gone |

| Name | Value |
|---|---|
| k | v |
`)
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	want := `# Imported from markdown by bindguard import. Review before enforcing:
# notes hold what had no field; commented rows could not be imported.
apiVersion: bindguard.io/v1
kind: PortRegistry
metadata:
  name: test
  source: Port list
entries:
  - port: 1
    protocol: tcp
    process: a
  # line 7: not imported (unparsed port cell: ?): | ? | b |
  - port: 2
    protocol: tcp
    process: c
removed:
  # line 13: not imported (unparsed port cell: x): | x | gone |
# line 15: table without a Port column not imported: | Name | Value |
`
	if string(out) != want {
		t.Errorf("YAML:\n%s\nwant:\n%s", out, want)
	}
	if _, err := policy.Parse("out.yaml", out); err != nil {
		t.Errorf("output does not parse: %v", err)
	}
}

func importOpenShift(t *testing.T) []byte {
	t.Helper()
	f, err := os.Open("testdata/openshift.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := importer.Markdown("openshift", f)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("warnings: %q", res.Warnings)
	}
	if got := res.Registry.Metadata.Source; got != "Host Port Registry" {
		t.Errorf("metadata.source = %q", got)
	}
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestOpenShift imports the OpenShift host port registry and checks it: the
// only problem is the one in the document itself, port 10256/tcp listed both
// for ovnkube-node and as removed with openshift-sdn.
func TestOpenShift(t *testing.T) {
	out := importOpenShift(t)
	reg, err := policy.Parse("openshift.yaml", out)
	if err != nil {
		t.Fatalf("parse:\n%v", err)
	}
	// 68 TCP + 5 UDP + 21 localhost-only rows; 7 previously allocated.
	if len(reg.Entries) != 94 || len(reg.Removed) != 7 {
		t.Errorf("%d entries, %d removed; want 94, 7", len(reg.Entries), len(reg.Removed))
	}
	for _, labels := range []map[string]string{nil, {"role": "control-plane"}, {"role": "worker"}} {
		errs := reg.Validate(labels)
		if len(errs) != 1 {
			t.Fatalf("Validate(%s): want exactly the 10256 conflict, got:\n%v", policy.FormatLabels(labels), errs)
		}
		msg := errs[0].Msg
		if !strings.HasPrefix(msg, `removed port 10256/tcp ("openshift-sdn", removed in 4.17) is still claimed by "ovn-kubernetes ovnkube-node"`) {
			t.Errorf("Validate(%s) = %v", policy.FormatLabels(labels), errs)
		}
	}

	// With the removed 10256 row taken out, every node compiles.
	reg.Removed = slices.DeleteFunc(reg.Removed, func(e policy.Entry) bool { return e.Ports.Lo == 10256 })
	cpNode, err := policy.Compile(reg, map[string]string{"role": "control-plane"})
	if err != nil {
		t.Fatal(err)
	}
	worker, err := policy.Compile(reg, map[string]string{"role": "worker"})
	if err != nil {
		t.Fatal(err)
	}
	if cpNode.Lookup(2379, policy.TCP) == nil || worker.Lookup(2379, policy.TCP) != nil {
		t.Error("2379/tcp: want declared on control-plane nodes only")
	}
	if r := worker.Lookup(10443, policy.TCP); r == nil || !r.Localhost {
		t.Error("10443/tcp: want localhost-only (\"localhost only\" in its notes)")
	}
	if r := worker.Lookup(9122, policy.UDP); r == nil {
		t.Error("9122/udp: want declared from the UDP table")
	}
	if r := cpNode.Lookup(3306, policy.TCP); r == nil || !r.Removed {
		t.Error("3306/tcp: want removed on control-plane nodes")
	}
}

// controlPlaneOnly reports whether a selector asks for a control-plane
// node: the importer writes {role: control-plane}, the builtin OpenShift's
// own label.
func controlPlaneOnly(s policy.Selector) bool {
	_, imported := s.MatchLabels[importer.ControlPlaneLabel]
	_, builtin := s.MatchLabels["node-role.kubernetes.io/master"]
	return imported || builtin
}

// TestOpenShiftMatchesBuiltin checks the import against the hand-written
// builtin registry of the same document: same ports, protocols, processes,
// binds, control-plane selectors, teams and releases. Notes differ in form;
// the builtin adds a network-type label to resolve the 10256 clash.
func TestOpenShiftMatchesBuiltin(t *testing.T) {
	imported, err := policy.Parse("openshift.yaml", importOpenShift(t))
	if err != nil {
		t.Fatal(err)
	}
	builtin, err := policy.Load("builtin:openshift")
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		ports     policy.PortRange
		protos    string
		process   string
		bind      policy.Bind
		cpOnly    bool
		team      string
		since     string
		removedIn string
	}
	keys := func(es []policy.Entry) []key {
		var out []key
		for _, e := range es {
			out = append(out, key{e.Ports, formatProtocols(e.Protocols),
				e.Process, e.Bind, controlPlaneOnly(e.NodeSelector), e.Team, e.Since, e.RemovedIn})
		}
		slices.SortFunc(out, func(a, b key) int {
			if a.ports.Lo != b.ports.Lo {
				return int(a.ports.Lo) - int(b.ports.Lo)
			}
			return strings.Compare(a.protos, b.protos)
		})
		return out
	}
	for _, list := range []struct {
		name string
		a, b []policy.Entry
	}{
		{"entries", imported.Entries, builtin.Entries},
		{"removed", imported.Removed, builtin.Removed},
	} {
		a, b := keys(list.a), keys(list.b)
		if !reflect.DeepEqual(a, b) {
			for i := range max(len(a), len(b)) {
				var x, y key
				if i < len(a) {
					x = a[i]
				}
				if i < len(b) {
					y = b[i]
				}
				if x != y {
					t.Errorf("%s[%d]: import %+v, builtin %+v", list.name, i, x, y)
				}
			}
		}
	}
}

func formatProtocols(ps []policy.Protocol) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}
