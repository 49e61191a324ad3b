package podcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	kjson "sigs.k8s.io/json"
)

// maxErrors bounds how many item errors one file reports.
const maxErrors = 20

// ReadPods decodes what `kubectl get pods -A -o json` prints: a List or
// PodList of Pods, or a single Pod (as `kubectl apply --dry-run=server -o
// json` prints for one manifest). name is the file name used in errors.
//
// A workload (DaemonSet, Deployment, StatefulSet, ReplicaSet,
// ReplicationController, Job, CronJob, PodTemplate), alone or as a List
// item, stands for the pods it makes: its pod template (the one field the
// server makes its pods from: spec.template, a CronJob's
// spec.jobTemplate.spec.template, a PodTemplate's template) becomes a pod named "daemonset/NAME" (the kind in lower
// case) in the workload's namespace, with the template's labels and no
// node, so that rendered manifests can be checked before anything runs.
//
// Fields are decoded as the API server decodes them: case-sensitively, and
// a field given twice is an error, so that no file can make this check see
// a pod other than the one the server would run. Unknown fields are
// ignored, so that output of newer servers decodes. Every bad item is
// reported with its index, its namespace/name and the field.
func ReadPods(data []byte, name string) ([]corev1.Pod, error) {
	raws, err := items(data, name, "Pod")
	if err != nil {
		return nil, err
	}
	pods := make([]corev1.Pod, len(raws))
	seen := map[string]int{}
	var errs errorList
	for i, raw := range raws {
		where, err := decodePodItem(raw, i, &pods[i])
		if err == nil {
			for _, e := range checkPod(&pods[i]) {
				errs = append(errs, fmt.Errorf("%s: %s: %w", name, where, e))
			}
		}
		if err == nil {
			key := pods[i].Namespace + "/" + pods[i].Name
			if first, dup := seen[key]; dup {
				err = fmt.Errorf("pod %s is also items[%d]", key, first)
			}
			seen[key] = i
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", name, where, err))
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return pods, nil
}

// ReadNodes decodes what `kubectl get nodes -o json` prints: a List or
// NodeList of Nodes, or a single Node, with the rules of ReadPods.
func ReadNodes(data []byte, name string) ([]corev1.Node, error) {
	raws, err := items(data, name, "Node")
	if err != nil {
		return nil, err
	}
	nodes := make([]corev1.Node, len(raws))
	seen := map[string]int{}
	var errs errorList
	for i, raw := range raws {
		where, err := decodeItem(raw, "Node", i, &nodes[i])
		if err == nil {
			err = checkNodeName("metadata.name", nodes[i].Name)
		}
		if err == nil {
			if first, dup := seen[nodes[i].Name]; dup {
				err = fmt.Errorf("node %s is also items[%d]", nodes[i].Name, first)
			}
			seen[nodes[i].Name] = i
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s: %w", name, where, err))
		}
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	return nodes, nil
}

// workloads are the kinds whose pod template ReadPods checks, with their
// apiVersion and the one field the API server makes pods from.
var workloads = map[string]struct{ apiVersion, template string }{
	"DaemonSet":             {"apps/v1", "spec.template"},
	"Deployment":            {"apps/v1", "spec.template"},
	"StatefulSet":           {"apps/v1", "spec.template"},
	"ReplicaSet":            {"apps/v1", "spec.template"},
	"ReplicationController": {"v1", "spec.template"},
	"Job":                   {"batch/v1", "spec.template"},
	"CronJob":               {"batch/v1", "spec.jobTemplate.spec.template"},
	"PodTemplate":           {"v1", "template"},
}

// workload holds every field a pod template may be read from: a
// PodTemplate's template, spec.template, and a CronJob's
// spec.jobTemplate.spec.template. Only the one of the item's kind is the
// template the server runs; another one given is refused, so that a decoy
// cannot stand for the pods.
type workload struct {
	Metadata metav1.ObjectMeta       `json:"metadata"`
	Template *corev1.PodTemplateSpec `json:"template"`
	Spec     struct {
		Template    *corev1.PodTemplateSpec `json:"template"`
		JobTemplate *struct {
			Spec struct {
				Template *corev1.PodTemplateSpec `json:"template"`
			} `json:"spec"`
		} `json:"jobTemplate"`
	} `json:"spec"`
}

// templates returns the pod templates w holds, by field.
func (w *workload) templates() map[string]*corev1.PodTemplateSpec {
	t := map[string]*corev1.PodTemplateSpec{"template": w.Template, "spec.template": w.Spec.Template}
	if w.Spec.JobTemplate != nil {
		t["spec.jobTemplate.spec.template"] = w.Spec.JobTemplate.Spec.Template
	}
	return t
}

// templateFields are the fields of templates, in the order errors name them.
var templateFields = []string{"template", "spec.template", "spec.jobTemplate.spec.template"}

// strayTemplate returns the first pod template field w holds other than
// want ("" for a Pod, which has none), or "".
func (w *workload) strayTemplate(want string) string {
	t := w.templates()
	for _, f := range templateFields {
		if f != want && t[f] != nil {
			return f
		}
	}
	return ""
}

// strayPodTemplate returns the pod template field a Pod holds, or "": a
// Pod has none, so any is a decoy.
func strayPodTemplate(raw json.RawMessage) string {
	var w workload
	if strictDecode(raw, &w) != nil {
		return ""
	}
	return w.strayTemplate("")
}

// decodePodItem decodes item i as a Pod, or a workload's pod template as a
// pod named KIND/NAME (kind in lower case) with the template's labels and
// no node. The template is the one field the API server makes the kind's
// pods from; an item that holds a pod template anywhere else is refused.
func decodePodItem(raw json.RawMessage, i int, pod *corev1.Pod) (string, error) {
	var hdr object
	_ = kjson.UnmarshalCaseSensitivePreserveInts(raw, &hdr)
	kind, ok := workloads[hdr.Kind]
	if !ok {
		where, err := decodeItem(raw, "Pod", i, pod)
		if err == nil {
			if f := strayPodTemplate(raw); f != "" {
				err = fmt.Errorf("field %s: a Pod has no pod template: the server would ignore it", f)
			}
		}
		return where, err
	}
	where := fmt.Sprintf("items[%d] (%s %s)", i, strings.ToLower(hdr.Kind), printable(hdr.Metadata.Namespace+"/"+hdr.Metadata.Name))
	if hdr.APIVersion != kind.apiVersion {
		return where, fmt.Errorf("apiVersion %q: want %s for a %s", hdr.APIVersion, kind.apiVersion, hdr.Kind)
	}
	var w workload
	if err := strictDecode(raw, &w); err != nil {
		return where, describe(raw, err, &workload{})
	}
	if f := w.strayTemplate(kind.template); f != "" {
		return where, fmt.Errorf("field %s: a %s's pods are made from %s only: the server would ignore it", f, hdr.Kind, kind.template)
	}
	t := w.templates()[kind.template]
	if t == nil {
		return where, fmt.Errorf("no pod template (%s)", kind.template)
	}
	*pod = corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.Metadata.Namespace, Name: strings.ToLower(hdr.Kind) + "/" + w.Metadata.Name, Labels: t.Labels},
		Spec:       t.Spec,
	}
	pod.Spec.NodeName = ""
	return where, nil
}

// object is the part of every item that names it.
type object struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   objectMeta      `json:"metadata"`
	Items      json.RawMessage `json:"items"`
}

