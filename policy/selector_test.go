package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestSelectorParse(t *testing.T) {
	tests := []struct {
		name string
		sel  string // the nodeSelector's YAML, in flow style
		want Selector
	}{
		{"short form", `{node-role.kubernetes.io/control-plane: ""}`, LabelSelector(map[string]string{"node-role.kubernetes.io/control-plane": ""})},
		{"matchLabels", `{matchLabels: {kubernetes.io/os: linux}}`, LabelSelector(map[string]string{"kubernetes.io/os": "linux"})},
		{"both", `{matchLabels: {a: b}, matchExpressions: [{key: c, operator: In, values: [d, e]}, {key: f, operator: DoesNotExist}]}`,
			Selector{MatchLabels: map[string]string{"a": "b"}, MatchExpressions: []Requirement{{"c", OpIn, []string{"d", "e"}}, {"f", OpDoesNotExist, nil}}}},
		{"exists", `{matchExpressions: [{key: node-role.kubernetes.io/master, operator: Exists}]}`,
			Selector{MatchExpressions: []Requirement{{"node-role.kubernetes.io/master", OpExists, nil}}}},
		{"exists empty values", `{matchExpressions: [{key: a, operator: Exists, values: []}]}`,
			Selector{MatchExpressions: []Requirement{{"a", OpExists, []string{}}}}},
		{"notin", `{matchExpressions: [{key: a, operator: NotIn, values: [""]}]}`,
			Selector{MatchExpressions: []Requirement{{"a", OpNotIn, []string{""}}}}},
		{"null", `null`, Selector{}},
		{"empty long form", `{matchLabels: {}, matchExpressions: []}`, Selector{MatchLabels: map[string]string{}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := Parse("t.yaml", []byte(header+"  - {port: 1, process: a, nodeSelector: "+tt.sel+"}\n"))
			if err != nil {
				t.Fatal(err)
			}
			got := reg.Entries[0].NodeSelector
			if !maps.Equal(got.MatchLabels, tt.want.MatchLabels) || !slices.EqualFunc(got.MatchExpressions, tt.want.MatchExpressions, func(a, b Requirement) bool {
				return a.Key == b.Key && a.Operator == b.Operator && slices.Equal(a.Values, b.Values)
			}) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSelectorParseErrors(t *testing.T) {
	// The selector starts at column 41 of line 4.
	tests := []struct {
		name string
		sel  string
		want []string
	}{
		{"unknown operator", `{matchExpressions: [{key: a, operator: Gt, values: ["1"]}]}`, []string{`4:80: unknown operator "Gt": want In, NotIn, Exists or DoesNotExist`}},
		{"operator case", `{matchExpressions: [{key: a, operator: in, values: [b]}]}`, []string{`4:80: unknown operator "in" (did you mean "In"?)`}},
		{"operator not a string", `{matchExpressions: [{key: a, operator: [In], values: [b]}]}`, []string{`4:80: operator: want In, NotIn, Exists or DoesNotExist, got a list`}},
		{"values for exists", `{matchExpressions: [{key: a, operator: Exists, values: [b]}]}`, []string{`4:96: a Exists takes no values`}},
		{"values for doesnotexist", `{matchExpressions: [{key: a, operator: DoesNotExist, values: [b]}]}`, []string{`4:102: a DoesNotExist takes no values`}},
		{"no values for in", `{matchExpressions: [{key: a, operator: In}]}`, []string{`4:80: a In has no values`}},
		{"empty values for notin", `{matchExpressions: [{key: a, operator: NotIn, values: []}]}`, []string{`4:95: a NotIn has no values`}},
		{"bad key", `{matchExpressions: [{key: "a b", operator: Exists}]}`, []string{`4:67: node selector key "a b" is not a valid label key`}},
		{"bad prefix", `{matchExpressions: [{key: "-x.io/a", operator: Exists}]}`, []string{`4:67: node selector key "-x.io/a" is not a valid label key`}},
		{"bad value", `{matchExpressions: [{key: a, operator: In, values: [ok, "-no"]}]}`, []string{`4:97: node selector a: value "-no" is not a valid label value`}},
		{"long value", `{matchExpressions: [{key: a, operator: In, values: [` + strings.Repeat("v", 64) + `]}]}`, []string{`4:93: is not a valid label value: must be no more than 63 bytes`}},
		{"int value", `{matchExpressions: [{key: a, operator: In, values: [1]}]}`, []string{`4:93: node selector a: want a string value, got integer 1: quote it, "1"`}},
		{"values not a list", `{matchExpressions: [{key: a, operator: In, values: b}]}`, []string{`4:92: values: want a list of label values, got string "b"`}},
		{"missing key", `{matchExpressions: [{operator: Exists}]}`, []string{`4:61: matchExpressions item needs key and operator`}},
		{"missing operator", `{matchExpressions: [{key: a}]}`, []string{`4:61: matchExpressions item needs key and operator`}},
		{"unknown item field", `{matchExpressions: [{key: a, operator: Exists, value: b}]}`, []string{`4:88: unknown field "value" in matchExpressions item (did you mean "values"?)`}},
		{"item not a mapping", `{matchExpressions: [a]}`, []string{`4:61: matchExpressions item: want a mapping with key, operator and values, got string "a"`}},
		{"expressions not a list", `{matchExpressions: {key: a}}`, []string{`4:60: matchExpressions: want a list of {key, operator, values}, got a mapping`}},
		{"matchLabels not a mapping", `{matchLabels: [a]}`, []string{`4:55: matchLabels: want a mapping of label to value, got a list`}},
		{"mixed forms", `{matchLabels: {a: b}, zone: x}`, []string{`4:63: unknown field "zone" in nodeSelector: want matchLabels, matchExpressions`}},
		{"contradiction", `{matchLabels: {a: b}, matchExpressions: [{key: a, operator: DoesNotExist}]}`, []string{`4:41: nodeSelector can match no node: label a must both exist and not exist`}},
		{"empty set", `{matchExpressions: [{key: a, operator: In, values: [x]}, {key: a, operator: NotIn, values: [x]}]}`, []string{`4:41: nodeSelector can match no node: label a no value is allowed`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := Parse("t.yaml", []byte(header+"  - {port: 1, process: a, nodeSelector: "+tt.sel+"}\n"))
			matchErrors(t, errLines(t, err), tt.want)
			if _, err := Compile(reg, nil); err == nil {
				t.Error("a registry with selector errors compiled")
			}
		})
	}
}

func TestSelectorMatches(t *testing.T) {
	node := map[string]string{"role": "worker", "zone": "a", "empty": ""}
	tests := []struct {
		name string
		sel  Selector
		want bool
	}{
		{"empty", Selector{}, true},
		{"label equal", LabelSelector(map[string]string{"role": "worker"}), true},
		{"label other value", LabelSelector(map[string]string{"role": "cp"}), false},
		{"label absent", LabelSelector(map[string]string{"gpu": ""}), false},
		{"label empty value", LabelSelector(map[string]string{"empty": ""}), true},
		{"in", req("zone", OpIn, "a", "b"), true},
		{"in other", req("zone", OpIn, "b", "c"), false},
		{"in absent", req("gpu", OpIn, "a"), false},
		{"notin", req("zone", OpNotIn, "b"), true},
		{"notin hit", req("zone", OpNotIn, "a"), false},
		{"notin absent matches", req("gpu", OpNotIn, "a"), true},
		{"exists", req("empty", OpExists), true},
		{"exists absent", req("gpu", OpExists), false},
		{"doesnotexist", req("gpu", OpDoesNotExist), true},
		{"doesnotexist present", req("empty", OpDoesNotExist), false},
		{"and", Selector{MatchLabels: map[string]string{"role": "worker"}, MatchExpressions: []Requirement{{"zone", OpIn, []string{"b"}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.sel.Matches(node); got != tt.want {
				t.Errorf("%s matches %v = %v, want %v", tt.sel, node, got, tt.want)
			}
			e := Entry{NodeSelector: tt.sel}
			if got := e.Matches(node); got != tt.want {
				t.Errorf("Entry.Matches = %v, want %v", got, tt.want)
			}
		})
	}
}

func req(key string, op Operator, values ...string) Selector {
	return Selector{MatchExpressions: []Requirement{{Key: key, Operator: op, Values: values}}}
}

// TestSatisfiablePairs decides every pair of operators on one key, with
// overlapping and disjoint value sets, and checks each answer against a
// search over every label set that could tell them apart.
func TestSatisfiablePairs(t *testing.T) {
	type side struct {
		name string
		sel  Selector
	}
	var sides []side
	for _, vals := range [][]string{{"a"}, {"a", "b"}, {"c"}} {
		v := strings.Join(vals, ",")
		sides = append(sides,
			side{"in(" + v + ")", req("k", OpIn, vals...)},
			side{"notin(" + v + ")", req("k", OpNotIn, vals...)})
	}
	sides = append(sides,
		side{"label=a", LabelSelector(map[string]string{"k": "a"})},
		side{"label=\"\"", LabelSelector(map[string]string{"k": ""})},
		side{"exists", req("k", OpExists)},
		side{"doesnotexist", req("k", OpDoesNotExist)},
		side{"other key", LabelSelector(map[string]string{"other": "x"})},
		side{"empty", Selector{}})
	want := map[string]bool{
		"in(a)&notin(a)": false, "in(a,b)&notin(a)": true, "in(a)&in(c)": false, "in(a,b)&in(a)": true,
		"exists&doesnotexist": false, "in(a)&doesnotexist": false, "notin(a)&doesnotexist": true,
		"label=a&label=\"\"": false, "notin(a,b)&label=a": false, "exists&notin(a,b)": true,
	}
	checked := 0
	for _, a := range sides {
		for _, b := range sides {
			name := a.name + "&" + b.name
			t.Run(name, func(t *testing.T) {
				got, why := Satisfiable(a.sel, b.sel)
				if brute := bruteSatisfiable(a.sel, b.sel); got != brute {
					t.Errorf("Satisfiable = %v (%s), but a search over label sets says %v", got, why, brute)
				}
				if w, ok := want[name]; ok {
					checked++
					if got != w {
						t.Errorf("Satisfiable = %v, want %v", got, w)
					}
				}
				if got != compatible(a.sel, b.sel) {
					t.Errorf("compatible disagrees with Satisfiable")
				}
				if !got && why == "" {
					t.Error("unsatisfiable without a reason")
				}
			})
		}
	}
	if checked != len(want) {
		t.Errorf("checked %d named pairs, want %d: a name in want is misspelt", checked, len(want))
	}
}

// bruteSatisfiable searches every assignment of the selectors' keys: absent,
// or one of the values they name, or one they do not name (all such values
// behave alike).
func bruteSatisfiable(sels ...Selector) bool {
	keys := map[string]bool{}
	values := []string{"zz-unnamed"}
	for _, s := range sels {
		for k, v := range s.MatchLabels {
			keys[k] = true
			values = append(values, v)
		}
		for _, e := range s.MatchExpressions {
			keys[e.Key] = true
			values = append(values, e.Values...)
		}
	}
	slices.Sort(values)
	values = slices.Compact(values)
	ks := slices.Sorted(maps.Keys(keys))
	var try func(i int, l map[string]string) bool
	try = func(i int, l map[string]string) bool {
		if i == len(ks) {
			for _, s := range sels {
				if !s.Matches(l) {
					return false
				}
			}
			return true
		}
		if try(i+1, l) {
			return true
		}
		for _, v := range values {
			l[ks[i]] = v
			if try(i+1, l) {
				delete(l, ks[i])
				return true
			}
		}
		delete(l, ks[i])
		return false
	}
	return try(0, map[string]string{})
}

// TestSelectorConflicts checks what Validate reports for two processes
// claiming one port under different selectors.
func TestSelectorConflicts(t *testing.T) {
	cp := `{matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: Exists}]}`
	tests := []struct {
		name     string
		a, b     string
		conflict bool
	}{
		{"control plane vs worker label", cp, `{node-role.kubernetes.io/worker: ""}`, true},
		{"control plane vs not control plane", cp, `{matchExpressions: [{key: node-role.kubernetes.io/control-plane, operator: DoesNotExist}]}`, false},
		{"zones disjoint", `{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}`, `{matchExpressions: [{key: zone, operator: In, values: [c]}]}`, false},
		{"zones overlap", `{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}`, `{zone: b}`, true},
		{"notin covers in", `{matchExpressions: [{key: zone, operator: NotIn, values: [a, b]}]}`, `{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}`, false},
		{"notin leaves absent", `{matchExpressions: [{key: zone, operator: NotIn, values: [a]}]}`, `{matchExpressions: [{key: zone, operator: DoesNotExist}]}`, true},
		{"short forms differ", `{role: a}`, `{role: b}`, false},
		{"no selector", `null`, `{role: b}`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := header + "  - {port: 1, process: a, nodeSelector: " + tt.a + "}\n  - {port: 1, process: b, nodeSelector: " + tt.b + "}\n"
			reg, err := Parse("t.yaml", []byte(doc))
			if err != nil {
				t.Fatal(err)
			}
			errs := reg.Validate(nil)
			if got := len(errs) > 0; got != tt.conflict {
				t.Fatalf("conflict = %v, want %v: %v", got, tt.conflict, errs)
			}
			if tt.conflict && !strings.Contains(errs[0].Msg, `port 1/tcp claimed by "b" conflicts with "a" at t.yaml:4:5`) {
				t.Errorf("message %q", errs[0].Msg)
			}
		})
	}
}

// FuzzSelector draws two selectors over two keys and three values from the
// input and checks Satisfiable against the search over label sets, and that
// matching never panics.
func FuzzSelector(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3}, []byte{4, 5, 6, 7})
	f.Add([]byte{1, 9, 0, 0}, []byte{0x21, 0xff})
	f.Fuzz(func(t *testing.T, a, b []byte) {
		x, y := drawSelector(a), drawSelector(b)
		got, _ := Satisfiable(x, y)
		if brute := bruteSatisfiable(x, y); got != brute {
			t.Fatalf("Satisfiable(%s; %s) = %v, search says %v", x, y, got, brute)
		}
		if alone, _ := Satisfiable(x); alone != bruteSatisfiable(x) {
			t.Fatalf("Satisfiable(%s) = %v, search disagrees", x, alone)
		}
	})
}

// drawSelector reads requirements two bytes at a time: the first picks the
// key (bit 0), the operator (bits 1-3; 4 and above is matchLabels) and the
// second the values (bits 0-2 select a, b, c).
func drawSelector(data []byte) Selector {
	var s Selector
	for i := 0; i+1 < len(data) && i < 16; i += 2 {
		key := []string{"k", "j"}[data[i]&1]
		var vals []string
		for bit, v := range []string{"a", "b", "c"} {
			if data[i+1]&(1<<bit) != 0 {
				vals = append(vals, v)
			}
		}
		op := (data[i] >> 1) & 7
		switch {
		case op >= 4:
			if s.MatchLabels == nil {
				s.MatchLabels = map[string]string{}
			}
			s.MatchLabels[key] = []string{"a", "b", "c", ""}[op-4]
		case Operators[op] == OpIn || Operators[op] == OpNotIn:
			if len(vals) == 0 {
				vals = []string{"a"}
			}
			s.MatchExpressions = append(s.MatchExpressions, Requirement{key, Operators[op], vals})
		default:
			s.MatchExpressions = append(s.MatchExpressions, Requirement{Key: key, Operator: Operators[op]})
		}
	}
	return s
}

func BenchmarkSelectorMatches(b *testing.B) {
	s := Selector{MatchLabels: map[string]string{"kubernetes.io/os": "linux"}, MatchExpressions: []Requirement{
		{"node-role.kubernetes.io/control-plane", OpExists, nil},
		{"topology.kubernetes.io/zone", OpIn, []string{"a", "b", "c"}},
		{"bindguard.io/network-type", OpNotIn, []string{"OpenShiftSDN"}},
	}}
	node := map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/hostname": "cp-1",
		"node-role.kubernetes.io/control-plane": "", "topology.kubernetes.io/zone": "b"}
	for _, bb := range []struct {
		name string
		sel  Selector
	}{{"literal", s}, {"compiled", s.Compiled()}} {
		b.Run(bb.name, func(b *testing.B) {
			for b.Loop() {
				if !bb.sel.Matches(node) {
					b.Fatal("no match")
				}
			}
		})
	}
}

func BenchmarkSatisfiable(b *testing.B) {
	x := req("zone", OpIn, "a", "b", "c")
	y := Selector{MatchLabels: map[string]string{"role": "x"}, MatchExpressions: []Requirement{{"zone", OpNotIn, []string{"a", "b"}}}}
	for b.Loop() {
		Satisfiable(x, y)
	}
}

// TestSelectorConcurrent compiles one parsed registry from several
// goroutines: the selector cache its copies share is built once, race-free
// (run with -race).
func TestSelectorConcurrent(t *testing.T) {
	reg, err := Load("testdata/pods.yaml")
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"node-role.kubernetes.io/control-plane": ""}
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			c, err := Compile(reg, labels)
			if err == nil && len(c.Rules) != 3 {
				err = fmt.Errorf("%d rules, want 3", len(c.Rules))
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
