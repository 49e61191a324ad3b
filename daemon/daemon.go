package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/bindguard/bindguard/autobind"
	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// Config is what `bindguard run` is told.
type Config struct {
	Registry   []string
	Mode       policy.Mode
	Cgroup     string // attach point, relative to the cgroup2 root
	PinPath    string
	NodeLabels map[string]string
	// ReadyFile is written once the programs are attached: it exists and
	// names this daemon's pid while the daemon runs.
	ReadyFile  string
	AllNetns   bool
	KeepOnExit bool
	// EventInterval rate-limits events per (cgroup, port, protocol, reason).
	EventInterval time.Duration
	MetricsAddr   string
	// Watch reloads when a registry file or directory changes.
	Watch bool
	// CheckInterval is how often the daemon checks that its links are still
	// attached; 0 means DefaultCheckInterval.
	CheckInterval time.Duration
	// CRISocket is the container runtime's socket; "" detects it, "none"
	// turns pod identity off (pods are then judged as pending pods).
	CRISocket string
	// Kubepods are kubelet's kubepods cgroups (registry paths); empty:
	// DefaultKubepods below the attach cgroup.
	Kubepods []string
	// PodPorts: pods may bind only the ports their containers declare.
	PodPorts bool
	// ReserveState is the file recording the ports bindguard added to
	// ip_local_reserved_ports; "none" leaves the sysctl alone.
	ReserveState string
	// Node, with a name, takes labels and the mode from the Node object (node.go).
	Node NodeConfig
}

// DefaultCheckInterval is how often a running daemon checks, by default,
// that its programs are still attached to the cgroup.
const DefaultCheckInterval = 10 * time.Second

// Daemon enforces one registry until its context ends.
type Daemon struct {
	cfg Config
	log logrus.FieldLogger
	cg  *cgroups.FS
	ld  *loader.Loader

	mu      sync.Mutex // serialises reloads and owner updates: every call into ld but the readers'
	metrics *metrics
	origins origins

	// reload asks the serve loop for a reload; the value says why.
	reload chan string
	// stopping is closed when shutdown begins: the readers return.
	stopping chan struct{}
	readers  sync.WaitGroup
	// attached is set once this daemon's links are in place: from then on,
	// exiting without --keep-on-exit ends enforcement.
	attached bool
	// wasLost is set while the self-check finds the links detached.
	wasLost bool
	// cleanup runs on shutdown, last added first.
	cleanup []func()
	// pods follows kubelet's pods; nil when pod identity is off.
	pods *podTracker
	// reserver keeps restricted ports out of autobind; nil when off.
	reserver *autobind.Reserver
	// node follows this node's Node object; nil without --node-name.
	node *nodeState
}

// Run loads the registry, puts the policy in force, attaches, and then logs
// events and reloads on SIGHUP or registry changes until ctx ends or SIGINT/
// SIGTERM arrives. On exit it detaches and removes its pins, unless
// KeepOnExit, in which case enforcement stays. A failure before the programs
// are attached leaves whatever an earlier daemon pinned as it was.
func Run(ctx context.Context, cfg Config, log logrus.FieldLogger) error {
	if err := cfg.complete(); err != nil {
		return err
	}
	// Before anything is attached: a signal during start-up must reach the
	// clean-up below, not the default handler that would leave pins behind.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	d := &Daemon{
		cfg: cfg, log: log, metrics: newMetrics(), origins: newOrigins(),
		reload: make(chan string, 1), stopping: make(chan struct{}),
	}
	err := d.start(ctx, sigs)
	if err == nil {
		err = d.serve(ctx, sigs)
	}
	return errors.Join(err, d.shutdown())
}

