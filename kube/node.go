package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/sirupsen/logrus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// Node is one Node as the API server last returned it, whole.
type Node struct {
	Name            string
	Labels          map[string]string
	ResourceVersion string
	// Received is when this version reached the watcher.
	Received time.Time
}

// ErrNodeNotFound says the API server answered and has no Node of that name.
var ErrNodeNotFound = errors.New("node not found")

// Watcher follows one Node by name.
type Watcher struct {
	Client kubernetes.Interface
	Name   string
	Log    logrus.FieldLogger
	// OnNode receives the Node on every change of its labels, in order, from
	// Run's goroutine. It is never called with a Node that was not read whole.
	OnNode func(Node)
	// OnReachable, when set, is told each time the API server is lost or
	// found again (not on every retry).
	OnReachable func(bool)
	// MinBackoff and MaxBackoff bound the wait between retries; zero means
	// 500ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// RequestTimeout bounds a list; zero means 15s.
	RequestTimeout time.Duration

	delivered map[string]string // labels last handed to OnNode
	hasNode   bool
	down      time.Time // when the current outage began; zero when reachable
	missing   bool      // the node was reported absent and has not come back
}

// Get reads the Node once. ErrNodeNotFound when the server has no such Node.
func (w *Watcher) Get(ctx context.Context) (Node, error) {
	ctx, cancel := context.WithTimeout(ctx, w.requestTimeout())
	defer cancel()
	n, err := w.Client.CoreV1().Nodes().Get(ctx, w.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Node{}, fmt.Errorf("kube: node %s: %w", w.Name, ErrNodeNotFound)
	}
	if err != nil {
		return Node{}, fmt.Errorf("kube: get node %s: %w", w.Name, err)
	}
	return fromObject(n), nil
}

// Seed tells the watcher which labels its caller already acts on, so that
// Run delivers only what differs from them.
func (w *Watcher) Seed(n Node) {
	w.delivered, w.hasNode = maps.Clone(n.Labels), true
}

// Run lists and watches the Node until ctx ends. It resumes a broken watch
// from the last resourceVersion, relists when that version has expired, and
// retries with jittered exponential backoff while the server is away.
func (w *Watcher) Run(ctx context.Context) {
	backoff := w.minBackoff()
	for ctx.Err() == nil {
		rv, err := w.list(ctx)
		if err == nil {
			w.reachable()
			backoff = w.minBackoff()
			err = w.watch(ctx, rv)
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, errRelist) {
			continue
		}
		w.unreachable(err)
		sleep(ctx, jitter(backoff))
		backoff = min(2*backoff, w.maxBackoff())
	}
}

// errRelist ends a watch whose resourceVersion the server no longer has.
var errRelist = errors.New("resource version expired: relist")

func (w *Watcher) selector() string {
	return fields.OneTermEqualSelector(metav1.ObjectNameField, w.Name).String()
}

// list reads the Node and delivers it; it returns the list's resourceVersion.
func (w *Watcher) list(ctx context.Context) (string, error) {
	lctx, cancel := context.WithTimeout(ctx, w.requestTimeout())
	defer cancel()
	l, err := w.Client.CoreV1().Nodes().List(lctx, metav1.ListOptions{FieldSelector: w.selector()})
	if err != nil {
		return "", fmt.Errorf("kube: list node %s: %w", w.Name, err)
	}
	if len(l.Items) == 0 {
		w.absent("listed")
	} else {
		w.deliver(fromObject(&l.Items[0]))
	}
	return l.ResourceVersion, nil
}

// watch follows the Node from rv until the watch fails. A watch the server
// ends normally (its timeout) is reopened from the last version seen.
func (w *Watcher) watch(ctx context.Context, rv string) error {
	for {
		timeout := int64(300 + rand.IntN(300))
		wi, err := w.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{
			FieldSelector: w.selector(), ResourceVersion: rv,
			AllowWatchBookmarks: true, TimeoutSeconds: &timeout,
		})
		if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
			return errRelist
		}
		if err != nil {
			return fmt.Errorf("kube: watch node %s: %w", w.Name, err)
		}
		rv, err = w.consume(ctx, wi, rv)
		wi.Stop()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// consume handles one watch's events; it returns the last version seen.
