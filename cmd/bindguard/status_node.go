package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"slices"
	"strings"

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

// printNodeState prints the mode's and the labels' sources as tab-separated
// lines for the status table.
func printNodeState(w io.Writer, s *daemon.NodeState) {
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
}
