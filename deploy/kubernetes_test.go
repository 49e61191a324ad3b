package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/bindguard/bindguard/policy"
)

const k8sDir = "kubernetes"

// manifest is one decoded object and where it came from.
type manifest struct {
	file string
	obj  runtime.Object
	gvk  *schema.GroupVersionKind
	raw  []byte // the YAML document as shipped
}

// strictDecoder decodes YAML into the official API types and fails on
// unknown or duplicate fields as well as on type errors.
func strictDecoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{corev1.AddToScheme, appsv1.AddToScheme, rbacv1.AddToScheme} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme, scheme,
		json.SerializerOptions{Yaml: true, Strict: true})
}

// decodeAll decodes every YAML document of r.
func decodeAll(name string, r io.Reader) ([]manifest, error) {
	dec := strictDecoder()
	yr := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var out []manifest
	for i := 1; ; i++ {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, gvk, err := dec.Decode(doc, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", name, i, err)
		}
		out = append(out, manifest{file: name, obj: obj, gvk: gvk, raw: doc})
	}
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			b.Write(line)
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

// kustomization is the part of kustomize's Kustomization the manifests use;
// decoded strictly, so a field it does not list fails the test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images,omitempty"`
}

// shipped decodes the kustomization and every manifest it lists, and checks
// that it lists every manifest of the directory.
func shipped(t *testing.T) (kustomization, []manifest) {
	t.Helper()
	var k kustomization
	data, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: apiVersion %q kind %q", k.APIVersion, k.Kind)
	}
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var onDisk []string
	for _, f := range files {
		if b := filepath.Base(f); b != "kustomization.yaml" {
			onDisk = append(onDisk, b)
		}
	}
	listed := slices.Clone(k.Resources)
	slices.Sort(listed)
	if !slices.Equal(listed, onDisk) {
		t.Errorf("kustomization.yaml lists %q, the directory holds %q", listed, onDisk)
	}
	var all []manifest
	for _, r := range k.Resources {
		f, err := os.Open(filepath.Join(k8sDir, r))
		if err != nil {
			t.Fatalf("kustomization.yaml: %v", err)
		}
		ms, err := decodeAll(path.Join(k8sDir, r), f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, ms...)
	}
	return k, all
}

// TestManifestsDecodeStrictly decodes every shipped manifest with the API
// types in strict mode, and checks the kinds and namespaces.
func TestManifestsDecodeStrictly(t *testing.T) {
	k, all := shipped(t)
	count := map[string]int{}
	for _, m := range all {
		count[m.gvk.Kind]++
		meta := objectMeta(m.obj)
		if meta == nil {
			t.Errorf("%s: unexpected kind %s", m.file, m.gvk)
			continue
		}
		switch m.obj.(type) {
		case *corev1.Namespace:
			if meta.Name != k.Namespace {
				t.Errorf("%s: namespace %q, kustomization.yaml says %q", m.file, meta.Name, k.Namespace)
			}
		case *rbacv1.ClusterRole, *rbacv1.ClusterRoleBinding:
			if meta.Namespace != "" {
				t.Errorf("%s: %s %s is cluster-scoped but names namespace %q", m.file, m.gvk.Kind, meta.Name, meta.Namespace)
			}
		default:
			if meta.Namespace != k.Namespace {
				t.Errorf("%s: %s %s is in namespace %q, want %q", m.file, m.gvk.Kind, meta.Name, meta.Namespace, k.Namespace)
			}
		}
	}
	want := map[string]int{"Namespace": 1, "ServiceAccount": 1, "ConfigMap": 1, "DaemonSet": 1, "ClusterRole": 1, "ClusterRoleBinding": 1}
	for kind, n := range want {
		if count[kind] != n {
			t.Errorf("%d %s objects, want %d", count[kind], kind, n)
		}
	}
	if len(count) != len(want) {
		t.Errorf("kinds %v, want %v", count, want)
	}
}

