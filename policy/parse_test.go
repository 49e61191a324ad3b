package policy

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// header is the first lines of every test document; entries start on line 4.
const header = "apiVersion: bindguard.io/v1\nkind: PortRegistry\nentries:\n"

// errLines returns "LINE:COL: msg" for each error, dropping the file name.
func errLines(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("error is %T, not an ErrorList: %v", err, err)
	}
	var out []string
	for _, e := range list {
		out = append(out, fmt.Sprintf("%d:%d: %s", e.Pos.Line, e.Pos.Col, e.Msg))
	}
	return out
}

// matchErrors checks that got has exactly one line per want, each starting
// with want's "LINE:COL: " and containing the rest.
func matchErrors(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i, w := range want {
		pos, msg, _ := strings.Cut(w, ": ")
		if !strings.HasPrefix(got[i], pos+": ") || !strings.Contains(got[i], msg) {
			t.Errorf("error %d:\n got %s\nwant %s", i, got[i], w)
		}
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string // the whole document, or entries appended to header when it starts with "  -"
		want []string
	}{
		{"syntax", "a: [\n", []string{`1:1: invalid yaml: did not find expected node content`}},
		{"syntax line", header + "  - port: 1\n    process: x\n  bad\n", []string{`6:1: invalid yaml:`}},
		{"empty file", "", []string{`1:1: file is empty`}},
		{"comments only", "# nothing\n---\n", []string{`1:1: file is empty`}},
		{"not a mapping", "- 1\n", []string{`1:1: a registry must be a mapping`}},
		{"wrong apiVersion", "apiVersion: v2\nkind: PortRegistry\n", []string{`1:13: apiVersion "v2" is not supported: want bindguard.io/v1`}},
		{"wrong kind", "apiVersion: bindguard.io/v1\nkind: ConfigMap\n", []string{`2:7: kind "ConfigMap": want PortRegistry`}},
		{"missing apiVersion and kind", "entries: []\n", []string{`1:1: missing apiVersion`, `1:1: missing kind`}},
		{"unknown top field", header + "spec: {}\n", []string{`4:1: unknown field "spec" in registry: want apiVersion, kind, metadata, entries, removed`}},
		{"unknown metadata field", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: a, labels: {}}\n", []string{`3:21: unknown field "labels" in metadata: want name, source`}},
		{"metadata type", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: 5\n", []string{`3:11: metadata: want a mapping`}},
		{"entries type", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nentries: {port: 1}\n", []string{`3:10: entries: want a list of entries, got a mapping`}},
		{"entry type", header + "  - 5\n", []string{`4:5: entry: want a mapping`}},
		{"duplicate key", header + "  - port: 1\n    process: a\n    port: 2\n", []string{`6:5: mapping key "port" already defined at line 4`}},
		{"duplicate top key", header + "  - {port: 1, process: a}\nentries: []\n", []string{`5:1: mapping key "entries" already defined at line 3`}},
		{"unknown entry field", header + "  - port: 1\n    process: a\n    prots: udp\n", []string{`6:5: unknown field "prots" in entry: want port, protocol, process, owners, nodeSelector, bind, mode, team, since, notes`}},
		{"unknown field suggestion", header + "  - {port: 1, process: a, nodeselector: {}}\n", []string{`4:27: unknown field "nodeselector" in entry (did you mean "nodeSelector"?)`}},
		{"merge key", header + "  - {<<: {port: 1}, process: a}\n", []string{`4:5: entry has no port`, `4:6: merge keys (<<) are not supported`}},
		{"port not a number", header + "  - {port: abc, process: a}\n", []string{`4:12: port "abc" is not a number: want 1-65535 or a range like "9200-9219"`}},
		{"port wrong type", header + "  - {port: [1], process: a}\n", []string{`4:12: port: want an integer 1-65535 or a range like "9200-9219", got a list`}},
		{"port float", header + "  - {port: 1.5, process: a}\n", []string{`4:12: port: want an integer 1-65535 or a range like "9200-9219", got number 1.5`}},
		{"port zero", header + "  - {port: 0, process: a}\n", []string{`4:12: port 0 is not allowed`}},
		{"port too big", header + "  - {port: 65536, process: a}\n", []string{`4:12: port 65536 is out of range: want 1-65535`}},
		{"port negative", header + "  - {port: -1, process: a}\n", []string{`4:12: port -1 is out of range: want 1-65535`}},
		{"port leading zero", header + "  - {port: 0443, process: a}\n", []string{`4:12: port 0443 has a leading 0: write ports in decimal, like 443 (YAML reads a leading 0 as octal)`}},
		{"port hex", header + "  - {port: 0x1bb, process: a}\n", []string{`4:12: port 0x1bb is not a plain decimal number: write ports in decimal, without a leading 0, 0x, 0o, 0b, + or _`}},
		{"port octal prefix", header + "  - {port: 0o14, process: a}\n", []string{`4:12: port 0o14 is not a plain decimal number: write ports in decimal`}},
		{"port plus", header + "  - {port: +443, process: a}\n", []string{`4:12: port +443 is not a plain decimal number: write ports in decimal`}},
		{"port underscore", header + "  - {port: 1_000, process: a}\n", []string{`4:12: port 1_000 is not a plain decimal number: write ports in decimal`}},
		{"port string leading zero", header + "  - {port: \"0443\", process: a}\n", []string{`4:12: port 0443 has a leading 0: write ports in decimal, like 443`}},
		{"range leading zero", header + "  - {port: 09200-09219, process: a}\n", []string{`4:12: port range "09200-09219": port 09200 has a leading 0: write ports in decimal, like 9200`}},
		{"range leading zero high", header + "  - {port: 9200-09219, process: a}\n", []string{`4:12: port range "9200-09219": port 09219 has a leading 0`}},
		{"port missing", header + "  - {process: a}\n", []string{`4:5: entry has no port`}},
		{"range reversed", header + "  - {port: \"9219-9200\", process: a}\n", []string{`4:12: port range "9219-9200" is reversed: write "9200-9219"`}},
		{"range malformed", header + "  - {port: \"9200-\", process: a}\n", []string{`4:12: malformed port range "9200-": want LO-HI like "9200-9219"`}},
		{"range three parts", header + "  - {port: 1-2-3, process: a}\n", []string{`4:12: malformed port range "1-2-3"`}},
		{"range zero", header + "  - {port: 0-5, process: a}\n", []string{`4:12: port range "0-5": port 0 is not allowed`}},
		{"range too big", header + "  - {port: 65530-65536, process: a}\n", []string{`4:12: port range "65530-65536": port 65536 is out of range`}},
		{"protocol sctp", header + "  - {port: 1, protocol: sctp, process: a}\n", []string{`4:25: protocol "sctp" is not supported: bindguard checks TCP and UDP binds (MPTCP counts as TCP); SCTP sockets are not judged`}},
		{"protocol dccp in list", header + "  - {port: 1, protocol: [tcp, dccp], process: a}\n", []string{`4:31: protocol "dccp" is not supported`}},
		{"protocol mptcp", header + "  - {port: 1, protocol: mptcp, process: a}\n", []string{`4:25: protocol "mptcp": write tcp; MPTCP binds are checked as TCP`}},
		{"protocol unknown", header + "  - {port: 1, protocol: http, process: a}\n", []string{`4:25: unknown protocol "http": want tcp, udp or a list of them`}},
		{"protocol duplicate", header + "  - {port: 1, protocol: [udp, tcp, UDP], process: a}\n", []string{`4:36: protocol udp is listed twice`}},
		{"protocol empty list", header + "  - {port: 1, protocol: [], process: a}\n", []string{`4:25: protocol list is empty`}},
		{"protocol wrong type", header + "  - {port: 1, protocol: {tcp: 1}, process: a}\n", []string{`4:25: protocol: want tcp, udp or a list of them, got a mapping`}},
		{"process missing", header + "  - {port: 1}\n", []string{`4:5: entry has no process`}},
		{"process empty", header + "  - {port: 1, process: \"  \"}\n", []string{`4:24: process is empty`}},
		{"process null", header + "  - {port: 1, process: }\n", []string{`4:24: process is empty`}},
		{"process wrong type", header + "  - {port: 1, process: [a]}\n", []string{`4:24: process: want a string, got a list`}},
		{"process NUL", header + "  - {port: 1, process: \"\\x00removed\"}\n", []string{`4:24: process "\x00removed" contains the control character U+0000: control characters are not allowed in process`}},
		{"process newline", header + "  - {port: 1, process: \"a\\nb\"}\n", []string{`4:24: process "a\nb" contains the control character U+000A`}},
		{"process escape", header + "  - {port: 1, process: \"\\e[31ma\"}\n", []string{`4:24: process "\x1b[31ma" contains the control character U+001B`}},
		{"process C1", header + "  - {port: 1, process: \"a\\u009bb\"}\n", []string{`4:24: process "a\u009bb" contains the control character U+009B`}},
		{"team control", header + "  - {port: 1, process: a, team: \"t\\x07\"}\n", []string{`4:33: team "t\a" contains the control character U+0007`}},
		{"since control", header + "  - {port: 1, process: a, since: \"4.1\\r\"}\n", []string{`4:34: since "4.1\r" contains the control character U+000D`}},
		{"notes control", header + "  - {port: 1, process: a, notes: \"ok\\nFAKE: line\"}\n", []string{`4:34: notes "ok\nFAKE: line" contains the control character U+000A`}},
		{"removed control", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nremoved:\n  - {port: 1, process: a, removed: \"4.17\\x00\"}\n", []string{`4:36: removed "4.17\x00" contains the control character U+0000`}},
		{"metadata control", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nmetadata: {name: \"a\\tb\"}\n", []string{`3:18: metadata.name "a\tb" contains the control character U+0009`}},
		{"cgroup control", header + "  - {port: 1, process: a, owners: [{cgroup: \"/a\\nb\"}]}\n", []string{`4:45: cgroup "/a\nb" contains the control character U+000A`}},
		{"bind", header + "  - {port: 1, process: a, bind: public}\n", []string{`4:33: bind "public": want any or localhost`}},
		{"mode", header + "  - {port: 1, process: a, mode: warn}\n", []string{`4:33: mode "warn": want audit or enforce`}},
		{"selector type", header + "  - {port: 1, process: a, nodeSelector: [role]}\n", []string{`4:41: nodeSelector: want a mapping of label to value, or matchLabels and matchExpressions, got a list`}},
		{"selector empty key", header + "  - {port: 1, process: a, nodeSelector: {\"\": x}}\n", []string{`4:42: node selector key is empty`}},
		{"selector bad key", header + "  - {port: 1, process: a, nodeSelector: {\"bad key\": x}}\n", []string{`4:42: node selector key "bad key" is not a valid label key`}},
		{"selector bad prefix", header + "  - {port: 1, process: a, nodeSelector: {\"Example.com/x\": y}}\n", []string{`4:42: node selector key "Example.com/x" is not a valid label key: prefix part a lowercase RFC 1123 subdomain`}},
		{"selector long name", header + "  - {port: 1, process: a, nodeSelector: {" + strings.Repeat("x", 64) + ": y}}\n", []string{`4:42: is not a valid label key`}},
		{"selector bad value", header + "  - {port: 1, process: a, nodeSelector: {zone: -a}}\n", []string{`4:48: node selector zone: value "-a" is not a valid label value`}},
		{"selector int value", header + "  - {port: 1, process: a, nodeSelector: {zone: 1}}\n", []string{`4:48: node selector zone: want a string value, got integer 1: quote it, "1"`}},
		{"selector bool value", header + "  - {port: 1, process: a, nodeSelector: {gpu: true}}\n", []string{`4:47: node selector gpu: want a string value, got boolean true`}},
		{"selector null value", header + "  - {port: 1, process: a, nodeSelector: {gpu: }}\n", []string{`4:47: node selector gpu: want a string value, got nothing: quote it, ""`}},
		{"selector nested value", header + "  - {port: 1, process: a, nodeSelector: {gpu: [a]}}\n", []string{`4:47: node selector gpu: want a string value, got a list`}},
		{"selector duplicate key", header + "  - {port: 1, process: a, nodeSelector: {a: x, a: y}}\n", []string{`4:48: mapping key "a" already defined at line 4`}},
		{"owners wrong type", header + "  - {port: 1, process: a, owners: 5}\n", []string{`4:35: owners: want a list of items each with one of cgroup, unit, uid, pod, got integer 5`}},
		{"owners empty list", header + "  - {port: 1, process: a, owners: []}\n", []string{`4:35: owners list is empty: omit owners to let any process bind`}},
		{"owner not a mapping", header + "  - {port: 1, process: a, owners: [root]}\n", []string{`4:36: owner: want a mapping with exactly one of cgroup, unit, uid, pod, got string "root"`}},
		{"owner none", header + "  - {port: 1, process: a, owners: [{}]}\n", []string{`4:36: owner names none of cgroup, unit, uid, pod: want exactly one`}},
		{"owner two", header + "  - {port: 1, process: a, owners: [{uid: 0, unit: a.service}]}\n", []string{`4:36: owner names uid and unit: want exactly one of cgroup, unit, uid, pod per item`}},
		{"owner unknown field", header + "  - {port: 1, process: a, owners: [{user: root}]}\n", []string{`4:36: owner names none`, `4:37: unknown field "user" in owner: want cgroup, unit, uid, pod`}},
		{"cgroup relative", header + "  - {port: 1, process: a, owners: [{cgroup: system.slice}]}\n", []string{`4:45: cgroup "system.slice" is not absolute`}},
		{"cgroup dotdot", header + "  - {port: 1, process: a, owners: [{cgroup: /a/../b}]}\n", []string{`4:45: cgroup "/a/../b" contains ".."`}},
		{"cgroup unclean", header + "  - {port: 1, process: a, owners: [{cgroup: /a/./b/}]}\n", []string{`4:45: cgroup "/a/./b/" is not clean: write "/a/b"`}},
		{"cgroup root", header + "  - {port: 1, process: a, owners: [{cgroup: /}]}\n", []string{`4:45: cgroup "/" is the root`}},
		{"cgroup mount path", header + "  - {port: 1, process: a, owners: [{cgroup: /sys/fs/cgroup/a.slice}]}\n", []string{`4:45: without /sys/fs/cgroup`}},
		{"cgroup wrong type", header + "  - {port: 1, process: a, owners: [{cgroup: 5}]}\n", []string{`4:45: cgroup: want a string, got integer 5`}},
		{"unit no suffix", header + "  - {port: 1, process: a, owners: [{unit: etcd}]}\n", []string{`4:43: unit "etcd" has no unit suffix`}},
		{"unit timer", header + "  - {port: 1, process: a, owners: [{unit: backup.timer}]}\n", []string{`4:43: unit "backup.timer" runs no processes of its own`}},
		{"unit template", header + "  - {port: 1, process: a, owners: [{unit: getty@.service}]}\n", []string{`4:43: unit "getty@.service" is a template: name an instance like getty@NAME.service`}},
		{"unit bad chars", header + "  - {port: 1, process: a, owners: [{unit: \"a b.service\"}]}\n", []string{`4:43: unit "a b.service" is not a valid systemd unit name`}},
		{"uid negative", header + "  - {port: 1, process: a, owners: [{uid: -1}]}\n", []string{`4:42: uid -1 is out of range: want 0-4294967294`}},
		{"uid too big", header + "  - {port: 1, process: a, owners: [{uid: 4294967295}]}\n", []string{`4:42: uid 4294967295 is out of range: want 0-4294967294`}},
		{"uid leading zero", header + "  - {port: 1, process: a, owners: [{uid: 01000}]}\n", []string{`4:42: uid 01000 has a leading 0: write uids in decimal, like 1000 (YAML reads a leading 0 as octal)`}},
		{"uid hex", header + "  - {port: 1, process: a, owners: [{uid: 0x3e8}]}\n", []string{`4:42: uid 0x3e8 is not a plain decimal number: write uids in decimal`}},
		{"uid double zero", header + "  - {port: 1, process: a, owners: [{uid: 00}]}\n", []string{`4:42: uid 00 has a leading 0: write uids in decimal, like 0`}},
		{"uid string", header + "  - {port: 1, process: a, owners: [{uid: \"0\"}]}\n", []string{`4:42: uid: want an integer 0-4294967294, got string "0"`}},
		{"too many owners", header + "  - port: 1\n    process: a\n    owners:\n" + strings.Repeat("", 0) + uidList(MaxOwnersPerRule+1), []string{fmt.Sprintf(`7:7: %d owners: at most %d are allowed per port`, MaxOwnersPerRule+1, MaxOwnersPerRule)}},
		{"removed unknown field", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nremoved:\n  - {port: 1, process: a, owners: []}\n", []string{`4:27: unknown field "owners" in removed entry: want port, protocol, process, nodeSelector, removed, team, since, notes`}},
		{"removed no process", "apiVersion: bindguard.io/v1\nkind: PortRegistry\nremoved:\n  - {port: 1}\n", []string{`4:5: removed entry has no process`}},
		{"key not a string", header + "  - {[a]: 1, port: 1, process: a}\n", []string{`4:6: entry key must be a string, got a list`}},
		{"unknown anchor", header + "  - {port: *nope, process: a}\n", []string{`4:12: invalid yaml: unknown anchor 'nope' referenced`}},
		{"unknown anchor later", "# *nopeX\n" + header + "  - {port: 1, process: a}\n  - port: 2\n    process: *nope\n", []string{`7:14: invalid yaml: unknown anchor 'nope' referenced`}},
		{"control character", header + "  - {port: 1, process: a}\n  - {port: 2, process: \"\x01\"}\n", []string{`5:25: invalid yaml: control characters are not allowed`}},
		{"invalid utf-8", header + "  - {port: 1, process: \"é\xff\"}\n", []string{`4:26: invalid yaml: invalid leading UTF-8 octet`}},
		{"second document", header + "  - {port: 1, process: a}\n---\n" + header + "  - {port: x, process: b}\n", []string{`9:12: port "x" is not a number`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := Parse("t.yaml", []byte(tt.doc))
			if reg == nil {
				t.Fatal("Parse returned a nil registry")
			}
			got := errLines(t, err)
			matchErrors(t, got, tt.want)
			if _, err := Compile(reg, nil); err == nil {
				t.Error("a registry with parse errors compiled")
			}
		})
	}
}

func uidList(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "      - uid: %d\n", i)
	}
	return b.String()
}

func TestParseManyErrorsAtOnce(t *testing.T) {
	data, err := os.ReadFile("testdata/three-mistakes.yaml")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := Parse("testdata/three-mistakes.yaml", data)
	got := strings.Split(err.Error(), "\n")
	want := []string{
		`testdata/three-mistakes.yaml:8:11: port 70000 is out of range: want 1-65535`,
		`testdata/three-mistakes.yaml:11:15: protocol "sctp" is not supported: bindguard checks TCP and UDP binds (MPTCP counts as TCP); SCTP sockets are not judged`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// The well-formed entries remain, so Validate adds the conflict.
	all := reg.Validate(nil)
	want = append(want, `testdata/three-mistakes.yaml:13:5: port 2379/tcp claimed by "not-etcd" conflicts with "etcd" at testdata/three-mistakes.yaml:6:5`)
	got = strings.Split(all.Error(), "\n")
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Validate errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestParseValues(t *testing.T) {
	reg, err := Parse("t.yaml", []byte(`apiVersion: bindguard.io/v1
kind: PortRegistry
metadata: {name: n, source: s}
entries:
  - {port: 1, process: defaults}
  - port: "9200 - 9219"
    protocol: [UDP, tcp]
    process: " spaced "
    bind: localhost
    mode: audit
    since: 4.10
    team: t
    notes: n
    owners:
      - uid: 1000
      - cgroup: /b.slice
      - unit: b.service
      - cgroup: /a.slice
      - uid: 0
      - uid: 1000
    nodeSelector: {node-role.kubernetes.io/master: "", zone: a}
  - {port: 16, process: dec}
removed:
  - {port: 5, protocol: udp, process: old, removed: "4.17", notes: gone}
`))
	if err != nil {
		t.Fatal(err)
	}
	want := &Registry{
		Sources: []Source{{File: "t.yaml", Name: "n", Source: "s", Pos: Pos{"t.yaml", 1, 1}}},
		Entries: []Entry{
			{Pos: Pos{"t.yaml", 5, 5}, Ports: PortRange{1, 1}, Protocols: []Protocol{TCP}, Process: "defaults", Bind: BindAny},
			{
				Pos: Pos{"t.yaml", 6, 5}, Ports: PortRange{9200, 9219}, Protocols: []Protocol{UDP, TCP}, Process: "spaced",
				Bind: BindLocalhost, Mode: ModeAudit, Since: "4.10", Team: "t", Notes: "n",
				Owners:       Owners{Cgroups: []string{"/a.slice", "/b.slice"}, Units: []string{"b.service"}, UIDs: []uint32{0, 1000}},
				NodeSelector: LabelSelector(map[string]string{"node-role.kubernetes.io/master": "", "zone": "a"}),
			},
			{Pos: Pos{"t.yaml", 22, 5}, Ports: PortRange{16, 16}, Protocols: []Protocol{TCP}, Process: "dec", Bind: BindAny},
		},
		Removed: []Entry{
			{Pos: Pos{"t.yaml", 24, 5}, Ports: PortRange{5, 5}, Protocols: []Protocol{UDP}, Process: "old", Bind: BindAny, Removed: true, RemovedIn: "4.17", Notes: "gone"},
		},
	}
	reg.Digest = ""
	if !reflect.DeepEqual(reg, want) {
		t.Errorf("Parse:\n got %+v\nwant %+v", reg, want)
	}
}

func TestParseAliases(t *testing.T) {
	reg, err := Parse("t.yaml", []byte(header+`  - port: 1
    process: a
    owners: &owners
      - unit: a.service
  - {port: 2, process: a, owners: *owners}
  - &e {port: 3, process: a}
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Entries) != 3 || !reflect.DeepEqual(reg.Entries[1].Owners.Units, []string{"a.service"}) {
		t.Errorf("entries: %+v", reg.Entries)
	}
	// An anchor that holds an error is reported once, not once per alias.
	_, err = Parse("t.yaml", []byte(header+"  - &e {port: 0, process: a}\n  - *e\n  - *e\n"))
	matchErrors(t, errLines(t, err), []string{`4:15: port 0 is not allowed`})
}

func TestParseMultipleDocuments(t *testing.T) {
	reg, err := Parse("t.yaml", []byte(header+"  - {port: 1, process: a}\n---\n"+header+"  - {port: 2, process: b}\n---\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Sources) != 2 || len(reg.Entries) != 2 || reg.Entries[1].Pos.Line != 9 {
		t.Errorf("got %d sources, entries %+v", len(reg.Sources), reg.Entries)
	}
}

// TestSyntaxErrorNoPosition: a YAML error without a line that cannot be
// found in the input is reported without a position, not at 1:1.
func TestSyntaxErrorNoPosition(t *testing.T) {
	p := &parser{file: "x.yaml"}
	p.syntaxError(errors.New("yaml: something odd"), []byte("a: 1\n"))
	want := "x.yaml: invalid yaml: something odd (the YAML parser gives no position)"
	if got := p.errs.Error(); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestErrorListSorted(t *testing.T) {
	l := ErrorList{
		{Pos: Pos{"b.yaml", 1, 1}, Msg: "b"},
		{Pos: Pos{"a.yaml", 10, 2}, Msg: "c"},
		{Pos: Pos{"a.yaml", 2, 9}, Msg: "d"},
		{Pos: Pos{"a.yaml", 10, 1}, Msg: "e"},
	}
	want := "a.yaml:2:9: d\na.yaml:10:1: e\na.yaml:10:2: c\nb.yaml:1:1: b"
	if got := l.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
	if ErrorList(nil).Err() != nil {
		t.Error("empty ErrorList.Err() is not nil")
	}
}

// TestParseAliasBomb: aliases repeat a bad anchor many times. The node
// budget bounded the nodes visited, not the errors kept: one entry with
// 2,000 bad owners aliased 20,000 times took 15 s and 1.2 GB to check.
// Errors are now kept once each, and parsing stops after maxErrors.
func TestParseAliasBomb(t *testing.T) {
	bomb := func(owners int, ownerLine string, aliases int) []byte {
		var b strings.Builder
		b.WriteString(header + "  - &e\n    port: 1\n    process: a\n    owners:\n      - &o {bogus: 1}\n")
		for range owners {
			b.WriteString(ownerLine)
		}
		for range aliases {
			b.WriteString("  - *e\n")
		}
		return []byte(b.String())
	}
	t.Run("many distinct errors", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		reg, err := Parse("bomb.yaml", bomb(2000, "      - {bogus: 1}\n", 20000))
		runtime.ReadMemStats(&after)
		got := errLines(t, err)
		if len(got) != 101 {
			t.Fatalf("got %d errors, want 100 and a last line", len(got))
		}
		if last := got[len(got)-1]; !strings.Contains(last, "too many errors: stopped after 100; fix these and check again") {
			t.Errorf("last error %q, want too many errors", last)
		}
		if len(reg.Entries) != 0 {
			t.Errorf("%d entries kept from a bad anchor", len(reg.Entries))
		}
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("parsing allocated %d bytes", alloc)
		if alloc > 64<<20 {
			t.Errorf("parsing allocated %d bytes", alloc)
		}
	})
	t.Run("one error repeated", func(t *testing.T) {
		reg, err := Parse("bomb.yaml", bomb(2000, "      - *o\n", 20000))
		matchErrors(t, errLines(t, err), []string{
			`8:9: owner names none of cgroup, unit, uid, pod`,
			`8:13: unknown field "bogus" in owner`,
		})
		if len(reg.Entries) != 0 {
			t.Errorf("%d entries kept from a bad anchor", len(reg.Entries))
		}
	})
}
