package apiserver

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestStartStopRestart checks the whole life cycle on the real binaries: an
// object written before the API server stops is read back after it restarts
// on the same address, with the same admin credentials.
func TestStartStopRestart(t *testing.T) {
	s := Start(t, Options{})
	ctx := context.Background()
	c := s.Client()
	v, err := c.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver %s at %s", v.GitVersion, s.URL)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{"a": "b"}}}
	if _, err := c.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	s.StopAPIServer()
	if _, err := c.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{}); err == nil {
		t.Fatal("get succeeded with the API server stopped")
	}
	s.RestartAPIServer()
	got, err := s.Client().CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["a"] != "b" {
		t.Fatalf("labels after restart: %v", got.Labels)
	}
}