type objectMeta struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

// items returns the raw items of a List or KIND List, or the one object of
// kind KIND.
func items(data []byte, name, kind string) ([]json.RawMessage, error) {
	var top object
	if err := strictDecode(data, &top); err != nil {
		if isSyntax, off := kjson.SyntaxErrorOffset(err); isSyntax {
			line, col := lineCol(data, off-1) // the offset is past the bad byte
			return nil, fmt.Errorf("%s:%d:%d: invalid JSON: %s", name, line, col, strings.TrimPrefix(err.Error(), "json: "))
		}
		return nil, fmt.Errorf("%s: %w", name, describe(data, err, &object{}))
	}
	if _, ok := workloads[top.Kind]; ok && kind == "Pod" {
		return []json.RawMessage{data}, nil
	}
	switch top.Kind {
	case kind:
		return []json.RawMessage{data}, nil
	case "List", kind + "List":
	case "":
		return nil, fmt.Errorf("%s: kind is not set: want List, %sList or %s (the output of kubectl get -o json)", name, kind, kind)
	default:
		return nil, fmt.Errorf("%s: kind %q: want List, %sList or %s", name, top.Kind, kind, kind)
	}
	if top.APIVersion != "" && top.APIVersion != "v1" {
		return nil, fmt.Errorf("%s: apiVersion %q: want v1", name, top.APIVersion)
	}
	var raws []json.RawMessage
	if len(top.Items) > 0 && !bytes.Equal(top.Items, []byte("null")) {
		if top.Items[0] != '[' {
			return nil, fmt.Errorf("%s: field items: got a JSON %s, want an array", name, jsonKind(top.Items[0]))
		}
		if err := strictDecode(top.Items, &raws); err != nil {
			return nil, fmt.Errorf("%s: items: %w", name, describe(top.Items, err, nil))
		}
	}
	return raws, nil
}

