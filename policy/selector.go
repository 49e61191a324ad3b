package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/validation"
)

// Selector is an entry's nodeSelector: a Kubernetes label selector over the
// node's labels. MatchLabels and MatchExpressions are ANDed, as in
// metav1.LabelSelector; the zero Selector matches every node. Matching is
// k8s.io/apimachinery/pkg/labels'.
//
// A Selector is a value: do not change its maps or slices once it is used.
// Parsed selectors, and those LabelSelector and Selector.Compiled return,
// build their apimachinery selector once for all copies; a literal builds it
// on every Matches.
type Selector struct {
	// MatchLabels: each key must be present with exactly this value.
	MatchLabels map[string]string
	// MatchExpressions: each must hold.
	MatchExpressions []Requirement

	cache *selectorCache
}

// selectorCache holds the apimachinery selector, built once.
type selectorCache struct {
	once sync.Once
	sel  labels.Selector
	err  error
}

// Compiled returns the selector with its apimachinery form built on first use
// and shared by its copies.
func (s Selector) Compiled() Selector {
	if s.cache == nil {
		s.cache = &selectorCache{}
	}
	return s
}

// Requirement is one item of matchExpressions.
type Requirement struct {
	Key      string
	Operator Operator
	// Values are the set for In and NotIn; empty for Exists and DoesNotExist.
	Values []string
}

// Operator is a label selector operator.
type Operator string

// The operators of metav1.LabelSelectorRequirement, spelt as Kubernetes spells them.
const (
	// OpIn: the label is present and its value is one of Values.
	OpIn Operator = "In"
	// OpNotIn: the label is absent, or its value is none of Values.
	OpNotIn Operator = "NotIn"
	// OpExists: the label is present, whatever its value.
	OpExists Operator = "Exists"
	// OpDoesNotExist: the label is absent.
	OpDoesNotExist Operator = "DoesNotExist"
)

// Operators lists the operators a registry may use.
var Operators = []Operator{OpIn, OpNotIn, OpExists, OpDoesNotExist}

// LabelSelector returns a selector of matchLabels alone, the short form.
func LabelSelector(matchLabels map[string]string) Selector {
	return Selector{MatchLabels: matchLabels}.Compiled()
}

// Empty reports whether the selector has no requirement, so it matches every node.
func (s Selector) Empty() bool { return len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0 }

// Matches reports whether a node with these labels is selected. A selector
// that is not valid (see Validate) matches no node.
func (s Selector) Matches(nodeLabels map[string]string) bool {
	if s.Empty() {
		return true
	}
	sel, err := s.selector()
	if err != nil {
		return false
	}
	return sel.Matches(labels.Set(nodeLabels))
}

// selector returns the apimachinery selector, from the cache when there is one.
func (s Selector) selector() (labels.Selector, error) {
	if s.cache == nil {
		return s.labelsSelector()
	}
	s.cache.once.Do(func() { s.cache.sel, s.cache.err = s.labelsSelector() })
	return s.cache.sel, s.cache.err
}

// String prints the selector in Kubernetes' selector syntax
// ("a=b,c in (d,e),!f"); "" for the empty selector.
func (s Selector) String() string {
	if s.Empty() {
		return ""
	}
	sel, err := s.selector()
	if err != nil {
		return fmt.Sprintf("invalid selector (%v)", err)
	}
	return sel.String()
}

var selectionOps = map[Operator]selection.Operator{
	OpIn:           selection.In,
	OpNotIn:        selection.NotIn,
	OpExists:       selection.Exists,
	OpDoesNotExist: selection.DoesNotExist,
}

// labelsSelector converts to apimachinery's selector, as
// metav1.LabelSelectorAsSelector does: matchLabels become equality
// requirements.
func (s Selector) labelsSelector() (labels.Selector, error) {
	sel := labels.NewSelector()
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		r, err := labels.NewRequirement(k, selection.Equals, []string{s.MatchLabels[k]})
		if err != nil {
			return nil, err
		}
		sel = sel.Add(*r)
	}
	for _, e := range s.MatchExpressions {
		op, ok := selectionOps[e.Operator]
		if !ok {
			return nil, fmt.Errorf("unknown operator %q", e.Operator)
		}
		r, err := labels.NewRequirement(e.Key, op, e.Values)
		if err != nil {
			return nil, err
		}
		sel = sel.Add(*r)
	}
	return sel, nil
}

// keyConstraint is what a set of selectors asks of one label key together.
type keyConstraint struct {
	// in is the intersection of the In sets (matchLabels count as In of one
	// value); nil while no In constrains the key.
	in []string
	// notIn is the union of the NotIn sets.
	notIn []string
	// exists: some In or Exists asks for the label; absent: some
	// DoesNotExist forbids it.
	exists, absent bool
}

func (c *keyConstraint) add(op Operator, values []string) {
	switch op {
	case OpIn:
		c.exists = true
		if c.in == nil {
			c.in = slices.Clone(values)
		} else {
			c.in = slices.DeleteFunc(c.in, func(v string) bool { return !slices.Contains(values, v) })
		}
		if c.in == nil {
			c.in = []string{}
		}
	case OpNotIn:
		c.notIn = append(c.notIn, values...)
	case OpExists:
		c.exists = true
	case OpDoesNotExist:
		c.absent = true
	}
}

