package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/bindguard/bindguard/daemon"
)

// readNodeState reads the daemon's node state file; a missing file (a daemon
// without --node-name, or none running) is no error.
func readNodeState(path string) (*daemon.NodeState, error) {
	if path == "" {
		return nil, nil
	}
	s, err := daemon.ReadNodeState(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return s, err
}

// printNodeState prints the mode's and the labels' sources, the runtime
// connection and the entries selected as tab-separated lines for the status
// table; with entries, the entries themselves too.
func printNodeState(w io.Writer, s *daemon.NodeState, entries bool) {
	if s.NodeName != "" {
		api := "reachable"
		if !s.APIReachable {
			api = "UNREACHABLE (the policy in force stays)"
		}
		known := "labels read from the API server"
		if !s.NodeKnown {
			known = "labels NOT yet read from the API server: --node-label flags only"
		}
		fmt.Fprintf(w, "node\t%s (resourceVersion %s); API server %s; %s\n", s.NodeName, s.ResourceVersion, api, known)
	}
	fmt.Fprintf(w, "mode source\t%s (%s)\n", s.Mode, s.ModeSource)
	keys := slices.Sorted(maps.Keys(s.Labels))
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %s=%s\t%s\n", k, s.Labels[k].Value, s.Labels[k].Source)
	}
	fmt.Fprintf(w, "node labels\t%d in force (source)\n%s", len(keys), b.String())
	if s.Runtime != nil {
		fmt.Fprintf(w, "runtime\t%s\n", runtimeLine(s.Runtime))
	}
	if s.Entries != nil {
		printEntries(w, s.Entries, entries)
	}
}

// runtimeLine is the status table's runtime line: the connection, the pods
// known and the pod cgroups still pending.
func runtimeLine(r *daemon.RuntimeState) string {
	conn := "connected to " + strings.TrimSpace(r.RuntimeName+" "+r.RuntimeVersion)
	if !r.Connected {
		conn = "NOT CONNECTED (pod identities known are kept; new pods stay pending)"
		if r.LastError != "" {
			conn += ": " + firstLine(r.LastError)
		}
	}
	socket := r.Socket
	if socket == "" {
		socket = "no socket found"
	}
	since := ""
	if !r.Since.IsZero() {
		since = " since " + r.Since.Format(time.RFC3339)
	}
	return fmt.Sprintf("%s (%s)%s; %d pods known, %d pod cgroups pending", conn, socket, since, r.PodsKnown, r.PodCgroupsPending)
}

// printEntries prints how many entries this node selected and did not and,
// with list, each of them.
func printEntries(w io.Writer, e *daemon.EntriesState, list bool) {
	fmt.Fprintf(w, "entries\t%d selected on this node, %d not selected\n", len(e.Selected), len(e.NotSelected))
	if !list {
		return
	}
	for _, r := range e.Selected {
		fmt.Fprintf(w, "  selected\t%s\n", entryLine(r))
	}
	for _, r := range e.NotSelected {
		fmt.Fprintf(w, "  not selected\t%s\n", entryLine(r))
	}
}

func entryLine(r daemon.EntryRef) string {
	s := fmt.Sprintf("%s %s port %s", r.Pos, r.Process, r.Ports)
	if r.Removed {
		s += " (removed)"
	}
	if r.Selector != "" {
		s += " nodeSelector " + r.Selector
	}
	return s
}
