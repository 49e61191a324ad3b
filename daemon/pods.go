package daemon

import (
	"context"
	"errors"
	"os"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/cri"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// podTracker follows kubelet's pods on this node for the loader: which
// cgroups are pods' (from their place in kubelet's tree), and who each pod
// and container is (from the container runtime, over CRI). It is the
// loader's PodSource.
//
// Only kubelet's own tree counts: a cgroup is a pod's when it parses as
// kubelet's layout AND its kubepods cgroup is one of places. A look-alike
// tree elsewhere (anyone with a delegated subtree can make one) is nobody's
// pod. The identity then comes from the runtime, not from the path.
type podTracker struct {
	d      *Daemon
	cri    *cri.Client
	places []string

	mu sync.Mutex
	// cgroups are the pod and container cgroups known, by path.
	cgroups map[string]loader.PodCgroup
	// spawn are kubelet's pod parents: kubepods and its QoS levels.
	spawn map[string]bool
	// resolving: pod cgroups and containers being looked up, each with
	// the cancel of its lookup (removed ends it).
	resolving map[string]*lookup
	// looking: lookups may start (begin): their answers go to the loader,
	// which exists only once the first policy is in force.
	looking bool
	ctx     context.Context
	cancel  context.CancelFunc
}

// DefaultKubepods are where kubelet puts its tree, relative to the attach
// cgroup (kubelet's --cgroup-root): the cgroupfs and systemd drivers' names.
var DefaultKubepods = []string{"kubepods", "kubepods.slice"}

func newPodTracker(d *Daemon) (*podTracker, error) {
	c, err := cri.New(context.Background(), cri.Options{
		Socket: d.cfg.CRISocket,
		Logf:   func(f string, a ...any) { d.log.Warnf(f, a...) },
	})
	if err != nil {
		return nil, err
	}
	t := &podTracker{d: d, cri: c, cgroups: map[string]loader.PodCgroup{}, spawn: map[string]bool{}, resolving: map[string]*lookup{}}
	places := d.cfg.Kubepods
	if len(places) == 0 {
		for _, p := range DefaultKubepods {
			places = append(places, path.Join(d.cfg.Cgroup, p))
		}
	}
	for _, p := range places {
		t.places = append(t.places, path.Clean("/"+p))
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	return t, nil
}

func (t *podTracker) close() {
	t.cancel()
	t.cri.Close()
}

// PodCgroups is loader.PodSource's: the pod and container cgroups known.
func (t *podTracker) PodCgroups() []loader.PodCgroup {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]loader.PodCgroup, 0, len(t.cgroups))
	for _, pc := range t.cgroups {
		out = append(out, pc)
	}
	return out
}

// SpawnPending is loader.PodSource's: kubelet's pod parents.
func (t *podTracker) SpawnPending() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.spawn))
	for p := range t.spawn {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// kube parses rel as a cgroup of kubelet's tree in its real place.
func (t *podTracker) kube(rel string) (cgroups.KubeCgroup, bool) {
	rel = path.Clean("/" + rel)
	if slices.Contains(t.places, rel) {
		return cgroups.KubeCgroup{Level: cgroups.KubeQoS, Kubepods: rel}, true // kubepods itself: a parent
	}
	level, k := cgroups.KubeLevelOf(rel) // a QoS level too: a parent of pods
	if level == cgroups.NotKube || !slices.Contains(t.places, k.Kubepods) || k.Subgroup {
		return k, false
	}
	return k, true
}

// scan records the pods that exist: before the first Apply, each pending;
// after lost events, the ones missed. Its lookups start when the tracker
// does (begin). Cgroups it knew that are gone are forgotten (their removal
// may have been among the lost events).
func (t *podTracker) scan() {
	seen := map[string]bool{}
	for _, place := range t.places {
		t.scanDir(place, seen)
	}
	t.mu.Lock()
	var gone []string
	for rel := range t.cgroups {
		if !seen[rel] {
			gone = append(gone, rel)
		}
	}
	for rel := range t.spawn {
		if !seen[rel] {
			gone = append(gone, rel)
		}
	}
	t.mu.Unlock()
	for _, rel := range gone {
		if _, err := os.Stat(t.d.cg.Abs(rel)); errors.Is(err, os.ErrNotExist) {
			t.removed(rel)
		}
	}
}

// begin lets lookups start, and starts those of the cgroups recorded so
// far: called once the loader holds the first policy.
func (t *podTracker) begin() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.looking = true
	for rel, pc := range t.cgroups {
		if k, ok := t.kube(rel); ok {
			t.lookupLocked(rel, k, pc)
		}
	}
}

