package policy

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// errLineRE: every error says where, or (a few YAML syntax errors) says
// that the parser gave no place, rather than pointing at 1:1.
var errLineRE = regexp.MustCompile(`^f\.yaml(:\d+:\d+: \S|: .*\(the YAML parser gives no position\)$)`)

// FuzzParse checks that no input makes Parse, Validate or Compile panic or
// hang, that every error is positioned, and that what parses compiles to a
// well-formed policy or is refused.
func FuzzParse(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.*")
	more, _ := filepath.Glob("testdata/dir/*.*")
	for _, p := range append(seeds, more...) {
		if data, err := os.ReadFile(p); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(header + "  - &e {port: 1-65535, protocol: [tcp, udp], process: a, owners: [{uid: 1}]}\n  - *e\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte(header + "  - {port: 1, process: a, nodeSelector: {matchLabels: {a: b}, matchExpressions: [{key: c, operator: In, values: [d]}, {key: e, operator: DoesNotExist}]}}\n" +
		"  - {port: 1, process: b, nodeSelector: {matchExpressions: [{key: c, operator: NotIn, values: [d]}]}}\n"))
	f.Add([]byte(header + "  - {port: 1, process: a}\n---\n" + header + "  - {port: 1, process: b}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		reg, err := Parse("f.yaml", data)
		if reg == nil {
			t.Fatal("nil registry")
		}
		if err != nil {
			for _, e := range err.(ErrorList) {
				if !errLineRE.MatchString(e.Error()) {
					t.Fatalf("error not positioned: %q", e.Error())
				}
			}
		}
		errs := reg.Validate(nil)
		if err != nil && len(errs) == 0 {
			t.Fatal("Validate dropped the parse errors")
		}
		c, cerr := Compile(reg, map[string]string{"role": "x"})
		if (cerr == nil) && err != nil {
			t.Fatal("a registry with parse errors compiled")
		}
		if cerr != nil {
			return
		}
		for i := 1; i < len(c.Rules); i++ {
			a, b := c.Rules[i-1], c.Rules[i]
			if a.Protocol > b.Protocol || a.Protocol == b.Protocol && a.Port >= b.Port {
				t.Fatalf("rules out of order: %+v, %+v", a, b)
			}
		}
		for _, r := range c.Rules {
			if r.Origin < 0 || r.Origin >= len(c.Origins) || r.Owners.Count() > MaxOwnersPerRule {
				t.Fatalf("bad rule %+v", r)
			}
		}
	})
}
