package policy

import (
	"reflect"
	"strings"
	"testing"
)

func TestPodOwnerParse(t *testing.T) {
	tests := []struct {
		name   string
		owners string // the owners list, in flow style
		want   []PodOwner
	}{
		{"namespace only", `[{pod: {namespace: kube-system}}]`, []PodOwner{{Namespace: "kube-system"}}},
		{"labels and container", `[{pod: {namespace: openshift-etcd, labels: {app: etcd, k8s-app: etcd}, container: etcd}}]`,
			[]PodOwner{{Namespace: "openshift-etcd", Labels: map[string]string{"app": "etcd", "k8s-app": "etcd"}, Container: "etcd"}}},
		{"prefixed label, empty value", `[{pod: {namespace: a, labels: {app.kubernetes.io/name: x, flag: ""}}}]`,
			[]PodOwner{{Namespace: "a", Labels: map[string]string{"app.kubernetes.io/name": "x", "flag": ""}}}},
		{"deduplicated and sorted", `[{pod: {namespace: b}}, {pod: {namespace: a, labels: {x: "1"}}}, {pod: {namespace: b}}, {pod: {namespace: a}}]`,
			[]PodOwner{{Namespace: "a"}, {Namespace: "a", Labels: map[string]string{"x": "1"}}, {Namespace: "b"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := Parse("t.yaml", []byte(header+"  - {port: 1, process: a, owners: "+tt.owners+"}\n"))
			if err != nil {
				t.Fatal(err)
			}
			got := reg.Entries[0].Owners.Pods
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if !got[i].Equal(tt.want[i]) {
					t.Errorf("owner %d = %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestPodOwnerParseErrors(t *testing.T) {
	// The owner mapping starts at column 36 of line 4; its pod value at 42.
	tests := []struct {
		name   string
		owners string
		want   []string
	}{
		{"no namespace", `[{pod: {labels: {a: b}}}]`, []string{`4:42: pod owner has no namespace`}},
		{"empty namespace", `[{pod: {namespace: ""}}]`, []string{`4:54: pod namespace is empty`}},
		{"bad namespace", `[{pod: {namespace: Kube_System}}]`, []string{`4:54: pod namespace "Kube_System" is not a valid namespace: a lowercase RFC 1123 label`}},
		{"long namespace", `[{pod: {namespace: ` + strings.Repeat("n", 64) + `}}]`, []string{`4:54: is not a valid namespace: must be no more than 63 characters`}},
		{"namespace not a string", `[{pod: {namespace: 5}}]`, []string{`4:54: pod namespace: want a name, got integer 5`}},
		{"bad container", `[{pod: {namespace: a, container: "etcd.main"}}]`, []string{`4:68: pod container "etcd.main" is not a valid container name`}},
		{"empty container", `[{pod: {namespace: a, container: ""}}]`, []string{`4:68: pod container is empty: omit container`}},
		{"bad label key", `[{pod: {namespace: a, labels: {"a b": c}}}]`, []string{`4:66: pod label key "a b" is not a valid label key`}},
		{"bad label value", `[{pod: {namespace: a, labels: {a: "-c"}}}]`, []string{`4:69: pod label a: value "-c" is not a valid label value`}},
		{"label value not a string", `[{pod: {namespace: a, labels: {a: 1}}}]`, []string{`4:69: pod label a: want a string value, got integer 1`}},
		{"labels not a mapping", `[{pod: {namespace: a, labels: [a]}}]`, []string{`4:65: pod labels: want a mapping of label to value, got a list`}},
		{"duplicate label", `[{pod: {namespace: a, labels: {a: b, a: c}}}]`, []string{`4:72: mapping key "a" already defined at line 4`}},
		{"unknown field", `[{pod: {namespace: a, name: etcd-0}}]`, []string{`4:57: unknown field "name" in pod owner: want namespace, labels, container`}},
		{"not a mapping", `[{pod: kube-system}]`, []string{`4:42: pod: want a mapping with namespace`}},
		{"pod and uid", `[{pod: {namespace: a}, uid: 0}]`, []string{`4:36: owner names pod and uid: want exactly one`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg, err := Parse("t.yaml", []byte(header+"  - {port: 1, process: a, owners: "+tt.owners+"}\n"))
			matchErrors(t, errLines(t, err), tt.want)
			if _, err := Compile(reg, nil); err == nil {
				t.Error("a registry with pod owner errors compiled")
			}
		})
	}
}

func TestPodOwnersMerge(t *testing.T) {
	doc := header +
		"  - {port: 1, process: etcd, owners: [{pod: {namespace: kube-system, labels: {component: etcd}}}, {uid: 0}]}\n" +
		"  - {port: 1, process: etcd, owners: [{pod: {namespace: kube-system, labels: {component: etcd}}}, {pod: {namespace: openshift-etcd, container: etcd}}]}\n"
	reg, err := Parse("t.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := Compile(reg, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Owners{UIDs: []uint32{0}, Pods: []PodOwner{
		{Namespace: "kube-system", Labels: map[string]string{"component": "etcd"}},
		{Namespace: "openshift-etcd", Container: "etcd"},
	}}
	if got := c.Rules[0].Owners; !reflect.DeepEqual(got, want) {
		t.Errorf("merged owners = %+v, want %+v", got, want)
	}
}

func TestPodOwnerValidateInMemory(t *testing.T) {
	reg := &Registry{Entries: []Entry{{Pos: Pos{"mem", 1, 1}, Ports: PortRange{1, 1}, Process: "a",
		Owners: Owners{Pods: []PodOwner{{Namespace: "", Labels: map[string]string{"-": "x"}, Container: "A"}}}}}}
	got := validateLines(reg.Validate(nil))
	for _, want := range []string{"pod namespace is empty", `pod container "A" is not a valid container name`, `pod label key "-" is not a valid label key`} {
		if !strings.Contains(strings.Join(got, "\n"), want) {
			t.Errorf("Validate = %q, want %q", got, want)
		}
	}
}