func (t *podTracker) scanDir(rel string, seen map[string]bool) {
	k, ok := t.kube(rel)
	if !ok {
		return
	}
	seen[rel] = true
	t.record(rel, k)
	if k.Level == cgroups.KubeContainer {
		return
	}
	ents, err := os.ReadDir(t.d.cg.Abs(rel))
	if err != nil {
		return
	}
	for _, e := range ents {
		if e.IsDir() {
			t.scanDir(path.Join(rel, e.Name()), seen)
		}
	}
}

// record notes a cgroup of kubelet's tree and starts its lookup. It reports
// whether the loader must be told (a new parent, or a new pending pod).
func (t *podTracker) record(rel string, k cgroups.KubeCgroup) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch k.Level {
	case cgroups.KubeQoS:
		if t.spawn[rel] {
			return false
		}
		t.spawn[rel] = true
		return true
	case cgroups.KubePodLevel, cgroups.KubeContainer:
		pc, ok := t.cgroups[rel]
		if !ok {
			pc = loader.PodCgroup{Path: rel, Pod: &policy.Pod{UID: k.PodUID, Pending: true}}
			t.cgroups[rel] = pc
		}
		t.lookupLocked(rel, k, pc)
		return k.Level == cgroups.KubePodLevel
	}
	return false
}

// lookupLocked starts the lookup of a pod or container cgroup, unless
// lookups may not start yet, one runs already, or its identity is known
// (a cgroup seen again by a rescan). Called with t.mu held.
func (t *podTracker) lookupLocked(rel string, k cgroups.KubeCgroup, pc loader.PodCgroup) {
	if !t.looking || pc.Pod == nil || !pc.Pod.Pending || t.resolving[rel] != nil {
		return
	}
	l := &lookup{done: make(chan struct{})}
	var ctx context.Context
	ctx, l.cancel = context.WithCancel(t.ctx)
	t.resolving[rel] = l
	go t.resolve(ctx, l, rel, k)
}

// lookup is one running lookup of a cgroup's identity.
type lookup struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when it has ended
}

// resolve asks the runtime who a pod or container is, retrying while it is
// not there yet or the runtime is away, and puts the answer in force. It
// ends with ctx: at shutdown, or when the cgroup is removed.
func (t *podTracker) resolve(ctx context.Context, l *lookup, rel string, k cgroups.KubeCgroup) {
	defer close(l.done)
	defer func() {
		l.cancel()
		t.mu.Lock()
		if t.resolving[rel] == l { // not a lookup of the same path made again
			delete(t.resolving, rel)
		}
		t.mu.Unlock()
	}()
	start := time.Now()
	pod, err := t.cri.LookupWait(ctx, k.PodUID, k.ContainerID)
	if err != nil {
		if ctx.Err() == nil {
			t.d.log.WithError(err).WithField("cgroup", rel).Warn("pod identity not resolved: binds from it are judged as a pending pod")
		}
		return
	}
	t.mu.Lock()
	if _, ok := t.cgroups[rel]; !ok {
		t.mu.Unlock()
		return // removed meanwhile
	}
	pc := loader.PodCgroup{Path: rel, Pod: pod}
	t.cgroups[rel] = pc
	t.mu.Unlock()

	t.d.mu.Lock()
	err = t.d.ld.SetPod(pc)
	t.d.mu.Unlock()
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.d.log.WithError(err).WithField("cgroup", rel).Error("put pod identity in force")
		return
	}
	t.d.metrics.podsResolved.Inc()
	t.d.log.WithFields(logrus.Fields{
		"cgroup": rel, "namespace": pod.Namespace, "pod": pod.Name, "container": pod.Container,
		"pod_uid": pod.UID, "resolve_ms": float64(time.Since(start).Microseconds()) / 1000,
	}).Info("pod identity in force")
}

