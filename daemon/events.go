package daemon

import (
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
	d.readers.Add(1)
	go func() {
		defer d.readers.Done()
		var lost uint64
		readLoop(d, "cgroup event", d.ld.ReadCgroupEvent, func(ev loader.CgroupEvent) {
			d.cgroupEvent(ev, &lost)
		})
	}()
	return nil
}

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

// cgroupEvent puts owners that appear later in force, and repairs a
// membership the kernel could not copy. When events were lost, it rewrites
// every membership of the policy in force.
func (d *Daemon) cgroupEvent(ev loader.CgroupEvent, lost *uint64) {
	switch ev.Op {
	case loader.CgroupMkdir:
		if ev.Path == "" {
			rel, err := d.cgroupPath(ev.ID)
			if err != nil {
				return // gone already
			}
			ev.Path = rel
		}
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
	case loader.CgroupRmdir:
		d.mu.Lock()
		d.ld.CgroupRemoved(ev)
		d.mu.Unlock()
		if d.pods != nil && ev.Path != "" {
			d.pods.removed(ev.Path)
		}
	}
	if n, err := d.ld.CgroupEventsLost(); err == nil && n != *lost {
		d.log.WithField("lost", n-*lost).Warn("cgroup events were lost; rewriting every owner membership")
		*lost = n
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