// printable quotes a name from the input when it holds a space or a
// character that is not printable, so that it cannot forge a line.
func printable(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r == ' ' || !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}

// jsonKind names the JSON value that starts with b.
func jsonKind(b byte) string {
	switch {
	case b == '{':
		return "object"
	case b == '"':
		return "string"
	case b == 't' || b == 'f':
		return "bool"
	case b == '-' || (b >= '0' && b <= '9'):
		return "number"
	}
	return "value"
}

// decodeItem decodes item i of a list into v, checking that it is a v1 kind.
// It returns how to name the item in errors.
func decodeItem(raw json.RawMessage, kind string, i int, v any) (string, error) {
	var hdr object
	_ = kjson.UnmarshalCaseSensitivePreserveInts(raw, &hdr) // only to name the item; errors come below
	where := fmt.Sprintf("items[%d]", i)
	if n := hdr.Metadata.Name; n != "" {
		if ns := hdr.Metadata.Namespace; ns != "" {
			n = ns + "/" + n
		}
		where += fmt.Sprintf(" (%s %s)", strings.ToLower(kind), printable(n))
	}
	if hdr.Kind != "" && hdr.Kind != kind {
		return where, fmt.Errorf("kind %q: want %s", hdr.Kind, kind)
	}
	if hdr.APIVersion != "" && hdr.APIVersion != "v1" {
		return where, fmt.Errorf("apiVersion %q: want v1", hdr.APIVersion)
	}
	if err := strictDecode(raw, v); err != nil {
		return where, describe(raw, err, newLike(v))
	}
	return where, nil
}

// newLike returns a new zero value of v's type, for re-decoding.
func newLike(v any) any {
	switch v.(type) {
	case *corev1.Pod:
		return &corev1.Pod{}
	case *corev1.Node:
		return &corev1.Node{}
	}
	return nil
}

// strictDecode decodes as the API server does: case-sensitive field names,
// and a field given twice is an error. Unknown fields are allowed.
func strictDecode(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return strict[0]
	}
	return nil
}

