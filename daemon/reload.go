package daemon

import (
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// compile loads and compiles the registry for the node's labels, and says
// which entries the labels select and which they do not.
func (d *Daemon) compile() (*policy.Compiled, *EntriesState, error) {
	c, reg, err := policy.LoadAndCompile(d.cfg.NodeLabels, d.cfg.Registry...)
	if err == nil {
		return c, selectEntries(reg, d.cfg.NodeLabels), nil
	}
	var list policy.ErrorList
	if errors.As(err, &list) {
		return nil, nil, err // every line says FILE:LINE:COL already
	}
	return nil, nil, fmt.Errorf("registry %s: %w", strings.Join(d.cfg.Registry, " "), err)
}

// Reload recompiles the registry and swaps the policy. A registry that does
// not load, validate or compile changes nothing in the kernel.
//
// The Node's labels, when known, are what the policy is compiled for: a
// label update whose policy was rejected (nodeChanged) is applied by the
// first reload that succeeds, say once the registry is fixed.
func (d *Daemon) Reload(why string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	log := d.log.WithField("trigger", why)
	next := d.nodeView()
	if d.node.node != nil {
		next.labels, next.mode, next.src = d.resolve(d.node.node.Labels)
	}
	prev, res, err := d.swapPolicy(log, next)
	if err != nil {
		log.WithField("generation", d.ld.Generation()).WithError(err).
			Error("reload rejected; the previous policy stays in force")
		return
	}
	if !maps.Equal(prev.labels, next.labels) || prev.mode != next.mode {
		d.nodeApplied(log, prev, res.Generation)
	}
	d.publishNode()
}

// nodeView is what a policy is compiled for: the node's labels, and the
// mode with where it came from.
type nodeView struct {
	labels map[string]string
	mode   policy.Mode
	src    string
}

func (d *Daemon) nodeView() nodeView {
	return nodeView{d.cfg.NodeLabels, d.cfg.Mode, d.node.modeSource}
}

// swapPolicy compiles the registry for next and puts it in force, as a
// reload or a label update does. On failure the failure is counted and
// recorded, and d.cfg keeps the previous labels and mode. It returns them.
func (d *Daemon) swapPolicy(log *logrus.Entry, next nodeView) (prev nodeView, res *loader.ApplyResult, err error) {
	prev = d.nodeView()
	d.cfg.NodeLabels, d.cfg.Mode, d.node.modeSource = next.labels, next.mode, next.src
	c, sel, err := d.compile()
	if err == nil {
		res, err = d.apply(c)
	}
	if err != nil {
		d.cfg.NodeLabels, d.cfg.Mode, d.node.modeSource = prev.labels, prev.mode, prev.src
		d.metrics.reloads.WithLabelValues("failed").Inc()
		if rerr := d.ld.RecordFailure(err); rerr != nil {
			log.WithError(rerr).Error("record failed reload")
		}
		return prev, nil, err
	}
	d.metrics.reloads.WithLabelValues("ok").Inc()
	d.logApplied(c, sel, res)
	return prev, res, nil
}

// logApplied records the entries a policy now in force selected, for the
// state file, and logs it (apply registered its origins).
func (d *Daemon) logApplied(c *policy.Compiled, sel *EntriesState, res *loader.ApplyResult) {
	d.node.entries = sel
	d.reservePorts(c, d.applyOptions().Mode)
	d.metrics.applied(c, res, d.applyOptions().Mode)
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

// apply puts c in force. The origins of its rules are known before the
// switch: the event reader labels the new policy's first events by them
// while Apply still settles.
func (d *Daemon) apply(c *policy.Compiled) (*loader.ApplyResult, error) {
	d.origins.set(d.ld.NextGeneration(), c.Origins)
	return d.ld.Apply(c, d.applyOptions(), d.sources())
}

// applyOptions are the node-wide switches of the policy.
func (d *Daemon) applyOptions() loader.ApplyOptions {
	return loader.ApplyOptions{Mode: d.cfg.Mode, PodPorts: d.cfg.PodPorts}
}

// sources are where the loader resolves owners.
func (d *Daemon) sources() loader.Sources {
	src := loader.Sources{Cgroups: d.cg}
	if d.pods != nil {
		src.Pods = d.pods
	}
	return src
}