func objectMeta(o runtime.Object) *metav1.ObjectMeta {
	switch o := o.(type) {
	case *corev1.Namespace:
		return &o.ObjectMeta
	case *corev1.ServiceAccount:
		return &o.ObjectMeta
	case *corev1.ConfigMap:
		return &o.ObjectMeta
	case *appsv1.DaemonSet:
		return &o.ObjectMeta
	case *rbacv1.ClusterRole:
		return &o.ObjectMeta
	case *rbacv1.ClusterRoleBinding:
		return &o.ObjectMeta
	}
	return nil
}

// TestKustomizeBuild renders the kustomization with kustomize's own Go API
// (what `kubectl kustomize` and `kubectl apply -k` run) and decodes the
// result strictly too.
func TestKustomizeBuild(t *testing.T) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	res, err := k.Run(filesys.MakeFsOnDisk(), k8sDir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", k8sDir, err)
	}
	out, err := res.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: %v", k8sDir, err)
	}
	ms, err := decodeAll("kustomize build "+k8sDir, bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 6 {
		t.Errorf("kustomize build rendered %d objects, want 6", len(ms))
	}
}

func pick[T runtime.Object](all []manifest) []T {
	var out []T
	for _, m := range all {
		if o, ok := m.obj.(T); ok {
			out = append(out, o)
		}
	}
	return out
}

var wantCaps = []corev1.Capability{"BPF", "DAC_READ_SEARCH", "NET_ADMIN", "PERFMON"}

// TestDaemonSet checks the one DaemonSet against what bindguard needs and
// the other objects it refers to.
func TestDaemonSet(t *testing.T) {
	_, all := shipped(t)
	dss := pick[*appsv1.DaemonSet](all)
	cms := pick[*corev1.ConfigMap](all)
	sas := pick[*corev1.ServiceAccount](all)
	if len(dss) != 1 || len(cms) != 1 || len(sas) != 1 {
		t.Fatalf("want 1 DaemonSet, 1 ConfigMap, 1 ServiceAccount")
	}
	checkDaemonSet(t, dss[0], runFlags(t), cms[0], sas[0])
}

func checkDaemonSet(t *testing.T, ds *appsv1.DaemonSet, flags map[string]bool, cm *corev1.ConfigMap, sa *corev1.ServiceAccount) {
	where := ds.Name
	for k, v := range ds.Spec.Selector.MatchLabels {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match the pod template's labels", where, k, v)
		}
	}
	us := ds.Spec.UpdateStrategy
	if us.Type != appsv1.RollingUpdateDaemonSetStrategyType || us.RollingUpdate == nil || us.RollingUpdate.MaxUnavailable == nil {
		t.Errorf("%s: want a RollingUpdate strategy with maxUnavailable", where)
	}
	pod := ds.Spec.Template.Spec
	checkPodPlacement(t, where, pod, sa)
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want one container", where)
	}
	c := pod.Containers[0]
	if len(c.Args) == 0 || c.Args[0] != "run" || len(c.Command) != 0 {
		t.Fatalf("%s: want args `run ...` and the image's entrypoint", where)
	}
	got := parseRunArgs(t, where, flags, c.Args[1:])
	if _, err := policy.ParseMode(one(t, where, got, "mode")); err != nil {
		t.Errorf("%s: %v", where, err)
	}
	if one(t, where, got, "keep-on-exit") != "true" {
		t.Errorf("%s: want --keep-on-exit, so that restarts leave no gap", where)
	}
	if lf := one(t, where, got, "log-format"); lf != "json" {
		t.Errorf("%s: --log-format %q, want json", where, lf)
	}
	if _, ok := got["node-label"]; ok {
		t.Errorf("%s: --node-label: one DaemonSet serves every node, whose labels come from its Node object", where)
	}
	checkNodeName(t, where, c, got)
	mounted := checkMounts(t, where, c, pod)
	if v := mounted[one(t, where, got, "registry")]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name {
		t.Errorf("%s: --registry is not the mount of ConfigMap %s", where, cm.Name)
	}
	for _, f := range []string{"ready-file", "node-state-file"} {
		if v := mounted[filepath.Dir(one(t, where, got, f))]; v.EmptyDir == nil {
			t.Errorf("%s: --%s is not in an emptyDir mount (the root file system is read-only)", where, f)
		}
	}
	if _, ok := got["pin-path"]; ok {
		t.Errorf("%s: --pin-path: keep the default, below the mounted /sys/fs/bpf", where)
	}
	port := checkMetricsPort(t, where, c, got)
	for _, labels := range []map[string]string{{"node-role.kubernetes.io/control-plane": ""}, {}} {
		checkRegistry(t, cm, labels, port)
	}
	checkSecurity(t, where, c)
}