// describe turns a decoding error into one that names the field: one given
// twice, or one of the wrong type. The standard decoder
// is run again into fresh to learn the field's path, which the API's
// decoder does not export.
func describe(data []byte, err error, fresh any) error {
	var fe kjson.FieldError
	if errors.As(err, &fe) {
		return fmt.Errorf("field %s: given more than once", fe.FieldPath())
	}
	if fresh != nil {
		var te *json.UnmarshalTypeError
		if errors.As(json.Unmarshal(data, fresh), &te) && te.Field != "" {
			return fmt.Errorf("field %s: got a JSON %s, want %s", te.Field, te.Value, te.Type)
		}
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// lineCol converts a byte offset into a 1-based line and column.
func lineCol(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte("\n")) + 1
	col := int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// checkPod checks what the check relies on and the API server guarantees,
// so that a hand-edited file cannot make a port look other than it is, nor
// a name (with a tab or a newline) forge a line of the report.
func checkPod(p *corev1.Pod) []error {
	if p.Name == "" {
		return []error{errors.New("field metadata.name: empty")}
	}
	if p.Namespace == "" {
		return []error{errors.New("field metadata.namespace: empty: the namespace decides which pod owners match")}
	}
	var errs []error
	name := p.Name[strings.IndexByte(p.Name, '/')+1:] // a workload's pod is KIND/NAME
	if bad := validation.IsDNS1123Subdomain(name); len(bad) > 0 {
		errs = append(errs, fmt.Errorf("field metadata.name: %q: %s", name, bad[0]))
	}
	if bad := validation.IsDNS1123Label(p.Namespace); len(bad) > 0 {
		errs = append(errs, fmt.Errorf("field metadata.namespace: %q: %s", p.Namespace, bad[0]))
	}
	if err := checkNodeName("spec.nodeName", p.Spec.NodeName); p.Spec.NodeName != "" && err != nil {
		errs = append(errs, err)
	}
	check := func(field string, ctr *corev1.Container) {
		if bad := validation.IsDNS1123Label(ctr.Name); len(bad) > 0 {
			errs = append(errs, fmt.Errorf("%s.name: %q: %s", field, ctr.Name, bad[0]))
		}
		for j, cp := range ctr.Ports {
			if err := checkPort(p.Spec.HostNetwork, cp); err != nil {
				errs = append(errs, fmt.Errorf("%s.ports[%d].%w", field, j, err))
			}
		}
	}
	for i := range p.Spec.Containers {
		check(fmt.Sprintf("spec.containers[%d]", i), &p.Spec.Containers[i])
	}
	for i := range p.Spec.InitContainers {
		check(fmt.Sprintf("spec.initContainers[%d]", i), &p.Spec.InitContainers[i])
	}
	for i := range p.Spec.EphemeralContainers {
		check(fmt.Sprintf("spec.ephemeralContainers[%d]", i), (*corev1.Container)(&p.Spec.EphemeralContainers[i].EphemeralContainerCommon))
	}
	return errs
}

// checkNodeName checks a node's name as the API server does.
func checkNodeName(field, name string) error {
	if name == "" {
		return fmt.Errorf("field %s: empty", field)
	}
	if bad := validation.IsDNS1123Subdomain(name); len(bad) > 0 {
		return fmt.Errorf("field %s: %q: %s", field, name, bad[0])
	}
	return nil
}

func checkPort(hostNetwork bool, cp corev1.ContainerPort) error {
	switch {
	case cp.ContainerPort < 1 || cp.ContainerPort > 65535:
		return fmt.Errorf("containerPort: %d: want 1-65535", cp.ContainerPort)
	case cp.HostPort < 0 || cp.HostPort > 65535:
		return fmt.Errorf("hostPort: %d: want 0-65535", cp.HostPort)
	case hostNetwork && cp.HostPort != 0 && cp.HostPort != cp.ContainerPort:
		return fmt.Errorf("hostPort: %d differs from containerPort %d in a host-network pod, which the API refuses", cp.HostPort, cp.ContainerPort)
	}
	switch cp.Protocol {
	case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
	default:
		return fmt.Errorf("protocol: %q: want TCP, UDP or SCTP", cp.Protocol)
	}
	if cp.HostIP != "" {
		if _, err := netip.ParseAddr(cp.HostIP); err != nil {
			return fmt.Errorf("hostIP: %q is not an IP address", cp.HostIP)
		}
	}
	return nil
}

// errorList reports at most maxErrors errors, one per line.
type errorList []error

func (l errorList) err() error {
	if len(l) <= maxErrors {
		return errors.Join(l...)
	}
	return errors.Join(append(l[:maxErrors:maxErrors], fmt.Errorf("and %d more errors", len(l)-maxErrors))...)
}
