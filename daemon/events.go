package daemon

import (
	"errors"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// keepOrigins is how many generations of origins are kept for events still
// queued after a reload; an event of an older generation, one read long
// after a reload storm, is logged without its rule.
const keepOrigins = 32

// origins maps a policy generation to the registry entries its rules came
// from. Reload writes it while the event reader reads it: it has its own
// lock, so that an event never waits for a registry to compile.
type origins struct {
	mu    sync.Mutex
	byGen map[uint32][]policy.Origin
}

func newOrigins() origins { return origins{byGen: map[uint32][]policy.Origin{}} }

func (o *origins) set(gen uint32, list []policy.Origin) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.byGen[gen] = list
	delete(o.byGen, gen-keepOrigins)
}

// get returns the origin of a 1-based index in generation gen's policy. It
// is unknown for a generation another daemon applied (events queued before a
// takeover) or one long replaced.
func (o *origins) get(gen, index uint32) (policy.Origin, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	list := o.byGen[gen]
	if index == 0 || int(index) > len(list) {
		return policy.Origin{}, false
	}
	return list[index-1], true
}

// startReaders starts the violation-event reader and, when the kernel has
// the tracepoints, the cgroup-event reader that puts late owners in force.
func (d *Daemon) startReaders() error {
	if err := d.ld.EventReader(); err != nil {
		return err
	}
	d.readers.Add(1)
	go func() {
		defer d.readers.Done()
		readLoop(d, "event", d.ld.ReadEvent, d.logEvent)
	}()
	r := &cgroupReader{d: d, late: make(chan loader.CgroupEvent, latePaths), due: make(chan struct{}, 1)}
	d.readers.Add(2)
	go func() {
		defer d.readers.Done()
		readLoop(d, "cgroup event", d.ld.ReadCgroupEvent, r.event)
	}()
	go func() {
		defer d.readers.Done()
		r.work()
	}()
	return nil
}

// latePaths is how many new cgroups whose path the event did not carry,
// and which could not be opened by id at once, wait for a second look.
const latePaths = 64

// refreshEvery is the least time between two rewrites of every membership
// after lost events: losses that keep coming cost one rewrite a second.
const refreshEvery = time.Second