// checkPodPlacement: every node, the host network, the service account.
func checkPodPlacement(t *testing.T, where string, pod corev1.PodSpec, sa *corev1.ServiceAccount) {
	if len(pod.NodeSelector) != 0 || pod.Affinity != nil {
		t.Errorf("%s: selects nodes; one DaemonSet must run on every node", where)
	}
	if !slices.ContainsFunc(pod.Tolerations, func(tl corev1.Toleration) bool {
		return tl.Key == "" && tl.Operator == corev1.TolerationOpExists && tl.Effect == ""
	}) {
		t.Errorf("%s: want a toleration of every taint (operator Exists, no key, no effect)", where)
	}
	if !pod.HostNetwork {
		t.Errorf("%s: hostNetwork must be true: the daemon judges its own network namespace", where)
	}
	if pod.HostPID {
		t.Errorf("%s: hostPID is not needed", where)
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("%s: priorityClassName %q", where, pod.PriorityClassName)
	}
	if pod.ServiceAccountName != sa.Name {
		t.Errorf("%s: service account %q, shipped %q", where, pod.ServiceAccountName, sa.Name)
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Errorf("%s: the pod must mount its token to read its Node", where)
	}
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount %s: automountServiceAccountToken must be false; the DaemonSet's pod asks for it", sa.Name)
	}
}

// checkNodeName: --node-name is the pod's spec.nodeName, from the downward API.
func checkNodeName(t *testing.T, where string, c corev1.Container, got map[string][]string) {
	name := one(t, where, got, "node-name")
	if !strings.HasPrefix(name, "$(") || !strings.HasSuffix(name, ")") {
		t.Errorf("%s: --node-name %q, want $(VAR) of an env var from the downward API", where, name)
		return
	}
	v := strings.TrimSuffix(strings.TrimPrefix(name, "$("), ")")
	for _, e := range c.Env {
		if e.Name == v {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" || e.Value != "" {
				t.Errorf("%s: env %s must come from fieldRef spec.nodeName", where, v)
			}
			return
		}
	}
	t.Errorf("%s: --node-name names env %s, which the container does not set", where, v)
}

// checkMounts: the registry ConfigMap, the emptyDir for the ready and state
// files, the node's bpffs and cgroup2 hierarchy. It returns mount path to volume.
func checkMounts(t *testing.T, where string, c corev1.Container, pod corev1.PodSpec) map[string]corev1.Volume {
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	mounted := map[string]corev1.Volume{}
	for _, m := range c.VolumeMounts {
		v, ok := vols[m.Name]
		if !ok {
			t.Errorf("%s: mount %s: no volume %q", where, m.MountPath, m.Name)
			continue
		}
		mounted[m.MountPath] = v
		// The API server refuses this (ValidateVolumeMounts), as the
		// server-side apply test shows; say why here too.
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional {
			t.Errorf("%s: mount %s: Bidirectional propagation needs a privileged container", where, m.MountPath)
		}
	}
	for _, p := range []string{"/sys/fs/bpf", "/sys/fs/cgroup"} {
		if v := mounted[p]; v.HostPath == nil || v.HostPath.Path != p {
			t.Errorf("%s: want the node's %s mounted at %s", where, p, p)
		}
	}
	return mounted
}

