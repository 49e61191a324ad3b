package policy

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/util/validation"
)

var podOwnerFields = []string{"namespace", "labels", "container"}

// podOwner parses `pod: {namespace: ns, labels: {k: v}, container: name}`.
func (p *parser) podOwner(n *yaml.Node) (PodOwner, bool) {
	var o PodOwner
	if !p.want(n, yaml.MappingNode, "pod", "a mapping with namespace, and optionally labels and container") {
		return o, false
	}
	before := p.reported
	var hasNamespace bool
	p.fields(n, "pod owner", podOwnerFields, func(key string, _, v *yaml.Node) {
		switch key {
		case "namespace":
			hasNamespace = true
			o.Namespace = p.podName(key, v, checkNamespace)
		case "container":
			o.Container = p.podName(key, v, checkContainerName)
		case "labels":
			o.Labels = p.labels("pod labels", v, podLabelRules)
		}
	})
	if !hasNamespace {
		p.errorf(n, "pod owner has no namespace: name the pods' namespace, like {namespace: kube-system, labels: {component: etcd}}")
	}
	return o, p.reported == before
}

// podName parses a namespace or container name.
func (p *parser) podName(field string, v *yaml.Node, check func(string) error) string {
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		p.errorf(v, "pod %s: want a name, got %s", field, describe(v))
		return ""
	}
	if err := check(v.Value); err != nil {
		p.errorf(v, "%v", err)
	}
	return v.Value
}

// checkNamespace checks a namespace name: a DNS-1123 label, as Kubernetes requires.
func checkNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("pod namespace is empty: want a namespace like kube-system")
	}
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return fmt.Errorf("pod namespace %q is not a valid namespace: %s", ns, strings.Join(msgs, "; "))
	}
	return nil
}

// checkContainerName checks a container name: a DNS-1123 label.
func checkContainerName(c string) error {
	if c == "" {
		return fmt.Errorf("pod container is empty: omit container to admit every container of the pod")
	}
	if msgs := validation.IsDNS1123Label(c); len(msgs) > 0 {
		return fmt.Errorf("pod container %q is not a valid container name: %s", c, strings.Join(msgs, "; "))
	}
	return nil
}

func checkPodLabelKey(k string) error {
	if msgs := validation.IsQualifiedName(k); len(msgs) > 0 {
		return fmt.Errorf("pod label key %q is not a valid label key: %s", k, strings.Join(msgs, "; "))
	}
	return nil
}

func checkPodLabelValue(k, v string) error {
	if msgs := validation.IsValidLabelValue(v); len(msgs) > 0 {
		return fmt.Errorf("pod label %s: value %q is not a valid label value: %s", k, v, strings.Join(msgs, "; "))
	}
	return nil
}

// checkPodOwner checks a pod owner built in memory.
func checkPodOwner(o PodOwner) []error {
	var errs []error
	if err := checkNamespace(o.Namespace); err != nil {
		errs = append(errs, err)
	}
	if o.Container != "" {
		if err := checkContainerName(o.Container); err != nil {
			errs = append(errs, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(o.Labels)) {
		if err := checkPodLabelKey(k); err != nil {
			errs = append(errs, err)
		} else if err := checkPodLabelValue(k, o.Labels[k]); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// String prints the owner as "pod:NAMESPACE[k=v,...]/CONTAINER", the labels
// and container only when set.
func (o PodOwner) String() string {
	s := "pod:" + o.Namespace
	if len(o.Labels) > 0 {
		s += FormatLabels(o.Labels)
	}
	if o.Container != "" {
		s += "/" + o.Container
	}
	return s
}

// comparePodOwners orders pod owners by namespace, labels, then container.
func comparePodOwners(a, b PodOwner) int {
	return cmp.Or(
		strings.Compare(a.Namespace, b.Namespace),
		strings.Compare(FormatLabels(a.Labels), FormatLabels(b.Labels)),
		strings.Compare(a.Container, b.Container),
	)
}

// sortUniquePods sorts pod owners and drops equal ones; nil when empty.
func sortUniquePods(s []PodOwner) []PodOwner {
	if len(s) == 0 {
		return nil
	}
	s = slices.Clone(s)
	slices.SortFunc(s, comparePodOwners)
	return slices.Clip(slices.CompactFunc(s, PodOwner.Equal))
}
