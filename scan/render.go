package scan

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/bindguard/bindguard/policy"
)

// Reasons is the order violations are counted in.
// (string conversions: they hold whether policy names reasons as strings or
// as a string type.)
var Reasons = []string{string(policy.ReasonUndeclared), string(policy.ReasonOwner), string(policy.ReasonAddress),
	string(policy.ReasonRemoved), ReasonAutobind}

// Report is one scan as `bindguard scan` prints it.
type Report struct {
	Mode     policy.Mode
	Listing  Listing
	Findings []Finding
	Summary  Summary
}

// PathLine says where the sockets came from, for the table's first line.
func (r Report) PathLine() string {
	if r.Listing.Path == PathIterators {
		return "sockets from: BPF socket iterators (each socket's own cgroup; explicit and kernel-chosen ports told apart)"
	}
	return "sockets from: /proc/net (" + r.Listing.Why + "): the holder's cgroup is judged, every port as an explicit bind, TCP sockets bound but not listening are not seen"
}

// reportJSON is the JSON form of a scan:
//
//	{"mode": "enforce", "path": "iterators", "path_reason": "",
//	 "sockets": [
//	  {"protocol": "tcp", "family": 4, "address": "0.0.0.0", "port": 22, "state": "listen",
//	   "bound": "explicit", "pid": 812, "comm": "sshd", "uid": 0, "cgroup_id": 4242,
//	   "cgroup": "/system.slice/ssh.service", "unit": "ssh.service",
//	   "process_cgroup": "/system.slice/ssh.service", "netns_cookie": 1, "inode": 1060,
//	   "verdict": "allow", "reason": "", "rule": "reg.yaml:4", "process": "sshd"}],
//	 "summary": {"sockets": 1, "allowed": 1, "ephemeral": 0, "audited": 0, "denied": 0,
//	   "violations": {"undeclared": 0, "owner": 0, "address": 0, "removed": 0, "autobind": 0}}}
//
// path is "iterators" or "procfs" (path_reason then says why). bound is
// explicit, kernel or unknown (procfs). cgroup is the socket's own cgroup,
// the one judged (from procfs: the holder's); process_cgroup the holder's
// now. verdict is allow, audit, deny or ephemeral; reason is "" or one of
// the violation reasons, "autobind" for a kernel-chosen port the registry
// restricts, which policy_reason then names. rule and process are omitted
// when no rule applies.
type reportJSON struct {
	Mode       string       `json:"mode"`
	Path       string       `json:"path"`
	PathReason string       `json:"path_reason"`
	Sockets    []socketJSON `json:"sockets"`
	Summary    summaryJSON  `json:"summary"`
}

type socketJSON struct {
	Protocol      string `json:"protocol"`
	Family        int    `json:"family"`
	Address       string `json:"address"`
	Port          uint16 `json:"port"`
	State         string `json:"state"`
	Bound         string `json:"bound"`
	PID           int    `json:"pid"`
	Comm          string `json:"comm"`
	UID           uint32 `json:"uid"`
	CgroupID      uint64 `json:"cgroup_id"`
	Cgroup        string `json:"cgroup"`
	Unit          string `json:"unit"`
	ProcessCgroup string `json:"process_cgroup"`
	NetnsCookie   uint64 `json:"netns_cookie"`
	Inode         uint64 `json:"inode"`
	Verdict       string `json:"verdict"`
	Reason        string `json:"reason"`
	PolicyReason  string `json:"policy_reason,omitempty"`
	Rule          string `json:"rule,omitempty"`
	Process       string `json:"process,omitempty"`
}

type summaryJSON struct {
	Sockets    int            `json:"sockets"`
	Allowed    int            `json:"allowed"`
	Ephemeral  int            `json:"ephemeral"`
	Audited    int            `json:"audited"`
	Denied     int            `json:"denied"`
	Violations map[string]int `json:"violations"`
}

// WriteJSON writes the report as JSON.
func (r Report) WriteJSON(w io.Writer) error {
	sum := r.Summary
	out := reportJSON{Mode: string(r.Mode), Path: r.Listing.Path, PathReason: r.Listing.Why,
		Sockets: make([]socketJSON, len(r.Findings)), Summary: summaryJSON{Sockets: sum.Sockets,
			Allowed: sum.Allowed, Ephemeral: sum.Ephemeral, Audited: sum.Audited, Denied: sum.Denied,
			Violations: map[string]int{}}}
	for _, reason := range Reasons {
		out.Summary.Violations[reason] = sum.Violations[reason]
	}
	for i, f := range r.Findings {
		s := socketJSON{Protocol: f.Protocol.String(), Family: f.Family, Address: f.Address.String(), Port: f.Port,
			State: f.State, Bound: f.Bound.String(), PID: f.PID, Comm: f.Comm, UID: f.UID, CgroupID: f.CgroupID,
			Cgroup: f.Cgroup, Unit: f.Unit, ProcessCgroup: f.ProcCgroup, NetnsCookie: f.NetnsCookie,
			Inode: f.Inode, Verdict: f.Verdict, Reason: f.Reason}
		if f.Reason == ReasonAutobind {
			s.PolicyReason = string(f.Decision.Reason)
		}
		if rule := f.Decision.Rule; rule != nil {
			s.Rule, s.Process = rule.Pos.FileLine(), rule.Process
		}
		out.Sockets[i] = s
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// WriteTable writes the report as a table: the path line, one row per
// socket, and a summary line.
func (r Report) WriteTable(w io.Writer) error {
	fmt.Fprintln(w, r.PathLine())
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTO\tADDRESS\tPORT\tSTATE\tBOUND\tPID\tCOMM\tUID\tCGROUP\tUNIT\tVERDICT\tREASON\tRULE\tPROCESS")
	for _, f := range r.Findings {
		rule, process := "-", "-"
		if r := f.Decision.Rule; r != nil {
			rule, process = r.Pos.FileLine(), r.Process
		}
		reason := f.Reason
		if reason == ReasonAutobind {
			reason += "(" + string(f.Decision.Reason) + ")"
		}
		proto := f.Protocol.String()
		if f.Family == 6 {
			proto += "6"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", proto, f.Address, f.Port,
			f.State, f.Bound, f.PID, dash(f.Comm), f.UID, cgroupColumn(f.Socket), dash(f.Unit), f.Verdict,
			dash(reason), rule, process)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, r.Summary.Line())
	return err
}

// cgroupColumn shows the socket's cgroup, and the holder's when it differs.
func cgroupColumn(s Socket) string {
	cg := s.Cgroup
	if cg == "" && s.CgroupID != 0 {
		cg = "id:" + strconv.FormatUint(s.CgroupID, 10) + "(removed)"
	}
	if s.ProcCgroup != "" && s.ProcCgroup != s.Cgroup && s.CgroupID != 0 {
		return dash(cg) + " (process in " + s.ProcCgroup + ")"
	}
	return dash(cg)
}

// Line is the summary line of the table.
func (s Summary) Line() string {
	var reasons []string
	for _, r := range Reasons {
		reasons = append(reasons, r+" "+strconv.Itoa(s.Violations[r]))
	}
	return fmt.Sprintf("%s: %d allowed, %d ephemeral, %s (%d denied, %d audited): %s",
		plural(s.Sockets, "socket"), s.Allowed, s.Ephemeral, plural(s.Audited+s.Denied, "violation"),
		s.Denied, s.Audited, strings.Join(reasons, ", "))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}
