package kube

import (
	"context"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/bindguard/bindguard/internal/testbed/apiserver"
)

// waitFor bounds a wait for something the test caused; it is a give-up
// limit, not a measurement.
const waitFor = 60 * time.Second

type recorder struct {
	nodes chan Node
	mu    sync.Mutex
	ups   []bool
}

func (r *recorder) next(t *testing.T, what string) Node {
	t.Helper()
	select {
	case n := <-r.nodes:
		return n
	case <-time.After(waitFor):
		t.Fatalf("no node delivered: %s", what)
	}
	return Node{}
}

func (r *recorder) none(t *testing.T, what string) {
	t.Helper()
	select {
	case n := <-r.nodes:
		t.Fatalf("%s: unexpected delivery %v", what, n.Labels)
	default:
	}
}

func setLabels(t *testing.T, c kubernetes.Interface, name string, f func(map[string]string)) {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	f(n.Labels)
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func createNode(t *testing.T, c kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	_, err := c.CoreV1().Nodes().Create(context.Background(),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// TestWatcher follows one Node on a real API server: its labels on every
// change and only then, never another Node's, through an API server outage
// during which the Node changed (through a second API server), with the
// outage and the recovery each logged once.
func TestWatcher(t *testing.T) {
	s := apiserver.Start(t, apiserver.Options{})
	admin := s.Client()
	createNode(t, admin, "n1", map[string]string{"a": "1"})
	createNode(t, admin, "other", map[string]string{"a": "1"})

	log, hook := logtest.NewNullLogger()
	log.SetLevel(logrus.DebugLevel)
	rec := &recorder{nodes: make(chan Node, 16)}
	w := &Watcher{
		Client: s.Client(), Name: "n1", Log: log,
		OnNode: func(n Node) { rec.nodes <- n },
		OnReachable: func(up bool) {
			rec.mu.Lock()
			rec.ups = append(rec.ups, up)
			rec.mu.Unlock()
		},
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	steps := []struct {
		name   string
		change func()
		want   map[string]string // nil: nothing is delivered before the next step's delivery
	}{
		{"initial list", func() {}, map[string]string{"a": "1"}},
		{"another node's change", func() { setLabels(t, admin, "other", func(l map[string]string) { l["b"] = "x" }) }, nil},
		{"a change that is not a label", func() { annotate(t, admin, "n1") }, nil},
		{"label added", func() { setLabels(t, admin, "n1", func(l map[string]string) { l["b"] = "2" }) }, map[string]string{"a": "1", "b": "2"}},
		{"label removed", func() { setLabels(t, admin, "n1", func(l map[string]string) { delete(l, "a") }) }, map[string]string{"b": "2"}},
	}
	for _, st := range steps {
		st.change()
		if st.want == nil {
			continue // the next delivery must be the next step's, checked there
		}
		if n := rec.next(t, st.name); !maps.Equal(n.Labels, st.want) || n.Name != "n1" {
			t.Fatalf("%s: delivered %s %v, want n1 %v", st.name, n.Name, n.Labels, st.want)
		}
	}

	checkOutage(t, s, rec, hook)
}

// checkOutage stops the API server, changes the Node through a second one,
// restarts the first, and checks the change is delivered and the outage and
// recovery were each reported and logged once.
func checkOutage(t *testing.T, s *apiserver.Server, rec *recorder, hook *logtest.Hook) {
	peer := s.AddAPIServer()
	s.StopAPIServer()
	waitUntil(t, "outage noticed", func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.ups) == 1 })
	peerClient, err := kubernetes.NewForConfig(peer)
	if err != nil {
		t.Fatal(err)
	}
	setLabels(t, peerClient, "n1", func(l map[string]string) { l["zone"] = "z1" })
	time.Sleep(300 * time.Millisecond) // several retries happen while it is down
	rec.none(t, "during the outage")
	s.RestartAPIServer()
	if n := rec.next(t, "after the outage"); !maps.Equal(n.Labels, map[string]string{"b": "2", "zone": "z1"}) {
		t.Fatalf("after the outage: delivered %v", n.Labels)
	}
	rec.mu.Lock()
	ups := append([]bool(nil), rec.ups...)
	rec.mu.Unlock()
	if len(ups) != 2 || ups[0] || !ups[1] {
		t.Fatalf("reachability reported %v, want [false true]", ups)
	}
	var lost, back, retries int
	for _, e := range hook.AllEntries() {
		switch {
		case strings.HasPrefix(e.Message, "API server unreachable"):
			lost++
		case e.Message == "API server reachable again":
			back++
		case e.Message == "API server still unreachable":
			retries++
		}
	}
	t.Logf("outage: %d retries logged at debug", retries)
	if lost != 1 || back != 1 || retries == 0 {
		t.Fatalf("logged the outage %d times, the recovery %d times, %d retries; want 1, 1, >0", lost, back, retries)
	}
}

func annotate(t *testing.T, c kubernetes.Interface, name string) {
	t.Helper()
	ctx := context.Background()
	n, err := c.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations["touched"] = time.Now().String()
	if _, err := c.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func waitUntil(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestWatcherNodeAbsent: a Node that does not exist yet is reported once and
// delivered when it is created; nothing is delivered before.
func TestWatcherNodeAbsent(t *testing.T) {
	s := apiserver.Start(t, apiserver.Options{})
	log, hook := logtest.NewNullLogger()
	rec := &recorder{nodes: make(chan Node, 4)}
	w := &Watcher{Client: s.Client(), Name: "late", Log: log, OnNode: func(n Node) { rec.nodes <- n }}
	if _, err := w.Get(context.Background()); err == nil || !strings.Contains(err.Error(), ErrNodeNotFound.Error()) {
		t.Fatalf("Get of a missing node: %v, want ErrNodeNotFound", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitUntil(t, "absence logged", func() bool { return len(hook.AllEntries()) > 0 })
	rec.none(t, "before the node exists")
	createNode(t, s.Client(), "late", map[string]string{"k": "v"})
	if n := rec.next(t, "node created"); n.Labels["k"] != "v" {
		t.Fatalf("delivered %v", n.Labels)
	}
}
