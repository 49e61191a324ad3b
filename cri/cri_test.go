package cri

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/bindguard/bindguard/policy"
)

func TestParsePorts(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []policy.PodPort
		err      bool
	}{
		{"absent", "", nil, false},
		{"empty list", "[]", nil, false},
		// As kubelet writes it: json.Marshal of []v1.ContainerPort.
		{"host network", `[{"name":"client","hostPort":2379,"containerPort":2379,"protocol":"TCP"}]`, []policy.PodPort{pp(2379, policy.TCP)}, false},
		{"host port differs", `[{"hostPort":8443,"containerPort":443,"protocol":"TCP"}]`, []policy.PodPort{pp(443, policy.TCP), pp(8443, policy.TCP)}, false},
		{"udp and default tcp", `[{"containerPort":53,"protocol":"UDP"},{"containerPort":53}]`, []policy.PodPort{pp(53, policy.TCP), pp(53, policy.UDP)}, false},
		{"duplicates once", `[{"containerPort":80,"protocol":"TCP"},{"hostPort":80,"containerPort":80,"protocol":"TCP"}]`, []policy.PodPort{pp(80, policy.TCP)}, false},
		{"sctp skipped", `[{"containerPort":9,"protocol":"SCTP"}]`, nil, false},
		{"unknown protocol", `[{"containerPort":9,"protocol":"QUIC"}]`, nil, true},
		{"port zero", `[{"containerPort":0}]`, nil, true},
		{"port too big", `[{"containerPort":65536}]`, nil, true},
		{"negative host port", `[{"containerPort":80,"hostPort":-1}]`, nil, true},
		{"not json", `80/tcp`, nil, true},
		{"object, not list", `{"containerPort":80}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePorts(tc.in)
			if (err != nil) != tc.err || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("ParsePorts(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
			}
		})
	}
}

func FuzzParsePorts(f *testing.F) {
	f.Add(`[{"name":"client","hostPort":2379,"containerPort":2379,"protocol":"TCP"}]`)
	f.Add(`[{"containerPort":53,"protocol":"UDP"}]`)
	f.Fuzz(func(t *testing.T, s string) {
		ps, err := ParsePorts(s)
		if err != nil {
			return
		}
		for i, p := range ps {
			if p.Port == 0 || (p.Protocol != policy.TCP && p.Protocol != policy.UDP) {
				t.Errorf("%q: bad port %v", s, p)
			}
			if i > 0 && (ps[i-1].Port > p.Port || ps[i-1] == p) {
				t.Errorf("%q: not sorted or not unique: %v", s, ps)
			}
		}
	})
}

func TestPodLabels(t *testing.T) {
	in := map[string]string{LabelPodName: "etcd-a", LabelPodNamespace: "kube-system", LabelPodUID: "x", "component": "etcd", "io.kubernetes.tier": "control"}
	want := map[string]string{"component": "etcd", "io.kubernetes.tier": "control"}
	if got := PodLabels(in); !reflect.DeepEqual(got, want) {
		t.Errorf("PodLabels = %v, want %v", got, want)
	}
	if got := PodLabels(nil); got == nil || len(got) != 0 {
		t.Errorf("PodLabels(nil) = %v, want an empty map", got)
	}
}

const (
	uidA = "11111111-2222-4333-8444-555555555555"
	uidB = "aaaaaaaa-2222-4333-8444-555555555555"
	sbA  = "a000000000000000000000000000000000000000000000000000000000000000"
	sbA2 = "a200000000000000000000000000000000000000000000000000000000000000"
	sbB  = "b000000000000000000000000000000000000000000000000000000000000000"
	ctrA = "c000000000000000000000000000000000000000000000000000000000000001"
	ctrB = "c000000000000000000000000000000000000000000000000000000000000002"
	ctrX = "c000000000000000000000000000000000000000000000000000000000000003"
)

func sandbox(id, uid, ns, name string, ready bool, created int64, labels map[string]string) *runtimeapi.PodSandbox {
	l := map[string]string{LabelPodUID: uid, LabelPodName: name, LabelPodNamespace: ns}
	for k, v := range labels {
		l[k] = v
	}
	st := runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	if ready {
		st = runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return &runtimeapi.PodSandbox{Id: id, State: st, CreatedAt: created, Labels: l,
		Metadata: &runtimeapi.PodSandboxMetadata{Name: name, Namespace: ns, Uid: uid}}
}

func container(id, sb, uid, name, ports string) *runtimeapi.Container {
	c := &runtimeapi.Container{Id: id, PodSandboxId: sb, Labels: map[string]string{LabelPodUID: uid, LabelContainerName: name},
		Metadata: &runtimeapi.ContainerMetadata{Name: name}}
	if ports != "" {
		c.Annotations = map[string]string{AnnotationContainerPorts: ports}
	}
	return c
}

func TestBuildPod(t *testing.T) {
	sbs := []*runtimeapi.PodSandbox{
		sandbox(sbA, uidA, "kube-system", "old-name", false, 1, nil),
		sandbox(sbA2, uidA, "kube-system", "etcd-a", true, 2, map[string]string{"component": "etcd"}),
		sandbox(sbB, uidB, "default", "other", true, 3, nil),
	}
	cs := []*runtimeapi.Container{
		container(ctrA, sbA2, uidA, "etcd", `[{"hostPort":2379,"containerPort":2379,"protocol":"TCP"}]`),
		container(ctrB, sbA2, uidA, "metrics", `[{"containerPort":9979,"protocol":"TCP"}]`),
		// Claims pod A by label, but runs in pod B's sandbox: not A's.
		container(ctrX, sbB, uidA, "intruder", `[{"containerPort":22}]`),
	}
	e := buildPod(uidA, sbs, cs)
	if e == nil {
		t.Fatal("buildPod: nil")
	}
	for _, tc := range []struct {
		name, id string
		want     *policy.Pod
		has      bool
	}{
		{"container", ctrA, &policy.Pod{Namespace: "kube-system", Name: "etcd-a", UID: uidA, Labels: map[string]string{"component": "etcd"}, Container: "etcd",
			Ports: []policy.PodPort{pp(2379, policy.TCP), pp(9979, policy.TCP)}, PortsKnown: true}, true},
		{"old sandbox", sbA, &policy.Pod{Namespace: "kube-system", Name: "etcd-a", UID: uidA, Labels: map[string]string{"component": "etcd"},
			Ports: []policy.PodPort{pp(2379, policy.TCP), pp(9979, policy.TCP)}, PortsKnown: true}, true},
		{"other pod's container", ctrX, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if e.has(tc.id) != tc.has {
				t.Fatalf("has(%s) = %v", tc.id, !tc.has)
			}
			if tc.want != nil && !reflect.DeepEqual(e.pod(tc.id), tc.want) {
				t.Errorf("pod(%s) = %+v, want %+v", tc.id, e.pod(tc.id), tc.want)
			}
		})
	}
	if buildPod("99999999-2222-4333-8444-555555555555", sbs, cs) != nil {
		t.Error("buildPod of an unknown uid is not nil")
	}
	bad := buildPod(uidA, sbs, []*runtimeapi.Container{container(ctrA, sbA2, uidA, "etcd", `garbage`)})
	if p := bad.pod(ctrA); p.PortsKnown {
		t.Errorf("a container with an unreadable ports annotation leaves PortsKnown: %+v", p)
	}
	if p := buildPod(uidA, sbs, nil).pod(""); p.PortsKnown {
		t.Errorf("a pod without containers has PortsKnown: %+v", p)
	}
}

func TestNewBadSocket(t *testing.T) {
	if _, err := New(context.Background(), Options{Socket: "relative.sock"}); err == nil {
		t.Error("New with a relative socket path: no error")
	}
}

// With no runtime behind the socket, New still returns a client: Status
// says why, lookups fail with ErrUnavailable, and the outage is logged once.
func TestNoRuntime(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	c, err := New(context.Background(), Options{
		Socket:     "unix://" + filepath.Join(t.TempDir(), "absent.sock"),
		MaxBackoff: 20 * time.Millisecond,
		Logf: func(f string, a ...any) {
			mu.Lock()
			lines = append(lines, f)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i := 0; i < 20; i++ {
		if _, err := c.Lookup(uidA, ctrA); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Lookup = %v, want ErrUnavailable", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := c.Lookup("not-a-uid", ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("Lookup(bad uid) = %v, want ErrInvalid", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := c.LookupWait(ctx, uidA, ""); !errors.Is(err, ErrUnavailable) {
		t.Errorf("LookupWait = %v, want ErrUnavailable", err)
	}
	st := c.Status()
	if st.Connected || st.LastError == "" || st.PodsKnown != 0 {
		t.Errorf("Status = %+v, want disconnected with a reason", st)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 1 {
		t.Errorf("logged %d lines for one outage, want 1: %q", len(lines), lines)
	}
}

func pp(port uint16, proto policy.Protocol) policy.PodPort {
	return policy.PodPort{Port: port, Protocol: proto}
}

func TestDetect(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "rt.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	plain := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(plain, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Detect(filepath.Join(dir, "absent.sock"), plain, sock); err != nil || got != sock {
		t.Errorf("Detect = %q, %v; want %q", got, err, sock)
	}
	if _, err := Detect(plain); !errors.Is(err, ErrNoSocket) {
		t.Errorf("Detect(regular file) = %v, want ErrNoSocket", err)
	}
}
