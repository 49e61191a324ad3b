package deploy

import (
	"context"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/bindguard/bindguard/internal/testbed/apiserver"
)

const fieldManager = "bindguard-deploy-test"

// applier applies manifests with server-side apply through the dynamic
// client, resolving kinds with the server's own discovery.
type applier struct {
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newApplier(t *testing.T, s *apiserver.Server) *applier {
	t.Helper()
	dyn, err := dynamic.NewForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(s.Config)
	if err != nil {
		t.Fatal(err)
	}
	groups, err := restmapper.GetAPIGroupResources(dc)
	if err != nil {
		t.Fatal(err)
	}
	return &applier{dyn: dyn, mapper: restmapper.NewDiscoveryRESTMapper(groups)}
}

func toUnstructured(t *testing.T, m manifest) *unstructured.Unstructured {
	t.Helper()
	js, err := utilyaml.ToJSON(m.raw)
	if err != nil {
		t.Fatalf("%s: %v", m.file, err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatalf("%s: %v", m.file, err)
	}
	return u
}

func (a *applier) apply(ctx context.Context, u *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	gvk := u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return nil, err
	}
	var ri dynamic.ResourceInterface = a.dyn.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = a.dyn.Resource(mapping.Resource).Namespace(u.GetNamespace())
	}
	return ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: fieldManager, Force: true})
}

// TestServerSideApply gives every shipped manifest to a real kube-apiserver
// with server-side apply: its validation and defaulting accept them, and a
// second apply changes nothing (the manifests do not fight the defaults).
// A manifest the API must refuse is refused, so validation is really on.
func TestServerSideApply(t *testing.T) {
	_, all := shipped(t)
	s := apiserver.Start(t, apiserver.Options{})
	a := newApplier(t, s)
	ctx := context.Background()
	versions := map[string]string{}
	for _, m := range all {
		u := toUnstructured(t, m)
		got, err := a.apply(ctx, u)
		if err != nil {
			t.Fatalf("%s: server-side apply of %s %s: %v", m.file, u.GetKind(), u.GetName(), err)
		}
		versions[u.GetKind()+"/"+u.GetName()] = got.GetResourceVersion()
	}
	for _, m := range all {
		u := toUnstructured(t, m)
		got, err := a.apply(ctx, u)
		if err != nil {
			t.Fatalf("%s: second apply: %v", m.file, err)
		}
		if k := u.GetKind() + "/" + u.GetName(); got.GetResourceVersion() != versions[k] {
			t.Errorf("%s: a second apply of %s changed it (resourceVersion %s -> %s)", m.file, k, versions[k], got.GetResourceVersion())
		}
	}
	ds, err := s.Client().AppsV1().DaemonSets("bindguard").Get(ctx, "bindguard", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	env := ds.Spec.Template.Spec.Containers[0].Env
	if ds.Spec.RevisionHistoryLimit == nil || len(env) == 0 || env[0].ValueFrom.FieldRef.APIVersion != "v1" {
		t.Errorf("DaemonSet as stored was not defaulted by the API: revisionHistoryLimit %v, env %+v", ds.Spec.RevisionHistoryLimit, env)
	}
	t.Run("the API refuses what it must", func(t *testing.T) {
		for _, m := range all {
			if m.gvk.Kind != "DaemonSet" {
				continue
			}
			u := toUnstructured(t, m)
			containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
			c := containers[0].(map[string]any)
			vm := c["volumeMounts"].([]any)
			vm[0].(map[string]any)["mountPropagation"] = string(corev1.MountPropagationBidirectional)
			unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers")
			_, err := a.apply(ctx, u)
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "Bidirectional") {
				t.Errorf("Bidirectional propagation in a container that is not privileged: %v, want Invalid", err)
			}
		}
	})
}

// TestServiceAccountRBAC asks the API server, with SubjectAccessReview, what
// the shipped ServiceAccount may do once the shipped RBAC is applied: read
// Nodes, and nothing else.
func TestServiceAccountRBAC(t *testing.T) {
	_, all := shipped(t)
	s := apiserver.Start(t, apiserver.Options{})
	a := newApplier(t, s)
	ctx := context.Background()
	for _, m := range all {
		if _, err := a.apply(ctx, toUnstructured(t, m)); err != nil {
			t.Fatalf("%s: %v", m.file, err)
		}
	}
	sa := pick[*corev1.ServiceAccount](all)[0]
	user := "system:serviceaccount:" + sa.Namespace + ":" + sa.Name
	groups := []string{"system:serviceaccounts", "system:serviceaccounts:" + sa.Namespace, "system:authenticated"}
	for _, tc := range []struct {
		verb, group, resource, sub, ns, name string
		allowed                              bool
	}{
		{verb: "get", resource: "nodes", name: "node-1", allowed: true},
		{verb: "list", resource: "nodes", allowed: true},
		{verb: "watch", resource: "nodes", allowed: true},
		{verb: "update", resource: "nodes", name: "node-1"},
		{verb: "patch", resource: "nodes", name: "node-1"},
		{verb: "delete", resource: "nodes", name: "node-1"},
		{verb: "create", resource: "nodes"},
		{verb: "update", resource: "nodes", sub: "status", name: "node-1"},
		{verb: "get", resource: "nodes", sub: "proxy", name: "node-1"},
		{verb: "get", resource: "secrets", ns: sa.Namespace, name: "any"},
		{verb: "list", resource: "secrets"},
		{verb: "list", resource: "pods"},
		{verb: "get", resource: "pods", ns: "kube-system", name: "any"},
		{verb: "create", resource: "pods", sub: "exec", ns: sa.Namespace, name: "any"},
		{verb: "get", resource: "configmaps", ns: sa.Namespace, name: "bindguard-registry"},
		{verb: "update", group: "apps", resource: "daemonsets", ns: sa.Namespace, name: "bindguard"},
		{verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings"},
		{verb: "create", resource: "serviceaccounts", sub: "token", ns: sa.Namespace, name: sa.Name},
	} {
		name := tc.verb + " " + tc.resource
		if tc.sub != "" {
			name += "/" + tc.sub
		}
		if tc.ns != "" {
			name += " in " + tc.ns
		}
		t.Run(name, func(t *testing.T) {
			sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
				User: user, Groups: groups,
				ResourceAttributes: &authzv1.ResourceAttributes{
					Verb: tc.verb, Group: tc.group, Resource: tc.resource, Subresource: tc.sub, Namespace: tc.ns, Name: tc.name,
				},
			}}
			got, err := s.Client().AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != tc.allowed {
				t.Errorf("allowed = %v (%s), want %v", got.Status.Allowed, got.Status.Reason, tc.allowed)
			}
		})
	}
}