// checkMetricsPort: container and host port, probed. It returns the port.
func checkMetricsPort(t *testing.T, where string, c corev1.Container, got map[string][]string) uint16 {
	port := metricsPort(t, where, one(t, where, got, "metrics-addr"))
	var metrics *corev1.ContainerPort
	for i, p := range c.Ports {
		if p.ContainerPort == int32(port) {
			metrics = &c.Ports[i]
		}
	}
	if metrics == nil || metrics.HostPort != int32(port) {
		t.Errorf("%s: --metrics-addr port %d is not declared as containerPort and hostPort", where, port)
	} else if rp := c.ReadinessProbe; rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz" ||
		(rp.HTTPGet.Port.String() != metrics.Name && rp.HTTPGet.Port.IntValue() != int(port)) {
		t.Errorf("%s: want a readinessProbe on /healthz of the metrics port", where)
	}
	return port
}

func checkSecurity(t *testing.T, where string, c corev1.Container) {
	sc := c.SecurityContext
	if sc == nil || sc.Capabilities == nil {
		t.Fatalf("%s: no securityContext capabilities", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: must not be privileged", where)
	}
	add := slices.Clone(sc.Capabilities.Add)
	slices.Sort(add)
	if !slices.Equal(add, wantCaps) || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: capabilities add %v drop %v, want add %v drop [ALL]", where, add, sc.Capabilities.Drop, wantCaps)
	}
	// The runtime's default AppArmor profile denies writes below
	// /sys/fs/bpf: the pins could not be made.
	if sc.AppArmorProfile == nil || sc.AppArmorProfile.Type != corev1.AppArmorProfileTypeUnconfined {
		t.Errorf("%s: appArmorProfile %v, want Unconfined: the runtime's default profile denies pinning in /sys/fs/bpf", where, sc.AppArmorProfile)
	}
}

// checkRegistry loads the ConfigMap's registry as the daemon will see it (a
// directory with one file per key), compiles it for a node and checks that
// bindguard's own metrics port is declared for bindguard on any address.
func checkRegistry(t *testing.T, cm *corev1.ConfigMap, labels map[string]string, port uint16) {
	t.Helper()
	dir := t.TempDir()
	for k, v := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c := compileFor(t, dir, labels)
	r, proc := declared(c, port)
	if r == nil || proc != "bindguard" {
		t.Fatalf("ConfigMap %s: metrics port %d not declared for process bindguard on node %s", cm.Name, port, policy.FormatLabels(labels))
	}
	if r.Localhost {
		t.Errorf("ConfigMap %s: port %d is localhost-only, but the DaemonSet listens on every address", cm.Name, port)
	}
}

// TestRBACIsLeast checks the shipped role grants reading nodes and nothing
// else, and that the binding gives it to the DaemonSet's service account.
func TestRBACIsLeast(t *testing.T) {
	_, all := shipped(t)
	roles := pick[*rbacv1.ClusterRole](all)
	bindings := pick[*rbacv1.ClusterRoleBinding](all)
	sas := pick[*corev1.ServiceAccount](all)
	if len(roles) != 1 || len(bindings) != 1 || len(sas) != 1 {
		t.Fatalf("want 1 ClusterRole, 1 ClusterRoleBinding, 1 ServiceAccount")
	}
	want := []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get", "list", "watch"}}}
	if r := roles[0]; !reflect.DeepEqual(r.Rules, want) || r.AggregationRule != nil {
		t.Errorf("ClusterRole %s: rules %+v, want exactly %+v", r.Name, r.Rules, want)
	}
	b := bindings[0]
	if b.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roles[0].Name}) {
		t.Errorf("ClusterRoleBinding %s: roleRef %+v", b.Name, b.RoleRef)
	}
	wantSub := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sas[0].Name, Namespace: sas[0].Namespace}}
	if !reflect.DeepEqual(b.Subjects, wantSub) {
		t.Errorf("ClusterRoleBinding %s: subjects %+v, want %+v", b.Name, b.Subjects, wantSub)
	}
}