// satisfiable reports whether some node's value (or absence) of the key meets
// the constraint, and if not, why. Label values are unbounded, so a present
// label constrained only by NotIn can always take a value outside the set.
func (c *keyConstraint) satisfiable() (bool, string) {
	switch {
	case c.absent && c.exists:
		return false, "must both exist and not exist"
	case c.in == nil:
		return true, ""
	}
	left := slices.DeleteFunc(slices.Clone(c.in), func(v string) bool { return slices.Contains(c.notIn, v) })
	if len(left) == 0 {
		return false, "no value is allowed by every In, NotIn and matchLabels"
	}
	return true, ""
}

// Satisfiable reports whether one set of node labels can satisfy every
// selector at once. It is exact for the four operators: labels are
// independent of each other, so the selectors can be met together exactly
// when, key by key, the constraints they put on that key can be met together
// (see keyConstraint). When they cannot, why names the first key that fails.
func Satisfiable(sels ...Selector) (ok bool, why string) {
	cons := map[string]*keyConstraint{}
	get := func(k string) *keyConstraint {
		c := cons[k]
		if c == nil {
			c = &keyConstraint{}
			cons[k] = c
		}
		return c
	}
	for _, s := range sels {
		for k, v := range s.MatchLabels {
			get(k).add(OpIn, []string{v})
		}
		for _, e := range s.MatchExpressions {
			get(e.Key).add(e.Operator, e.Values)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(cons)) {
		if ok, why := cons[k].satisfiable(); !ok {
			return false, fmt.Sprintf("label %s %s", k, why)
		}
	}
	return true, ""
}

// compatible reports whether some node can match both selectors.
// Overlap checks call it for every pair of overlapping entries, so the short
// form, by far the most common, takes a path that allocates nothing.
func compatible(a, b Selector) bool {
	switch {
	case a.Empty() || b.Empty():
		return true
	case len(a.MatchExpressions) == 0 && len(b.MatchExpressions) == 0:
		x, y := a.MatchLabels, b.MatchLabels
		if len(y) < len(x) {
			x, y = y, x
		}
		for k, v := range x {
			if w, ok := y[k]; ok && w != v {
				return false
			}
		}
		return true
	}
	ok, _ := Satisfiable(a, b)
	return ok
}

// checkSelector checks the keys, values and operators of a selector built in
// memory, and that some node can match it. The parser reports the same
// problems at their exact place.
func checkSelector(s Selector) []error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		if err := checkLabelKey(k); err != nil {
			errs = append(errs, err)
		} else if err := checkLabelValue(k, s.MatchLabels[k]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, e := range s.MatchExpressions {
		if err := checkRequirement(e); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if ok, why := Satisfiable(s); !ok {
			errs = append(errs, fmt.Errorf("nodeSelector can match no node: %s", why))
		}
	}
	return errs
}

// checkRequirement checks one matchExpressions item.
func checkRequirement(e Requirement) error {
	if err := checkLabelKey(e.Key); err != nil {
		return err
	}
	if err := checkOperator(e.Operator); err != nil {
		return err
	}
	if err := checkRequirementValues(e.Key, e.Operator, len(e.Values)); err != nil {
		return err
	}
	for _, v := range e.Values {
		if err := checkLabelValue(e.Key, v); err != nil {
			return err
		}
	}
	return nil
}

func checkOperator(op Operator) error {
	if slices.Contains(Operators, op) {
		return nil
	}
	for _, o := range Operators {
		if strings.EqualFold(string(o), string(op)) {
			return fmt.Errorf("unknown operator %q (did you mean %q?): operators are case-sensitive", op, o)
		}
	}
	return fmt.Errorf("unknown operator %q: want In, NotIn, Exists or DoesNotExist", op)
}

func checkRequirementValues(key string, op Operator, n int) error {
	switch op {
	case OpIn, OpNotIn:
		if n == 0 {
			return fmt.Errorf("%s %s has no values: want values: [v1, ...]", key, op)
		}
	case OpExists, OpDoesNotExist:
		if n > 0 {
			return fmt.Errorf("%s %s takes no values: remove values", key, op)
		}
	}
	return nil
}

// checkLabelKey checks a Kubernetes label key, [prefix/]name, with
// apimachinery's rules.
func checkLabelKey(k string) error {
	if k == "" {
		return fmt.Errorf("node selector key is empty: want [prefix/]name like node-role.kubernetes.io/worker")
	}
	if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
		return fmt.Errorf("node selector key %q is not a valid label key: %s", k, strings.Join(msgs, "; "))
	}
	return nil
}

// checkLabelValue checks a Kubernetes label value, which may be empty.
func checkLabelValue(k, v string) error {
	if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
		return fmt.Errorf("node selector %s: value %q is not a valid label value: %s", k, v, strings.Join(msgs, "; "))
	}
	return nil
}
