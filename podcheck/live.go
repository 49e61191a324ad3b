package podcheck

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// pageSize is how many objects one list request asks for, as kubectl does.
const pageSize = 500

// List reads every pod of every namespace and every node from the API
// server, a page at a time. It needs list on pods and nodes cluster-wide.
// Pods and nodes are two reads, not one snapshot: a pod scheduled to a node
// created between them is reported as unknown-node.
func List(ctx context.Context, cs kubernetes.Interface) (Cluster, error) {
	var cl Cluster
	nodes := cs.CoreV1().Nodes()
	err := pages(ctx, func(opts metav1.ListOptions) (string, error) {
		l, err := nodes.List(ctx, opts)
		if err != nil {
			return "", err
		}
		cl.Nodes = append(cl.Nodes, l.Items...)
		return l.Continue, nil
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("list nodes: %w", err)
	}
	pods := cs.CoreV1().Pods(corev1.NamespaceAll)
	err = pages(ctx, func(opts metav1.ListOptions) (string, error) {
		l, err := pods.List(ctx, opts)
		if err != nil {
			return "", err
		}
		cl.Pods = append(cl.Pods, l.Items...)
		return l.Continue, nil
	})
	if err != nil {
		return Cluster{}, fmt.Errorf("list pods: %w", err)
	}
	return cl, nil
}

// pages calls list with a continue token until the server returns none.
func pages(ctx context.Context, list func(metav1.ListOptions) (string, error)) error {
	opts := metav1.ListOptions{Limit: pageSize}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		next, err := list(opts)
		if err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		opts.Continue = next
	}
}
