package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

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
	ReadyFile  string
	AllNetns   bool
	KeepOnExit bool
	// EventInterval rate-limits events per (cgroup, port, protocol, reason).
	EventInterval time.Duration
	MetricsAddr   string
	// Watch reloads when a registry file or directory changes.
	Watch bool
	// Node, with a name, takes labels and the mode from the Node object (node.go).
	Node NodeConfig
}

// Daemon enforces one registry until its context ends.
type Daemon struct {
	cfg Config
	log logrus.FieldLogger
	cg  *cgroups.FS
	ld  *loader.Loader

	mu      sync.Mutex // serialises reloads
	metrics *metrics
	node    *nodeState
}

// Run loads the registry, puts the policy in force, attaches, and then logs
// events and reloads on SIGHUP or registry changes until ctx ends or SIGINT/
// SIGTERM arrives. On exit it detaches and removes its pins, unless
// KeepOnExit, in which case enforcement stays.
func Run(ctx context.Context, cfg Config, log logrus.FieldLogger) (err error) {
	if cfg.Mode == "" {
		cfg.Mode = policy.ModeAudit
	}
	if cfg.Cgroup == "" {
		cfg.Cgroup = "/"
	}
	d := &Daemon{cfg: cfg, log: log, metrics: newMetrics()}
	// Before anything is attached: a signal during start-up must reach the
	// clean-up below, not the default handler that would leave pins behind.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if err := d.initNode(ctx, sigs); err != nil {
		return ignoreStopped(err)
	}
	compiled, err := d.compile()
	if err != nil {
		return err
	}
	if d.cg, err = cgroups.Open(""); err != nil {
		return err
	}
	defer d.cg.Close()
	attach := d.cg.Abs(cfg.Cgroup)
	if st, err := os.Stat(attach); err != nil || !st.IsDir() {
		return fmt.Errorf("attach cgroup %s: no such cgroup below %s", cfg.Cgroup, d.cg.Root)
	}

	d.ld, err = loader.New(loader.Config{
		CgroupPath:    attach,
		PinPath:       cfg.PinPath,
		AllNetns:      cfg.AllNetns,
		EventInterval: cfg.EventInterval,
		Logf:          func(f string, a ...any) { log.Warnf(f, a...) },
	})
	if err != nil {
		return err
	}
	detach := true
	defer func() {
		if detach && !cfg.KeepOnExit {
			if derr := d.ld.Detach(); derr != nil {
				log.WithError(derr).Error("detach")
			} else {
				log.Info("detached: bind programs and pins removed")
			}
			return
		}
		d.ld.Close()
		if cfg.PinPath != "" {
			log.WithField("pin_path", cfg.PinPath).Info("exiting; pinned programs keep enforcing the last policy")
		}
	}()

	res, err := d.ld.Apply(compiled, d.cfg.Mode, d.cg)
	if err != nil {
		return err
	}
	d.logApplied(compiled, res)
	if err := d.ld.Attach(); err != nil {
		return err
	}
	log.WithFields(logrus.Fields{
		"cgroup": cfg.Cgroup, "mode": string(d.cfg.Mode), "pin_path": cfg.PinPath,
		"took_over": d.ld.TookOver(), "all_netns": cfg.AllNetns,
	}).Info("bind programs attached")
	if cfg.KeepOnExit {
		// From here on a failure must not tear enforcement down either.
		detach = false
	}

	if err := d.ld.EventReader(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		// The readers log what is pending, then return.
		cancel()
		d.ld.FlushEvents()
		wg.Wait()
	}()

	if cfg.MetricsAddr != "" {
		stop, err := d.serveMetrics(cfg.MetricsAddr)
		if err != nil {
			return err
		}
		defer stop()
	}

	wg.Add(1)
	go func() {
		defer wg.Done()
		d.readEvents()
	}()
	if err := d.ld.WatchCgroups(); err != nil {
		log.WithError(err).Warn("owners whose cgroups appear later are resolved only on reload")
	} else {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d.followCgroups()
		}()
		// A cgroup created between the policy's resolution and the
		// tracepoint's attach would otherwise be missed.
		d.mu.Lock()
		_, err := d.ld.ResolveOwners(d.cg)
		d.mu.Unlock()
		if err != nil {
			return err
		}
	}

	defer d.followNode(ctx)()

	reload := make(chan string, 1)
	if cfg.Watch {
		stop, err := watch(cfg.Registry, reload, log)
		if err != nil {
			log.WithError(err).Warn("registry changes will not be picked up automatically; reload with SIGHUP")
		} else {
			defer stop()
		}
	}
	if cfg.ReadyFile != "" {
		if err := writeReady(cfg.ReadyFile, d.ld.Generation()); err != nil {
			return err
		}
		defer os.Remove(cfg.ReadyFile)
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				d.Reload("SIGHUP")
				continue
			}
			log.WithField("signal", s.String()).Info("stopping")
			return nil
		case why := <-reload:
			d.Reload(why)
		}
	}
}

