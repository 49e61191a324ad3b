package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/policy"
)

func init() {
	register("compile", "print the policy a node would load, as a table or JSON", runCompile)
}

type compileFlags struct {
	checkFlags
	output string
}

func (f *compileFlags) register(fs *pflag.FlagSet) {
	f.checkFlags.register(fs)
	fs.StringVarP(&f.output, "output", "o", "table", "output format: table (ports with identical rules collapse into ranges) or json (one rule per port)")
}

func runCompile(args []string, stdout, stderr io.Writer) error {
	var f compileFlags
	fs := newFlagSet("compile", "PATH...", stderr)
	f.register(fs)
	if done, err := parseRegistryFlags(fs, args); done {
		return err
	}
	if f.output != "table" && f.output != "json" {
		return &exitError{code: 2, msg: fmt.Sprintf("compile: --output %q: want table or json", f.output)}
	}
	labels, err := parseLabels(f.nodeLabels)
	if err != nil {
		return &exitError{code: 2, msg: "compile: " + err.Error()}
	}
	reg, err := loadAndValidate(fs.Args(), labels, stderr)
	if err != nil {
		return err
	}
	c, err := policy.Compile(reg, labels)
	if err != nil {
		return fmt.Errorf("compile: %w", err) // Validate passed, so this is not expected
	}
	if f.output == "json" {
		return writeCompiledJSON(stdout, c)
	}
	return writeCompiledTable(stdout, c)
}

// compiledJSON is the stable JSON form of a compiled policy:
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
type compiledJSON struct {
	NodeLabels map[string]string `json:"nodeLabels"`
	Digest     string            `json:"digest"`
	Rules      []ruleJSON        `json:"rules"`
}

type ruleJSON struct {
	Port     uint16     `json:"port"`
	Protocol string     `json:"protocol"`
	Bind     string     `json:"bind"`
	Mode     string     `json:"mode"`
	Removed  bool       `json:"removed"`
	Owners   ownersJSON `json:"owners"`
	Rule     string     `json:"rule"`
	Process  string     `json:"process"`
}

type ownersJSON struct {
	Cgroups []string       `json:"cgroups"`
	Units   []string       `json:"units"`
	UIDs    []uint32       `json:"uids"`
	Pods    []podOwnerJSON `json:"pods"`
}

// podOwnerJSON is a pod owner; labels is never null, container is "" for
// every container of the pod.
type podOwnerJSON struct {
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
	Container string            `json:"container"`
}

func podOwnersJSON(pods []policy.PodOwner) []podOwnerJSON {
	out := make([]podOwnerJSON, len(pods))
	for i, p := range pods {
		out[i] = podOwnerJSON{Namespace: p.Namespace, Labels: p.Labels, Container: p.Container}
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

func ruleBind(r *policy.Rule) string {
	if r.Localhost {
		return "localhost"
	}
	return "any"
}

func ruleMode(r *policy.Rule) string {
	if r.Audit {
		return string(policy.ModeAudit)
	}
	return string(policy.ModeEnforce)
}

func writeCompiledJSON(w io.Writer, c *policy.Compiled) error {
	out := compiledJSON{NodeLabels: c.NodeLabels, Digest: c.Digest, Rules: make([]ruleJSON, len(c.Rules))}
	if out.NodeLabels == nil {
		out.NodeLabels = map[string]string{}
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		o := c.Origins[r.Origin]
		out.Rules[i] = ruleJSON{
			Port:     r.Port,
			Protocol: r.Protocol.String(),
			Bind:     ruleBind(r),
			Mode:     ruleMode(r),
			Removed:  r.Removed,
			Owners: ownersJSON{
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
func sameRule(a, b *policy.Rule) bool {
	return a.Protocol == b.Protocol && a.Removed == b.Removed && a.Localhost == b.Localhost &&
		a.Audit == b.Audit && a.Origin == b.Origin &&
		slices.Equal(a.Owners.Cgroups, b.Owners.Cgroups) &&
		slices.Equal(a.Owners.Units, b.Owners.Units) &&
		slices.Equal(a.Owners.UIDs, b.Owners.UIDs) &&
		slices.EqualFunc(a.Owners.Pods, b.Owners.Pods, policy.PodOwner.Equal)
}

func ruleOwners(r *policy.Rule) string {
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

// writeCompiledTable prints one line per run of consecutive ports whose rules are
// identical and come from the same entry.
func writeCompiledTable(w io.Writer, c *policy.Compiled) error {
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