// created handles a new cgroup: kubelet's parents and pods. Callers do not
// hold d.mu.
func (t *podTracker) created(rel string) {
	k, ok := t.kube(rel)
	if !ok || !t.record(rel, k) {
		return
	}
	// The event can come before the directory is visible: a write then
	// would find nothing and pass for a cgroup removed meanwhile.
	if !cgroups.AwaitDir(t.d.cg.Abs(rel), cgroups.AwaitNew) {
		return
	}
	t.d.mu.Lock()
	defer t.d.mu.Unlock()
	var err error
	if k.Level == cgroups.KubeQoS {
		err = t.d.ld.SetSpawnPending(rel)
	} else {
		t.mu.Lock()
		pc := t.cgroups[rel]
		t.mu.Unlock()
		if pc.Pod != nil && pc.Pod.Pending {
			err = t.d.ld.SetPod(pc)
		}
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.d.log.WithError(err).WithField("cgroup", rel).Error("mark pod cgroup")
	}
}

// removed forgets a cgroup of kubelet's tree; a pod's removal drops its
// declared ports from the policy in force and from the runtime cache.
func (t *podTracker) removed(rel string) {
	rel = path.Clean("/" + rel)
	t.mu.Lock()
	pc, ok := t.cgroups[rel]
	delete(t.cgroups, rel)
	delete(t.spawn, rel)
	if l := t.resolving[rel]; l != nil {
		l.cancel()
		delete(t.resolving, rel)
	}
	t.mu.Unlock()
	if !ok {
		return
	}
	if k, _ := t.kube(rel); k.Level == cgroups.KubePodLevel && pc.Pod != nil {
		t.cri.Forget(pc.Pod.UID)
		t.d.mu.Lock()
		t.d.ld.PodRemoved(pc.Pod.UID)
		t.d.mu.Unlock()
		t.d.log.WithFields(logrus.Fields{"cgroup": rel, "pod_uid": pc.Pod.UID, "namespace": pc.Pod.Namespace, "pod": pc.Pod.Name}).Info("pod forgotten")
	}
}

// identity returns what is known of the pod a cgroup belongs to: the
// container's identity when known, else the pod's; nil for no pod.
func (t *podTracker) identity(rel string) *policy.Pod {
	t.mu.Lock()
	defer t.mu.Unlock()
	for p := path.Clean("/" + rel); p != "/"; p = path.Dir(p) {
		if pc, ok := t.cgroups[p]; ok {
			return pc.Pod
		}
	}
	return nil
}

// status is the runtime connection and the pods known, for logs and metrics.
func (t *podTracker) status() cri.Status { return t.cri.Status() }

// collectors export the runtime connection and the pods known at scrape time.
func (t *podTracker) collectors() []prometheus.Collector {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bindguard_cri_connected", Help: "1 while the container runtime (CRI) answers; pod identities already known are kept while it does not.",
		}, func() float64 { return b(t.status().Connected) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bindguard_pods_known", Help: "Pods whose identity the container runtime reported.",
		}, func() float64 { return float64(t.status().PodsKnown) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "bindguard_pod_cgroups_pending", Help: "Pod and container cgroups whose identity is not known yet: binds from them to pod-owned ports are pod-pending (audited).",
		}, func() float64 { return float64(t.pending()) }),
	}
}

// pending counts the pod and container cgroups still pending.
func (t *podTracker) pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, pc := range t.cgroups {
		if pc.Pod == nil || pc.Pod.Pending {
			n++
		}
	}
	return n
}
