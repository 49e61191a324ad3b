package policy

import (
	"fmt"
	"slices"

	"go.yaml.in/yaml/v3"
)

var (
	selectorFields    = []string{"matchLabels", "matchExpressions"}
	requirementFields = []string{"key", "operator", "values"}
)

// selector parses a nodeSelector. It takes the short form, a mapping of label
// to value (matchLabels), or the long form of metav1.LabelSelector:
//
//	nodeSelector: {node-role.kubernetes.io/control-plane: ""}
//	nodeSelector:
//	  matchLabels: {kubernetes.io/os: linux}
//	  matchExpressions:
//	    - {key: node-role.kubernetes.io/control-plane, operator: Exists}
//
// A mapping with a matchLabels or matchExpressions key is the long form, and
// any other key in it is an error.
func (p *parser) selector(n *yaml.Node) Selector {
	var s Selector
	if !p.optional(n, yaml.MappingNode, "nodeSelector", "a mapping of label to value, or matchLabels and matchExpressions") {
		return s
	}
	before := p.reported
	if p.longForm(n) {
		p.fields(n, "nodeSelector", selectorFields, func(key string, _, v *yaml.Node) {
			switch key {
			case "matchLabels":
				s.MatchLabels = p.labels("matchLabels", v, nodeLabelRules)
			case "matchExpressions":
				s.MatchExpressions = p.matchExpressions(v)
			}
		})
	} else {
		s.MatchLabels = p.labels("nodeSelector", n, nodeLabelRules)
	}
	if p.reported == before {
		if ok, why := Satisfiable(s); !ok {
			p.errorf(n, "nodeSelector can match no node: %s", why)
		}
	}
	return s.Compiled()
}

// longForm reports whether a nodeSelector mapping uses matchLabels or matchExpressions.
func (p *parser) longForm(n *yaml.Node) bool {
	for i := 0; i < len(n.Content); i += 2 {
		if k := p.resolve(n.Content[i]); k != nil && k.Kind == yaml.ScalarNode && slices.Contains(selectorFields, k.Value) {
			return true
		}
	}
	return false
}

// labelRules are how the labels of one kind of mapping are checked: a pod
// owner's labels or a node selector's.
type labelRules struct {
	noun       string // a label as errors name it
	checkKey   func(k string) error
	checkValue func(k, v string) error
	quoteHint  bool // suggest quoting a scalar value that is not a string
}

var (
	podLabelRules  = labelRules{noun: "pod label", checkKey: checkPodLabelKey, checkValue: checkPodLabelValue}
	nodeLabelRules = labelRules{noun: "node selector", checkKey: checkLabelKey, checkValue: checkLabelValue, quoteHint: true}
)

// labels parses a mapping of label key to value; what names the mapping.
func (p *parser) labels(what string, n *yaml.Node, r labelRules) map[string]string {
	if !p.optional(n, yaml.MappingNode, what, "a mapping of label to value") {
		return nil
	}
	out := make(map[string]string, len(n.Content)/2)
	seen := make(map[string]*yaml.Node, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), p.resolve(n.Content[i+1])
		if k == nil || v == nil {
			return out
		}
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!merge" {
			p.errorf(k, "%s key must be a label name, got %s", what, describe(k))
			continue
		}
		if first, ok := seen[k.Value]; ok {
			p.errorf(k, "mapping key %q already defined at line %d", k.Value, first.Line)
			continue
		}
		seen[k.Value] = k
		if err := r.checkKey(k.Value); err != nil {
			p.errorf(k, "%v", err)
			continue
		}
		if s, ok := p.labelValue(k.Value, v, r); ok {
			out[k.Value] = s
		}
	}
	return out
}

// labelValue parses one label value: a string, checked with apimachinery's rules.
func (p *parser) labelValue(key string, v *yaml.Node, r labelRules) (string, bool) {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		hint := ""
		if r.quoteHint && v.Kind == yaml.ScalarNode {
			hint = fmt.Sprintf(": quote it, %q", v.Value)
		}
		p.errorf(v, "%s %s: want a string value, got %s%s", r.noun, key, describe(v), hint)
		return "", false
	}
	if err := r.checkValue(key, v.Value); err != nil {
		p.errorf(v, "%v", err)
		return "", false
	}
	return v.Value, true
}

func (p *parser) matchExpressions(n *yaml.Node) []Requirement {
	if !p.optional(n, yaml.SequenceNode, "matchExpressions", "a list of {key, operator, values}") {
		return nil
	}
	var out []Requirement
	for _, item := range n.Content {
		if item = p.resolve(item); item == nil {
			return out
		}
		if r, ok := p.requirement(item); ok {
			out = append(out, r)
		}
	}
	return out
}

// requirement parses one matchExpressions item; ok is false on any error.
func (p *parser) requirement(n *yaml.Node) (r Requirement, ok bool) {
	if !p.want(n, yaml.MappingNode, "matchExpressions item", "a mapping with key, operator and values") {
		return r, false
	}
	before := p.reported
	var keyNode, opNode, valuesNode *yaml.Node
	p.fields(n, "matchExpressions item", requirementFields, func(key string, _, v *yaml.Node) {
		switch key {
		case "key":
			keyNode = v
		case "operator":
			opNode = v
		case "values":
			valuesNode = v
		}
	})
	if keyNode == nil || opNode == nil {
		p.errorf(n, "matchExpressions item needs key and operator: want {key: LABEL, operator: In|NotIn|Exists|DoesNotExist, values: [...]}")
		return r, false
	}
	r.Key, r.Operator = p.requirementKey(keyNode), Operator(p.requirementOperator(opNode))
	if p.reported > before {
		return r, false
	}
	r.Values = p.requirementValues(r.Key, valuesNode)
	at := valuesNode
	if at == nil || isNull(at) {
		at = opNode
	}
	if err := checkRequirementValues(r.Key, r.Operator, len(r.Values)); err != nil && p.reported == before {
		p.errorf(at, "%v", err)
	}
	return r, p.reported == before
}

func (p *parser) requirementKey(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.errorf(n, "key: want a label name, got %s", describe(n))
		return ""
	}
	if err := checkLabelKey(n.Value); err != nil {
		p.errorf(n, "%v", err)
	}
	return n.Value
}

func (p *parser) requirementOperator(n *yaml.Node) string {
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		p.errorf(n, "operator: want In, NotIn, Exists or DoesNotExist, got %s", describe(n))
		return ""
	}
	if err := checkOperator(Operator(n.Value)); err != nil {
		p.errorf(n, "%v", err)
	}
	return n.Value
}

// requirementValues parses values: a list of label values.
func (p *parser) requirementValues(key string, n *yaml.Node) []string {
	if n == nil || !p.optional(n, yaml.SequenceNode, "values", "a list of label values") {
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for _, item := range n.Content {
		if item = p.resolve(item); item == nil {
			return out
		}
		if v, ok := p.labelValue(key, item, nodeLabelRules); ok {
			out = append(out, v)
		}
	}
	return out
}