// complete fills in defaults and refuses settings that make no sense.
func (c *Config) complete() error {
	if c.Mode == "" {
		c.Mode = policy.ModeAudit
	}
	if c.Cgroup == "" {
		c.Cgroup = "/"
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.EventInterval < 0 {
		return fmt.Errorf("event interval %v: must be 0 or more", c.EventInterval)
	}
	if c.CheckInterval < 0 {
		return fmt.Errorf("check interval %v: must be more than 0", c.CheckInterval)
	}
	return c.conflicts()
}

// conflicts refuses settings that each parse but together would be
// silently ignored.
func (c *Config) conflicts() error {
	if c.PodPorts && c.CRISocket == "none" {
		return errors.New("--pod-ports=require with --cri-socket none: pod ports are checked only for pods identified through the container runtime, which none turns off, so no port would be checked")
	}
	if c.Node.Kubeconfig != "" && c.Node.Name == "" {
		return errors.New("--kubeconfig without --node-name: the kubeconfig is used only to follow the Node that --node-name names, so it would be ignored")
	}
	return nil
}

// start puts the policy in force and starts everything serve relies on.
// Whatever it started is undone by shutdown, also when it fails half-way:
// a step that needs undoing registers it with onShutdown. A signal that
// arrives meanwhile waits for serve.
func (d *Daemon) start(ctx context.Context, sigs <-chan os.Signal) (err error) {
	// The node's labels and mode first: no bind is judged against a
	// half-known node (see node.go for what happens while the API is away).
	if err := d.initNode(ctx, sigs); err != nil {
		return ignoreStopped(err)
	}
	compiled, sel, err := d.compile()
	if err != nil {
		return err
	}
	if d.cg, err = cgroups.Open(""); err != nil {
		return err
	}
	d.onShutdown(func() { d.cg.Close() })
	attach := d.cg.Abs(d.cfg.Cgroup)
	if st, err := os.Stat(attach); err != nil || !st.IsDir() {
		return fmt.Errorf("attach cgroup %s: no such cgroup below %s", d.cfg.Cgroup, d.cg.Root)
	}
	if err := d.startHost(); err != nil {
		return err
	}
	if err := d.load(attach, compiled, sel); err != nil {
		return err
	}
	if d.pods != nil {
		d.pods.begin() // the loader exists: identities may be put in force
	}
	if err := d.startReaders(); err != nil {
		return err
	}
	// The Node watch once the policy is in force: a label change is then
	// applied like a reload.
	d.onShutdown(d.followNode(ctx))
	d.onShutdown(d.followRuntime(ctx))
	if d.cfg.MetricsAddr != "" {
		stop, err := d.serveMetrics(d.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
		d.onShutdown(stop)
	}
	if d.cfg.Watch {
		if stop, err := watch(d.cfg.Registry, d.ownFile, d.reload, d.log); err != nil {
			d.log.WithError(err).Warn("registry changes will not be picked up automatically; reload with SIGHUP")
		} else {
			d.onShutdown(stop)
		}
	}
	if d.cfg.ReadyFile != "" {
		if err := writeReady(d.cfg.ReadyFile, d.ld.Generation()); err != nil {
			return err
		}
		d.onShutdown(func() { removeReady(d.cfg.ReadyFile) })
	}
	return nil
}

// startHost sets up what the first policy needs besides the kernel: the
// autobind reservation and the pod tracker. Pods that exist already go into
// the first policy as pending; their lookups start after it (begin).
func (d *Daemon) startHost() (err error) {
	if d.cfg.ReserveState != "none" {
		d.reserver = autobind.New(d.cfg.ReserveState)
	}
	if d.cfg.CRISocket == "none" {
		return nil
	}
	if d.pods, err = newPodTracker(d); err != nil {
		return err
	}
	d.onShutdown(d.pods.close)
	d.metrics.reg.MustRegister(d.pods.collectors()...)
	d.pods.scan()
	return nil
}

// load creates the loader, applies the first policy and attaches.
func (d *Daemon) load(attach string, compiled *policy.Compiled, sel *EntriesState) (err error) {
	d.ld, err = loader.New(loader.Config{
		CgroupPath:    attach,
		PinPath:       d.cfg.PinPath,
		AllNetns:      d.cfg.AllNetns,
		UnitRoot:      d.cfg.Cgroup,
		EventInterval: d.cfg.EventInterval,
		Logf:          func(f string, a ...any) { d.log.Warnf(f, a...) },
	})
	if err != nil {
		return err
	}
	// The tracepoints first: from then on every new cgroup inherits its
	// parent's membership in the kernel, so none created while Apply writes
	// memberships is missed. Their events wait in the ring for the reader.
	if err := d.ld.WatchCgroups(); err != nil {
		return err
	}
	d.mu.Lock()
	res, err := d.apply(compiled)
	d.mu.Unlock()
	if err != nil {
		return err
	}
	d.logApplied(compiled, sel, res)
	if err := d.ld.Attach(); err != nil {
		return err
	}
	d.attached = true
	d.log.WithFields(logrus.Fields{
		"cgroup": d.cfg.Cgroup, "mode": string(d.cfg.Mode), "pin_path": d.cfg.PinPath,
		"took_over": d.ld.TookOver(), "all_netns": d.cfg.AllNetns,
	}).Info("bind programs attached")
	return nil
}

func (d *Daemon) onShutdown(f func()) { d.cleanup = append(d.cleanup, f) }

// serve reloads and checks the attachment until ctx ends or a stop signal.
func (d *Daemon) serve(ctx context.Context, sigs <-chan os.Signal) error {
	check := time.NewTicker(d.cfg.CheckInterval)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				d.Reload("SIGHUP")
				continue
			}
			d.log.WithField("signal", s.String()).Info("stopping")
			return nil
		case why := <-d.reload:
			d.Reload(why)
		case <-check.C:
			d.selfCheck()
		}
	}
}

// shutdown stops the readers without draining the ring, undoes what start
// did, and then detaches or leaves enforcement to the pins. Its time does
// not depend on the event rate: the readers return after at most one more
// record each.
func (d *Daemon) shutdown() error {
	close(d.stopping)
	if d.ld != nil {
		if err := d.ld.StopReaders(); err != nil {
			d.log.WithError(err).Warn("stop event readers")
		}
	}
	d.readers.Wait()
	if d.ld != nil {
		d.logUnread()
	}
	for i := len(d.cleanup) - 1; i >= 0; i-- {
		d.cleanup[i]()
	}
	if d.ld == nil {
		return nil
	}
	switch {
	case !d.attached:
		d.ld.Close()
		if d.cfg.PinPath != "" {
			d.log.WithField("pin_path", d.cfg.PinPath).Info("not started; whatever was pinned there before is left as it was")
		}
	case !d.cfg.KeepOnExit:
		d.releasePorts()
		if err := d.ld.Detach(); err != nil {
			return fmt.Errorf("detach: %w", err)
		}
		d.log.Info("detached: bind programs and pins removed")
	default:
		d.ld.Close()
		if d.cfg.PinPath != "" {
			d.log.WithField("pin_path", d.cfg.PinPath).Info("exiting; pinned programs keep enforcing the last policy")
		}
	}
	return nil
}

// logUnread says how many events were left in the ring at shutdown: the
// next daemon reads them when the ring is pinned and stays, otherwise they
// are lost and counted as dropped here.
func (d *Daemon) logUnread() {
	n := d.ld.EventsLeft()
	if n == 0 {
		return
	}
	f := d.log.WithField("events", n)
	if d.attached && d.cfg.KeepOnExit && d.cfg.PinPath != "" {
		f.Info("stopped reading events; those left in the pinned ring are logged by the next daemon, without rule")
		return
	}
	f.WithField("dropped", n).Warn("stopped reading events; those left in the ring are dropped")
}