func (d *Daemon) compile() (*policy.Compiled, error) {
	reg, err := policy.Load(d.cfg.Registry...)
	if err == nil {
		var c *policy.Compiled
		if c, err = policy.Compile(reg, d.cfg.NodeLabels); err == nil {
			return c, nil
		}
	}
	var list policy.ErrorList
	if errors.As(err, &list) {
		return nil, err // every line says FILE:LINE:COL already
	}
	return nil, fmt.Errorf("registry %s: %w", strings.Join(d.cfg.Registry, " "), err)
}

// Reload recompiles the registry and swaps the policy. A registry that does
// not load, validate or compile changes nothing in the kernel.
func (d *Daemon) Reload(why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	log := d.log.WithField("trigger", why)
	c, err := d.compile()
	if err == nil {
		var res *loader.ApplyResult
		if res, err = d.ld.Apply(c, d.cfg.Mode, d.cg); err == nil {
			d.metrics.reloads.WithLabelValues("ok").Inc()
			d.logApplied(c, res)
			return
		}
	}
	d.metrics.reloads.WithLabelValues("failed").Inc()
	if rerr := d.ld.RecordFailure(err); rerr != nil {
		log.WithError(rerr).Error("record failed reload")
	}
	log.WithField("generation", d.ld.Generation()).WithError(err).
		Error("reload rejected; the previous policy stays in force")
}

func (d *Daemon) logApplied(c *policy.Compiled, res *loader.ApplyResult) {
	d.metrics.entries.Set(float64(res.Entries))
	d.metrics.generation.Set(float64(res.Generation))
	d.log.WithFields(logrus.Fields{
		"generation": res.Generation, "rules": res.Rules, "entries": res.Entries,
		"digest": c.Digest, "mode": string(d.cfg.Mode),
		"fill_ms": float64(res.Fill.Microseconds()) / 1000, "swap_us": res.Swap.Microseconds(),
	}).Info("policy in force")
	for _, u := range res.Unresolved {
		d.log.WithFields(logrus.Fields{"port": u.Port, "protocol": u.Protocol.String(), "owner": u.Owner}).
			WithError(u.Err).Warn("owner not resolved: its cgroup does not exist; the port stays restricted to the other owners")
	}
}

// writeReady writes the ready file atomically.
func writeReady(path string, gen uint32) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(fmt.Sprintf("pid=%d generation=%d\n", os.Getpid(), gen)), 0o644); err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("ready file: %w", err)
	}
	return nil
}

// readEvents logs violation events until the loader's readers are flushed
// on the way out.
func (d *Daemon) readEvents() {
	for {
		ev, err := d.ld.ReadEvent()
		if err != nil {
			if loader.Stopped(err) {
				return
			}
			d.log.WithError(err).Error("read event")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		d.logEvent(ev)
	}
}

// followCgroups puts owners in force as their cgroups appear, and drops them
// as they go. When events were lost, it re-resolves every owner.
func (d *Daemon) followCgroups() {
	var lost uint64
	for {
		ev, err := d.ld.ReadCgroupEvent()
		if err != nil {
			if loader.Stopped(err) {
				return
			}
			d.log.WithError(err).Error("read cgroup event")
			time.Sleep(100 * time.Millisecond)
			continue
		}
		switch ev.Op {
		case loader.CgroupMkdir:
			rel := ev.Path
			if rel == "" {
				var err error
				if rel, err = d.cgroupPath(ev.ID); err != nil {
					continue // gone already
				}
			}
			d.mu.Lock()
			n, err := d.ld.CgroupCreated(ev.ID, rel)
			d.mu.Unlock()
			if err != nil {
				d.log.WithError(err).WithField("cgroup", rel).Error("put owner in force")
			} else if n > 0 {
				d.metrics.ownersResolved.Inc()
				d.log.WithFields(logrus.Fields{"cgroup": rel, "cgroup_id": ev.ID, "rules": n}).Info("owner cgroup appeared: in force")
			}
		case loader.CgroupRmdir:
			d.mu.Lock()
			n := d.ld.CgroupRemoved(ev.ID)
			d.mu.Unlock()
			if n > 0 {
				d.log.WithFields(logrus.Fields{"cgroup_id": ev.ID, "entries": n}).Info("owner cgroup removed")
			}
		}
		if n, err := d.ld.CgroupEventsLost(); err == nil && n != lost {
			d.log.WithField("lost", n-lost).Warn("cgroup events were lost; re-resolving every owner")
			lost = n
			d.mu.Lock()
			_, err := d.ld.ResolveOwners(d.cg)
			d.mu.Unlock()
			if err != nil {
				d.log.WithError(err).Error("re-resolve owners")
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
		if u := cgroups.Unit(p); u != "" {
			f["unit"] = u
		}
		if c := cgroups.Container(p); c != "" {
			f["container"] = c
		}
	} else {
		f["cgroup"] = ""
	}
	if ev.Origin != nil {
		f["rule"] = ev.Origin.Pos.FileLine()
		f["process"] = ev.Origin.Process
	}
	if ev.Suppressed > 0 {
		f["suppressed"] = ev.Suppressed
	}
	msg := "bind audited: would be denied in enforce mode"
	if ev.Denied {
		msg = "bind denied"
	}
	d.log.WithFields(f).WithTime(ev.Time).Warn(msg)
}
