package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// membershipTries is how many cgroups each half of membershipBench creates.
const (
	membershipTries      = 50
	membershipTriesQuick = 3
	// membershipWait bounds the wait for one late owner's membership: past
	// it, the owner is counted as not in force.
	membershipWait = 5 * time.Second
)

// membershipResult: when an owner's membership is in force after its
// cgroup's mkdir, for the two ways a cgroup becomes a member.
type membershipResult struct {
	Tries int `json:"tries"`
	// InheritedAllowed: of Tries new cgroups below an owner, how many had
	// their first bind allowed (a helper started into each right after its
	// mkdir: nothing ran there before it).
	InheritedAllowed int `json:"inherited_allowed"`
	// LateUs: for a cgroup the policy names that did not exist, from the
	// mkdir call to CgroupCreated's return having written it (the daemon's
	// path: the kernel's mkdir event, read by one goroutine), µs.
	LateUs dist `json:"late_us"`
	// LateWritten and LateAllowed: of Tries, how many times CgroupCreated
	// wrote the membership, and how many binds from the cgroup right after
	// were allowed.
	LateWritten int `json:"late_written"`
	LateAllowed int `json:"late_allowed"`
}

// membershipBench measures membershipResult below its own cgroup, with its
// own loader in enforce mode (a bind not allowed is refused).
func membershipBench(ctx context.Context, e *env, o *options, p ports, log io.Writer) (*membershipResult, error) {
	dir, err := e.mkdir("members")
	if err != nil {
		return nil, err
	}
	owner, err := e.mkdir("members/owner")
	if err != nil {
		return nil, err
	}
	late := filepath.Join(dir, "late")
	l, err := membershipLoader(e, dir, owner, late, p)
	if err != nil {
		return nil, err
	}
	res := &membershipResult{Tries: membershipTries}
	if o.quick {
		res.Tries = membershipTriesQuick
	}
	fmt.Fprintf(log, "bench: membership after mkdir: %d cgroups below an owner, %d late owners\n", res.Tries, res.Tries)
	if err := inheritedTries(ctx, owner, p, res); err != nil {
		return nil, err
	}
	w := watchMembers(l, e.rel(late))
	err = lateTries(ctx, w, late, p, res)
	return res, errors.Join(err, w.stop())
}

// membershipLoader loads a bindguard on dir whose policy has a port owned
// by owner (which exists) and one owned by late (which does not yet).
func membershipLoader(e *env, dir, owner, late string, p ports) (*loader.Loader, error) {
	c := &policy.Compiled{
		Origins: []policy.Origin{{Pos: policy.Pos{File: "bench.yaml", Line: 1}, Process: "bench"}},
		Rules: []policy.Rule{
			{Port: p.inherit, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{e.rel(owner)}}},
			{Port: p.late, Protocol: policy.TCP, Owners: policy.Owners{Cgroups: []string{e.rel(late)}}},
		},
	}
	l, err := loader.New(loader.Config{CgroupPath: dir, EventInterval: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("membership bindguard: %w", err)
	}
	e.onClose(l.Close)
	if err := l.WatchCgroups(); err != nil {
		return nil, fmt.Errorf("membership bindguard: %w", err)
	}
	res, err := l.Apply(c, loader.ApplyOptions{Mode: policy.ModeEnforce}, loader.Sources{Cgroups: e.cg})
	if err != nil {
		return nil, fmt.Errorf("membership bindguard: %w", err)
	}
	if len(res.Unresolved) != 1 {
		return nil, fmt.Errorf("membership bindguard: %d owners unresolved, want 1 (the late owner)", len(res.Unresolved))
	}
	if err := l.Attach(); err != nil {
		return nil, fmt.Errorf("membership bindguard: %w", err)
	}
	return l, nil
}

// inheritedTries creates cgroups below owner, one at a time, and binds once
// from each: the first bind anything makes there.
func inheritedTries(ctx context.Context, owner string, p ports, res *membershipResult) error {
	for i := 0; i < res.Tries; i++ {
		c := filepath.Join(owner, "c"+strconv.Itoa(i))
		if err := os.Mkdir(c, 0o755); err != nil {
			return fmt.Errorf("create cgroup: %w", err)
		}
		allowed, err := bindOnceAndRemove(ctx, c, p.inherit)
		if err != nil {
			return err
		}
		if allowed {
			res.InheritedAllowed++
		}
	}
	return nil
}

// lateTries creates the late owner's cgroup, waits for the watcher to put
// it in force, binds once from it, and removes it, Tries times.
func lateTries(ctx context.Context, w *memberWatcher, late string, p ports, res *membershipResult) error {
	var us []float64
	for i := 0; i < res.Tries; i++ {
		select { // a write that came after an earlier try gave up
		case <-w.wrote:
		default:
		}
		// From the call: the event leaves from inside mkdir, and the
		// write often ends before mkdir returns.
		made := time.Now()
		if err := os.Mkdir(late, 0o755); err != nil {
			return fmt.Errorf("create cgroup: %w", err)
		}
		select {
		case wr := <-w.wrote:
			if wr.err != nil {
				return wr.err
			}
			if wr.wrote {
				res.LateWritten++
				us = append(us, float64(wr.at.Sub(made).Nanoseconds())/1e3)
			}
		case err := <-w.failed:
			return err
		case <-time.After(membershipWait):
		case <-ctx.Done():
			return ctx.Err()
		}
		allowed, err := bindOnceAndRemove(ctx, late, p.late)
		if err != nil {
			return err
		}
		if allowed {
			res.LateAllowed++
		}
	}
	res.LateUs = summarize(us)
	return nil
}

// bindOnceAndRemove binds port once from a helper started into the cgroup
// dir, removes dir, and reports whether the bind was allowed.
func bindOnceAndRemove(ctx context.Context, dir string, port uint16) (bool, error) {
	out, err := helper(ctx, dir, helperOnce, "4", strconv.Itoa(int(port)))
	if err != nil {
		return false, err
	}
	if err := os.Remove(dir); err != nil {
		return false, fmt.Errorf("remove cgroup: %w", err)
	}
	return strings.TrimSpace(out) == onceAllowed, nil
}

// memberWatcher is the daemon's cgroup-event loop, alone: every mkdir goes
// to CgroupCreated, every rmdir to CgroupRemoved. The loader is used by
// this goroutine only until stop returns.
type memberWatcher struct {
	l      *loader.Loader
	rel    string
	wrote  chan lateWrite
	failed chan error
	done   chan struct{}
}

// lateWrite is what CgroupCreated did for the watched cgroup, and when.
type lateWrite struct {
	wrote bool
	err   error
	at    time.Time
}

func watchMembers(l *loader.Loader, rel string) *memberWatcher {
	w := &memberWatcher{l: l, rel: path.Clean(rel), wrote: make(chan lateWrite, 1),
		failed: make(chan error, 1), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *memberWatcher) run() {
	defer close(w.done)
	for {
		ev, err := w.l.ReadCgroupEvent()
		if err != nil {
			if !loader.Stopped(err) {
				w.failed <- err
			}
			return
		}
		switch ev.Op {
		case loader.CgroupMkdir:
			wrote, err := w.l.CgroupCreated(ev)
			at := time.Now()
			if ev.Path != "" && path.Clean(ev.Path) == w.rel {
				w.wrote <- lateWrite{wrote: wrote, err: err, at: at}
			}
		case loader.CgroupRmdir:
			w.l.CgroupRemoved(ev)
		}
	}
}

// stop ends the watcher and waits for it.
func (w *memberWatcher) stop() error {
	err := w.l.StopReaders()
	<-w.done
	return err
}