// readLoop hands every record read to handle until shutdown. It checks for
// shutdown before each read, so it returns after at most one more record
// however fast records arrive.
func readLoop[T any](d *Daemon, what string, read func() (T, error), handle func(T)) {
	for {
		select {
		case <-d.stopping:
			return
		default:
		}
		v, err := read()
		if err != nil {
			if loader.Stopped(err) {
				return
			}
			d.log.WithError(err).Error("read " + what)
			select {
			case <-d.stopping:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		handle(v)
	}
}

// cgroupReader is the cgroup-event reader's state. The events of every
// cgroup on the node, an unprivileged user's included, go through it one
// after the other, so it waits only for cgroups the policy or kubelet's
// tree names; work does the waiting for the rest.
type cgroupReader struct {
	d *Daemon
	// late: new cgroups for work to look up again; due: a rewrite of every
	// membership for work to make.
	late chan loader.CgroupEvent
	due  chan struct{}
	// lost is the kernel's count of lost events last seen, dropped the
	// cgroups later could not queue (both the reader's alone).
	lost, dropped uint64

	mu sync.Mutex
	// refreshed is when every membership was last rewritten; waiting is
	// set while a rewrite waits for refreshEvery to pass.
	refreshed time.Time
	waiting   bool
}

// event puts owners that appear later in force, and repairs a membership
// the kernel could not copy. When events were lost, every membership of the
// policy in force is rewritten.
func (r *cgroupReader) event(ev loader.CgroupEvent) {
	d := r.d
	switch ev.Op {
	case loader.CgroupMkdir:
		if ev.Path == "" { // longer than the event holds
			rel, err := d.cg.Path(ev.ID)
			if err != nil {
				r.later(ev) // not visible yet, or gone already
				break
			}
			ev.Path = rel
		}
		d.cgroupCreated(ev)
	case loader.CgroupRmdir:
		d.cgroupRemoved(ev)
	}
	if n, err := d.ld.CgroupEventsLost(); err == nil && n != r.lost {
		d.log.WithField("lost", n-r.lost).Warn("cgroup events were lost; rewriting every owner membership")
		r.lost = n
		r.refresh()
	}
}

// later hands a new cgroup the reader could not open by id to resolveLate.
// When that queue is full (a flood of long-named cgroups made and removed
// at once), the cgroup is treated as a lost event.
func (r *cgroupReader) later(ev loader.CgroupEvent) {
	select {
	case r.late <- ev:
		return
	default:
	}
	r.dropped++
	if r.dropped&(r.dropped-1) == 0 { // the 1st, 2nd, 4th … : a flood logs a few lines
		r.d.log.WithFields(logrus.Fields{"cgroup_id": ev.ID, "dropped": r.dropped}).
			Warn("too many new cgroups with long paths to look up; rewriting every owner membership instead")
	}
	r.refresh()
}

// refresh rewrites every membership, at most once per refreshEvery: one
// asked for sooner is made by work when that time has passed.
func (r *cgroupReader) refresh() {
	r.mu.Lock()
	if r.waiting {
		r.mu.Unlock()
		return // one is on its way
	}
	if wait := refreshEvery - time.Since(r.refreshed); wait > 0 {
		r.waiting = true
		time.AfterFunc(wait, func() { r.due <- struct{}{} })
		r.mu.Unlock()
		return
	}
	r.refreshed = time.Now()
	r.mu.Unlock()
	r.rewrite()
}

// rewrite rewrites every membership of the policy in force.
func (r *cgroupReader) rewrite() {
	d := r.d
	if d.pods != nil {
		// A pod or container cgroup may be among the lost: look again.
		d.pods.scan()
	}
	d.mu.Lock()
	_, err := d.ld.RefreshMembers(d.sources())
	d.mu.Unlock()
	if err != nil {
		d.log.WithError(err).Error("rewrite owner memberships")
	}
}

// cgroupCreated handles a new cgroup whose path is known.
func (d *Daemon) cgroupCreated(ev loader.CgroupEvent) {
	d.mu.Lock()
	wrote, err := d.ld.CgroupCreated(ev)
	d.mu.Unlock()
	if d.pods != nil {
		d.pods.created(ev.Path)
	}
	if err != nil {
		d.log.WithError(err).WithField("cgroup", ev.Path).Error("put owner in force")
	} else if wrote {
		d.metrics.ownersResolved.Inc()
		d.log.WithFields(logrus.Fields{"cgroup": ev.Path, "cgroup_id": ev.ID, "repaired": ev.CopyFailed}).Info("owner cgroup appeared: in force")
	}
}

// cgroupRemoved forgets a removed cgroup.
func (d *Daemon) cgroupRemoved(ev loader.CgroupEvent) {
	d.mu.Lock()
	d.ld.CgroupRemoved(ev)
	d.mu.Unlock()
	if d.pods != nil && ev.Path != "" {
		d.pods.removed(ev.Path)
	}
}

// work runs beside the reader what may wait: the rewrites refresh
// deferred, and a second look for new cgroups the reader could not open by
// id (their directory may not be visible yet). One gone by then is
// dropped; one removed while it is handled is forgotten again (the
// reader's rmdir may have come first).
func (r *cgroupReader) work() {
	d := r.d
	for {
		select {
		case <-d.stopping:
			return
		default:
		}
		select {
		case <-d.stopping:
			return
		case <-r.due:
			r.mu.Lock()
			r.waiting, r.refreshed = false, time.Now()
			r.mu.Unlock()
			r.rewrite()
		case ev := <-r.late:
			rel, err := d.cgroupPath(ev.ID)
			if err != nil {
				continue
			}
			ev.Path = rel
			d.cgroupCreated(ev)
			if _, err := os.Stat(d.cg.Abs(rel)); errors.Is(err, os.ErrNotExist) {
				d.cgroupRemoved(loader.CgroupEvent{Op: loader.CgroupRmdir, ID: ev.ID, Path: rel})
			}
		}
	}
}

// cgroupPath resolves a cgroup created a moment ago. The mkdir tracepoint
// fires before the directory can be opened by its id, so retry briefly.
func (d *Daemon) cgroupPath(id uint64) (string, error) {
	wait := time.Millisecond
	for {
		rel, err := d.cg.Path(id)
		if err == nil || wait > 64*time.Millisecond {
			return rel, err
		}
		time.Sleep(wait)
		wait *= 2
	}
}

func family(f int) string {
	if f == 4 {
		return "ipv4"
	}
	return "ipv6"
}

func (d *Daemon) logEvent(ev loader.Event) {
	verdict := "audit"
	if ev.Denied {
		verdict = "deny"
	}
	d.metrics.events.WithLabelValues(verdict, ev.Reason.String()).Inc()
	var pod *policy.Pod
	f := logrus.Fields{
		"verdict":   verdict,
		"reason":    ev.Reason.String(),
		"port":      ev.Port,
		"protocol":  ev.Protocol.String(),
		"family":    family(ev.Family),
		"address":   ev.Address.String(),
		"pid":       ev.PID,
		"comm":      ev.Comm,
		"uid":       ev.UID,
		"cgroup_id": ev.CgroupID,
	}
	if p, err := d.cg.Path(ev.CgroupID); err == nil {
		f["cgroup"] = p
		// Only the system manager's unit: a look-alike in a delegated
		// subtree is named by its path, not as the unit it imitates.
		if u, _, ok := cgroups.UnitOf(d.cfg.Cgroup, p); ok {
			f["unit"] = u
		}
		if c := cgroups.Container(p); c != "" {
			f["container_id"] = c
		}
		pod = d.decoratePod(f, p)
	} else {
		f["cgroup"] = ""
	}
	var origin *policy.Origin
	if o, ok := d.origins.get(ev.Generation, ev.Origin); ok {
		f["rule"] = o.Pos.FileLine()
		f["process"] = o.Process
		origin = &o
	}
	d.metrics.violations.count(ev, origin, pod)
	if ev.Suppressed > 0 {
		f["suppressed"] = ev.Suppressed
	}
	msg := "bind audited: would be denied in enforce mode"
	if ev.Denied {
		msg = "bind denied"
	}
	d.log.WithFields(f).WithTime(ev.Time).Warn(msg)
}

// decoratePod names the pod a binder runs in: namespace, pod, container
// and pod_uid, or pod_pending while the runtime has not told.
func (d *Daemon) decoratePod(f logrus.Fields, cgroup string) *policy.Pod {
	if d.pods == nil {
		return nil
	}
	pod := d.pods.identity(cgroup)
	switch {
	case pod == nil:
	case pod.Pending:
		f["pod_uid"] = pod.UID
		f["pod_pending"] = true
	default:
		f["namespace"], f["pod"], f["pod_uid"] = pod.Namespace, pod.Name, pod.UID
		if pod.Container != "" {
			f["container"] = pod.Container
		}
	}
	return pod
}
