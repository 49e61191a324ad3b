package policy

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// This file renders a Compiled policy for people (WriteTable) and tools
// (WriteJSON), beside the types it renders.

// CompiledJSON is the stable JSON form of a compiled policy, as WriteJSON
// prints it:
//
//	{"nodeLabels": {"k": "v"}, "digest": "<hex sha256>", "rules": [
//	  {"port": 2379, "protocol": "tcp", "bind": "any"|"localhost",
//	   "mode": "enforce"|"audit", "removed": false,
//	   "owners": {"cgroups": [...], "units": [...], "uids": [...],
//	              "pods": [{"namespace": "kube-system", "labels": {"component": "etcd"}, "container": "etcd"}]},
//	   "rule": "file:line", "process": "etcd"}]}
//
// Rules are one per (port, protocol), sorted by protocol then port. Lists are
// never null. "mode" is "enforce" unless the entry says audit; the node's
// own mode still applies. Owners all empty means anyone may bind.
type CompiledJSON struct {
	NodeLabels map[string]string `json:"nodeLabels"`
	Digest     string            `json:"digest"`
	Rules      []RuleJSON        `json:"rules"`
}

type RuleJSON struct {
	Port     uint16     `json:"port"`
	Protocol string     `json:"protocol"`
	Bind     string     `json:"bind"`
	Mode     string     `json:"mode"`
	Removed  bool       `json:"removed"`
	Owners   OwnersJSON `json:"owners"`
	Rule     string     `json:"rule"`
	Process  string     `json:"process"`
}

type OwnersJSON struct {
	Cgroups []string       `json:"cgroups"`
	Units   []string       `json:"units"`
	UIDs    []uint32       `json:"uids"`
	Pods    []PodOwnerJSON `json:"pods"`
}

// PodOwnerJSON is a pod owner; labels is never null, container is "" for
// every container of the pod.
type PodOwnerJSON struct {
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	Container string            `json:"container"`
}

func podOwnersJSON(pods []PodOwner) []PodOwnerJSON {
	out := make([]PodOwnerJSON, len(pods))
	for i, p := range pods {
		out[i] = PodOwnerJSON(p) // a field added to PodOwner must be added here too
		if out[i].Labels == nil {
			out[i].Labels = map[string]string{}
		}
	}
	return out
}

func emptyIfNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func ruleBind(r *Rule) string {
	if r.Localhost {
		return "localhost"
	}
	return "any"
}

func ruleMode(r *Rule) string {
	if r.Audit {
		return string(ModeAudit)
	}
	return string(ModeEnforce)
}

// WriteJSON prints the policy as one CompiledJSON document.
func (c *Compiled) WriteJSON(w io.Writer) error {
	out := CompiledJSON{NodeLabels: c.NodeLabels, Digest: c.Digest, Rules: make([]RuleJSON, len(c.Rules))}
	if out.NodeLabels == nil {
		out.NodeLabels = map[string]string{}
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		o := c.Origins[r.Origin]
		out.Rules[i] = RuleJSON{
			Port:     r.Port,
			Protocol: r.Protocol.String(),
			Bind:     ruleBind(r),
			Mode:     ruleMode(r),
			Removed:  r.Removed,
			Owners: OwnersJSON{
				Cgroups: emptyIfNil(r.Owners.Cgroups),
				Units:   emptyIfNil(r.Owners.Units),
				UIDs:    emptyIfNil(r.Owners.UIDs),
				Pods:    podOwnersJSON(r.Owners.Pods),
			},
			Rule:    o.Pos.FileLine(),
			Process: o.Process,
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// sameRule reports whether two rules differ only in their port.
func sameRule(a, b *Rule) bool {
	return a.Protocol == b.Protocol && a.Removed == b.Removed && a.Localhost == b.Localhost &&
		a.Audit == b.Audit && a.Origin == b.Origin &&
		slices.Equal(a.Owners.Cgroups, b.Owners.Cgroups) &&
		slices.Equal(a.Owners.Units, b.Owners.Units) &&
		slices.Equal(a.Owners.UIDs, b.Owners.UIDs) &&
		slices.EqualFunc(a.Owners.Pods, b.Owners.Pods, PodOwner.Equal)
}

func ruleOwners(r *Rule) string {
	if r.Removed {
		return "none (removed)"
	}
	if r.Owners.Any() {
		return "any"
	}
	var parts []string
	for _, c := range r.Owners.Cgroups {
		parts = append(parts, "cgroup:"+c)
	}
	for _, u := range r.Owners.Units {
		parts = append(parts, "unit:"+u)
	}
	for _, u := range r.Owners.UIDs {
		parts = append(parts, "uid:"+strconv.FormatUint(uint64(u), 10))
	}
	for _, p := range r.Owners.Pods {
		parts = append(parts, p.String())
	}
	return strings.Join(parts, ",")
}

// WriteTable prints the policy as a table: one line per run of consecutive
// ports whose rules are identical and come from the same entry, then a
// summary line.
func (c *Compiled) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "PORT\tPROTO\tBIND\tMODE\tOWNERS\tRULE\tPROCESS")
	removed := 0
	for i := 0; i < len(c.Rules); {
		first := &c.Rules[i]
		j := i + 1
		for j < len(c.Rules) && sameRule(first, &c.Rules[j]) && c.Rules[j].Port == c.Rules[j-1].Port+1 {
			j++
		}
		last := &c.Rules[j-1]
		ports := strconv.Itoa(int(first.Port))
		if last.Port != first.Port {
			ports += "-" + strconv.Itoa(int(last.Port))
		}
		bind := ruleBind(first)
		if first.Removed {
			bind = "-"
			removed += j - i
		}
		o := c.Origins[first.Origin]
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ports, first.Protocol, bind, ruleMode(first), ruleOwners(first), o.Pos.FileLine(), o.Process)
		i = j
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d rules (%d removed ports), digest %s\n", len(c.Rules), removed, c.Digest)
	return err
}
