package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/daemon"
	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

func init() {
	register("status", "show the policy in force and the counters, read from the pins", runStatus)
}

type statusJSON struct {
	PinPath       string            `json:"pinPath"`
	Cgroup        string            `json:"cgroup"`
	CgroupID      uint64            `json:"cgroupId"`
	Mode          string            `json:"mode"`
	AllNetns      bool              `json:"allNetns"`
	Generation    uint32            `json:"generation"`
	Digest        string            `json:"digest"`
	Applied       time.Time         `json:"applied"`
	Started       time.Time         `json:"started"`
	Entries       uint32            `json:"entries"`
	Rules         uint32            `json:"rules"`
	ReloadsOK     uint64            `json:"reloadsOk"`
	ReloadsFailed uint64            `json:"reloadsFailed"`
	LastFailure   *time.Time        `json:"lastFailure,omitempty"`
	LastError     string            `json:"lastError,omitempty"`
	Checks        uint64            `json:"checks"`
	Allowed       uint64            `json:"allowed"`
	Audited       map[string]uint64 `json:"audited"`
	Denied        map[string]uint64 `json:"denied"`
	EventsDropped uint64            `json:"eventsDropped"`
	Suppressed    uint64            `json:"eventsSuppressed"`
	// OtherProto counts binds of protocols that are not judged (UDP-Lite,
	// SCTP, raw sockets).
	OtherProto uint64 `json:"otherProto"`
	// Attached is what the kernel says: both pinned links attached to the
	// cgroup. When false, binds are not judged, whatever the rest says.
	Attached bool              `json:"attached"`
	Links    []linkStatus      `json:"links"`
	Node     *daemon.NodeState `json:"node,omitempty"`
}

type linkStatus struct {
	Hook     string `json:"hook"`
	Attached bool   `json:"attached"`
	Problem  string `json:"problem,omitempty"`
}

type statusFlags struct {
	pinFlags
	output    outputFlag
	nodeState string
	entries   bool
}

func (f *statusFlags) register(fs *pflag.FlagSet) {
	f.pinFlags.register(fs)
	f.output.register(fs, "text", "text or json")
	fs.StringVar(&f.nodeState, "node-state-file", defaultNodeStateFile, "the node state file that run --node-state-file writes")
	fs.BoolVar(&f.entries, "entries", false, "list the registry entries this node selected and those it did not (-o json always has them)")
}

func runStatus(args []string, stdout, stderr io.Writer) error {
	var f statusFlags
	if done, err := parseNoOperands("status", &f, args, stdout, stderr); done {
		return err
	}
	if err := f.output.check("status"); err != nil {
		return err
	}
	pinPath := &f.pinPath
	st, err := loader.ReadStatus(*pinPath)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	s := statusJSON{
		PinPath: *pinPath, CgroupID: st.AttachCgroupID, Mode: policy.ModeAudit.String(), AllNetns: st.AllNetns,
		Generation: st.Generation, Digest: st.Digest, Applied: st.Applied, Started: st.Started,
		Entries: st.Entries, Rules: st.Rules, ReloadsOK: st.ReloadsOK, ReloadsFailed: st.ReloadsFailed,
		LastError: st.LastError, Checks: st.Counters.Checks, Allowed: st.Counters.Allowed,
		Audited: map[string]uint64{}, Denied: map[string]uint64{},
		EventsDropped: st.Counters.EventsDropped, Suppressed: st.Counters.Suppressed,
		OtherProto: st.Counters.OtherProto,
	}
	if st.Enforce {
		s.Mode = policy.ModeEnforce.String()
	}
	s.Attached = st.Attached()
	for _, l := range st.Links {
		s.Links = append(s.Links, linkStatus{Hook: l.Hook, Attached: l.Attached, Problem: l.Problem})
	}
	if !st.LastFailure.IsZero() {
		s.LastFailure = &st.LastFailure
	}
	for _, r := range loader.Reasons {
		s.Audited[r.String()] = st.Counters.Audited[r]
		s.Denied[r.String()] = st.Counters.Denied[r]
	}
	if fsys, err := cgroups.Open(""); err == nil {
		if p, err := fsys.Path(st.AttachCgroupID); err == nil {
			s.Cgroup = p
		}
		fsys.Close()
	}
	if s.Node, err = readNodeState(f.nodeState); err != nil {
		return fmt.Errorf("status: %w", err)
	}
	if f.output.json() {
		err = writeJSON(stdout, s)
	} else {
		err = printStatus(stdout, s, f.entries)
	}
	if err == nil && !s.Attached {
		return &exitError{code: 1, msg: "status: the bind programs are not attached: binds are not judged"}
	}
	return err
}

func printStatus(stdout io.Writer, s statusJSON, entries bool) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "attached to\t%s (cgroup id %d)\n", s.Cgroup, s.CgroupID)
	for _, l := range s.Links {
		if l.Attached {
			fmt.Fprintf(tw, "  %s\tattached\n", l.Hook)
		} else {
			fmt.Fprintf(tw, "  %s\tNOT ATTACHED: %s\n", l.Hook, l.Problem)
		}
	}
	fmt.Fprintf(tw, "mode\t%s\n", s.Mode)
	if s.Node != nil {
		printNodeState(tw, s.Node, entries)
	}
	fmt.Fprintf(tw, "policy\tgeneration %d, %d rules, %d map entries, applied %s\n", s.Generation, s.Rules, s.Entries, s.Applied.Format(time.RFC3339))
	fmt.Fprintf(tw, "registry digest\t%s\n", s.Digest)
	fmt.Fprintf(tw, "reloads\t%d ok, %d failed\n", s.ReloadsOK, s.ReloadsFailed)
	if s.LastFailure != nil {
		fmt.Fprintf(tw, "last failed reload\t%s: %s\n", s.LastFailure.Format(time.RFC3339), firstLine(s.LastError))
	}
	fmt.Fprintf(tw, "binds checked\t%d (allowed %d)\n", s.Checks, s.Allowed)
	fmt.Fprintf(tw, "not judged\t%d binds of other protocols than tcp, udp and mptcp\n", s.OtherProto)
	for _, r := range loader.Reasons {
		fmt.Fprintf(tw, "  %s\taudited %d, denied %d\n", r, s.Audited[r.String()], s.Denied[r.String()])
	}
	fmt.Fprintf(tw, "events\t%d dropped, %d suppressed by rate limiting\n", s.EventsDropped, s.Suppressed)
	return tw.Flush()
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i] + " …"
		}
	}
	return s
}
