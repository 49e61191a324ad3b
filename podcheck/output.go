package podcheck

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Document is the JSON form of a Report, one document for the whole check:
//
//	{"findings": [
//	  {"namespace": "openshift-etcd", "pod": "etcd-master-0", "node": "master-0",
//	   "hostNetwork": true, "container": "etcd", "containerKind": "container",
//	   "port": 2379, "protocol": "tcp", "verdict": "ok",
//	   "rule": "builtin:openshift/10-tcp.yaml:30", "process": "etcd"}],
//	 "summary": {"pods": 1, "hostNetworkPods": 1, "ports": 1, "ok": 1,
//	   "violations": {"undeclared": 0, "owner": 0, "removed": 0, "address": 0},
//	   "warnings": {"no-ports": 0, "unscheduled": 0, "unknown-node": 0, "sctp": 0}}}
//
// node is "" for an unscheduled pod. A no-ports finding has container,
// containerKind and protocol "" and port 0. rule and process are omitted
// when no registry entry judged the port; hostIP and detail when empty.
type Document struct {
	Findings []FindingJSON `json:"findings"`
	Summary  SummaryJSON   `json:"summary"`
}

// FindingJSON is one finding of a Document.
type FindingJSON struct {
	Namespace     string `json:"namespace"`
	Pod           string `json:"pod"`
	Node          string `json:"node"`
	HostNetwork   bool   `json:"hostNetwork"`
	Container     string `json:"container"`
	ContainerKind string `json:"containerKind"`
	Port          uint16 `json:"port"`
	Protocol      string `json:"protocol"`
	HostIP        string `json:"hostIP,omitempty"`
	Verdict       string `json:"verdict"`
	Rule          string `json:"rule,omitempty"`
	Process       string `json:"process,omitempty"`
	Detail        string `json:"detail,omitempty"`
}

// SummaryJSON is the summary of a Document; every verdict has a count.
type SummaryJSON struct {
	Pods            int            `json:"pods"`
	HostNetworkPods int            `json:"hostNetworkPods"`
	Ports           int            `json:"ports"`
	OK              int            `json:"ok"`
	Violations      map[string]int `json:"violations"`
	Warnings        map[string]int `json:"warnings"`
}

// Document returns the report's JSON form.
func (r *Report) Document() Document {
	d := Document{Findings: make([]FindingJSON, len(r.Findings)), Summary: SummaryJSON{
		Pods: r.Summary.Pods, HostNetworkPods: r.Summary.HostNetwork, Ports: r.Summary.Ports, OK: r.Summary.OK,
		Violations: map[string]int{}, Warnings: map[string]int{},
	}}
	for _, v := range Violations {
		d.Summary.Violations[string(v)] = r.Summary.Verdicts[v]
	}
	for _, v := range Warnings {
		d.Summary.Warnings[string(v)] = r.Summary.Verdicts[v]
	}
	for i, f := range r.Findings {
		j := FindingJSON{
			Namespace: f.Namespace, Pod: f.Pod, Node: f.Node, HostNetwork: f.HostNetwork,
			Container: f.Container, ContainerKind: f.Kind, Port: f.Port, Protocol: f.Protocol,
			HostIP: f.HostIP, Verdict: string(f.Verdict), Detail: f.Detail,
		}
		if f.Rule != nil {
			j.Rule, j.Process = f.Rule.Pos.FileLine(), f.Rule.Process
		}
		d.Findings[i] = j
	}
	return d
}

// WriteJSON writes the report as one indented JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r.Document())
}

// WriteTable writes one line per finding and a summary line.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NAMESPACE\tPOD\tNODE\tCONTAINER\tPORT\tVERDICT\tRULE\tPROCESS\tDETAIL")
	for _, f := range r.Findings {
		port, rule, process := "-", "-", "-"
		if f.Port != 0 {
			port = strconv.Itoa(int(f.Port)) + "/" + f.Protocol
		}
		if f.Rule != nil {
			rule, process = f.Rule.Pos.FileLine(), f.Rule.Process
		}
		ctr := dash(f.Container)
		if f.Kind == KindInit || f.Kind == KindEphemeral {
			ctr += " (" + f.Kind + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Namespace, f.Pod, dash(f.Node), ctr, port,
			f.Verdict, rule, process, dash(f.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, r.Summary.String())
	return err
}

// String is the one-line summary the table ends with.
func (s Summary) String() string {
	count := func(vs []Verdict) string {
		parts := make([]string, len(vs))
		for i, v := range vs {
			parts[i] = fmt.Sprintf("%s %d", v, s.Verdicts[v])
		}
		return strings.Join(parts, ", ")
	}
	return fmt.Sprintf("%s (%d host-network), %s: %d ok, %s (%s), %s (%s)",
		plural(s.Pods, "pod"), s.HostNetwork, plural(s.Ports, "host port"), s.OK,
		plural(s.ViolationCount(), "violation"), count(Violations), plural(s.WarningCount(), "warning"), count(Warnings))
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