func (w *Watcher) consume(ctx context.Context, wi watch.Interface, rv string) (string, error) {
	for {
		var ev watch.Event
		var ok bool
		select {
		case <-ctx.Done():
			return rv, nil
		case ev, ok = <-wi.ResultChan():
		}
		if !ok {
			return rv, nil
		}
		switch ev.Type {
		case watch.Error:
			status := apierrors.FromObject(ev.Object)
			if apierrors.IsResourceExpired(status) || apierrors.IsGone(status) {
				return rv, errRelist
			}
			return rv, fmt.Errorf("kube: watch node %s: %w", w.Name, status)
		case watch.Bookmark, watch.Added, watch.Modified, watch.Deleted:
			n, isNode := ev.Object.(*corev1.Node)
			if !isNode {
				return rv, fmt.Errorf("kube: watch node %s: unexpected object %T", w.Name, ev.Object)
			}
			rv = n.ResourceVersion
			switch ev.Type {
			case watch.Added, watch.Modified:
				w.deliver(fromObject(n))
			case watch.Deleted:
				w.absent("deleted")
			}
		}
	}
}

func (w *Watcher) deliver(n Node) {
	if w.missing {
		w.Log.WithField("node", w.Name).Info("node found")
		w.missing = false
	}
	if w.hasNode && maps.Equal(w.delivered, n.Labels) {
		return
	}
	w.delivered, w.hasNode = maps.Clone(n.Labels), true
	w.OnNode(n)
}

// absent logs, once, that the Node does not exist. Nothing is delivered:
// what the caller acts on stays.
func (w *Watcher) absent(how string) {
	if !w.missing {
		w.Log.WithFields(logrus.Fields{"node": w.Name, "how": how}).
			Warn("node object not found; the labels last known stay in force until it appears")
		w.missing = true
	}
}

func (w *Watcher) unreachable(err error) {
	if !w.down.IsZero() {
		w.Log.WithError(err).Debug("API server still unreachable")
		return
	}
	w.down = time.Now()
	w.Log.WithError(err).WithField("node", w.Name).
		Warn("API server unreachable: the policy in force stays; retrying with backoff")
	if w.OnReachable != nil {
		w.OnReachable(false)
	}
}

func (w *Watcher) reachable() {
	if w.down.IsZero() {
		return
	}
	w.Log.WithFields(logrus.Fields{"node": w.Name, "outage": time.Since(w.down).Round(time.Millisecond).String()}).
		Info("API server reachable again")
	w.down = time.Time{}
	if w.OnReachable != nil {
		w.OnReachable(true)
	}
}

// MarkUnreachable records that the caller found the server unreachable
// before Run started, so that Run logs the recovery and not the outage again.
func (w *Watcher) MarkUnreachable() {
	if w.down.IsZero() {
		w.down = time.Now()
	}
}

func fromObject(n *corev1.Node) Node {
	labels := maps.Clone(n.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	return Node{Name: n.Name, Labels: labels, ResourceVersion: n.ResourceVersion, Received: time.Now()}
}

func (w *Watcher) minBackoff() time.Duration {
	if w.MinBackoff > 0 {
		return w.MinBackoff
	}
	return 500 * time.Millisecond
}

func (w *Watcher) maxBackoff() time.Duration {
	if w.MaxBackoff > 0 {
		return w.MaxBackoff
	}
	return 30 * time.Second
}

func (w *Watcher) requestTimeout() time.Duration {
	if w.RequestTimeout > 0 {
		return w.RequestTimeout
	}
	return 15 * time.Second
}

// jitter spreads retries of many nodes over [d/2, d).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
