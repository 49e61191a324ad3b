package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"time"

	"github.com/bindguard/bindguard/policy"
)

// RuntimeState is the container runtime connection and the pods known, in
// the state file while the pod tracker runs.
type RuntimeState struct {
	Connected      bool   `json:"connected"`
	Socket         string `json:"socket,omitempty"`
	RuntimeName    string `json:"runtimeName,omitempty"`
	RuntimeVersion string `json:"runtimeVersion,omitempty"`
	PodsKnown      int    `json:"podsKnown"`
	// PodCgroupsPending are pod and container cgroups whose identity is not
	// known yet: their binds to pod-owned ports are judged as pod-pending.
	PodCgroupsPending int `json:"podCgroupsPending"`
	// LastError is why the runtime is not connected; "" while it is.
	LastError string `json:"lastError,omitempty"`
	// Since is when Connected last changed.
	Since time.Time `json:"since"`
}

// EntriesState is which registry entries the policy in force selected on
// this node and which it did not, as of its last successful apply.
type EntriesState struct {
	Selected    []EntryRef `json:"selected"`
	NotSelected []EntryRef `json:"notSelected"`
}

// EntryRef names a registry entry: where it is, its process and ports, and
// its node selector ("" for none, which selects every node).
type EntryRef struct {
	Pos      string `json:"pos"`
	Process  string `json:"process"`
	Ports    string `json:"ports"`
	Selector string `json:"selector,omitempty"`
	Removed  bool   `json:"removed,omitempty"`
}

// selectEntries splits a registry's entries (active, then removed) by
// whether their selector matches labels, as policy.Compile does.
func selectEntries(reg *policy.Registry, labels map[string]string) *EntriesState {
	s := &EntriesState{Selected: []EntryRef{}, NotSelected: []EntryRef{}}
	if reg == nil {
		return s
	}
	add := func(e *policy.Entry) {
		r := EntryRef{Pos: e.Pos.String(), Process: e.Process, Ports: e.Ports.String(), Selector: e.NodeSelector.String(), Removed: e.Removed}
		if e.Matches(labels) {
			s.Selected = append(s.Selected, r)
		} else {
			s.NotSelected = append(s.NotSelected, r)
		}
	}
	for i := range reg.Entries {
		add(&reg.Entries[i])
	}
	for i := range reg.Removed {
		add(&reg.Removed[i])
	}
	return s
}

// runtimeState reads the pod tracker; nil when pod identity is off. It takes
// only the tracker's and the CRI client's locks.
func (d *Daemon) runtimeState() *RuntimeState {
	if d.pods == nil {
		return nil
	}
	st := d.pods.status()
	rs := &RuntimeState{
		Connected: st.Connected, Socket: st.Socket, RuntimeName: st.RuntimeName, RuntimeVersion: st.RuntimeVersion,
		PodsKnown: st.PodsKnown, PodCgroupsPending: d.pods.pending(), LastError: st.LastError, Since: st.Since,
	}
	if d.node != nil && d.node.stopped {
		rs.Connected, rs.LastError, rs.Since = false, stoppedError, d.node.stoppedAt
	}
	return rs
}

// stoppedError is the runtime's state once the daemon has stopped: pinned
// programs may still enforce, but nothing follows the runtime any more.
const stoppedError = "bindguard stopped: pod identities are no longer followed"

// statePublishInterval bounds how often runtime changes rewrite the state
// file.
const statePublishInterval = time.Second

// followRuntime rewrites the state file when the runtime connection, the
// pods known or the pending pod cgroups change, at most once per
// statePublishInterval and never from the bind path. The returned function
// stops it and waits for it.
func (d *Daemon) followRuntime(ctx context.Context) (stop func()) {
	if d.pods == nil || d.cfg.Node.StateFile == "" {
		return func() {}
	}
	stopPublishing := goUntilStopped(ctx, d.publishRuntimeChanges)
	return func() {
		stopPublishing()
		d.mu.Lock()
		d.node.stopped, d.node.stoppedAt = true, time.Now()
		d.publishNode()
		d.mu.Unlock()
	}
}

// publishRuntimeChanges rewrites the state file when the runtime state
// changed, checking every statePublishInterval until ctx ends.
func (d *Daemon) publishRuntimeChanges(ctx context.Context) {
	tick := time.NewTicker(statePublishInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		d.mu.Lock()
		if rs := d.runtimeState(); d.node.runtime == nil || *rs != *d.node.runtime {
			d.publishNode()
		}
		d.mu.Unlock()
	}
}

// goUntilStopped runs run in a goroutine with a context of its own; the
// returned function cancels that context and waits for run to return.
func goUntilStopped(ctx context.Context, run func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		run(ctx)
	}()
	return func() { cancel(); <-done }
}

// ownFile reports whether name is a file the daemon itself writes while it
// runs: the state file and its temporary files, the ready file and the
// reservation state. The registry watch ignores them.
func (d *Daemon) ownFile(name string) bool {
	for _, f := range []string{d.cfg.Node.StateFile, d.cfg.ReadyFile, d.cfg.ReserveState} {
		if f == "" || f == "none" {
			continue
		}
		f = filepath.Clean(f)
		if name == f {
			return true
		}
		if filepath.Dir(name) == filepath.Dir(f) {
			base := filepath.Base(name)
			if strings.HasPrefix(base, "."+filepath.Base(f)+".") && strings.HasSuffix(base, ".tmp") {
				return true
			}
		}
	}
	return false
}
