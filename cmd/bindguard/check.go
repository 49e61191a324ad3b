package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/policy"
)

func init() {
	register("check", "validate registries and report every error with FILE:LINE:COL", runCheck)
}

// checkFlags are the flags shared by check and compile.
type checkFlags struct {
	nodeLabels []string
}

func (f *checkFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.nodeLabels, "node-label", nil,
		"a label of the node to check for, as key=value (repeatable); without any, check for every node")
}

// parseRegistryFlags is parseFlags for the commands whose operands are
// registry paths (check, compile): at least one is required.
func parseRegistryFlags(name string, f flagsStruct, args []string, stdout, stderr io.Writer) (fs *pflag.FlagSet, done bool, err error) {
	fs, done, err = parseFlags(name, "PATH...", f, args, stdout, stderr)
	if done {
		return fs, done, err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fs, true, &exitError{code: 2, msg: name + ": no registry given: want files, directories or builtin:NAME"}
	}
	return fs, false, nil
}

// loadAndValidate loads the paths and validates them for the node. Registry
// errors are printed to stderr one per line, and the returned error is an
// exitError with code 1 and no message.
func loadAndValidate(paths []string, labels map[string]string, stderr io.Writer) (*policy.Registry, error) {
	reg, err := policy.Load(paths...)
	if reg == nil {
		return nil, err
	}
	if errs := reg.Validate(labels); len(errs) > 0 {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return nil, &exitError{code: 1}
	}
	return reg, nil
}

// checkCmdFlags are check's flags: the shared ones and --nodes.
type checkCmdFlags struct {
	checkFlags
	nodes  string
	strict bool
}

func (f *checkCmdFlags) register(fs *pflag.FlagSet) {
	f.checkFlags.register(fs)
	fs.StringVar(&f.nodes, "nodes", "", "check for each node of this file, the output of kubectl get nodes -o json (\"-\": stdin), and warn of entries that select none of them")
	fs.BoolVar(&f.strict, "strict", false, "with --nodes, an entry that selects no node is an error")
}

func runCheck(args []string, stdout, stderr io.Writer) error {
	var f checkCmdFlags
	fs, done, err := parseRegistryFlags("check", &f, args, stdout, stderr)
	if done {
		return err
	}
	if f.nodes != "" {
		if len(f.nodeLabels) > 0 {
			return &exitError{code: 2, msg: "check: --nodes and --node-label exclude each other: the nodes' own labels are checked"}
		}
		return checkNodes(fs.Args(), f.nodes, f.strict, stdout, stderr)
	}
	if f.strict {
		return &exitError{code: 2, msg: "check: --strict needs --nodes"}
	}
	labels, err := parseLabels(f.nodeLabels)
	if err != nil {
		return &exitError{code: 2, msg: "check: " + err.Error()}
	}
	reg, err := loadAndValidate(fs.Args(), labels, stderr)
	if err != nil {
		return err
	}
	if c, err := policy.Compile(reg, labels); err == nil {
		warnAutobind(c, stderr)
	}
	for _, w := range reg.Widenings(labels) {
		fmt.Fprintln(stderr, w)
	}
	tcp, udp := reg.Coverage(labels)
	node := "all nodes"
	if len(labels) > 0 {
		node = "node " + policy.FormatLabels(labels)
	}
	fmt.Fprintf(stdout, "ok: %d files, %d entries, %d removed; %s: %d ports covered (tcp %d, udp %d)\n",
		countFiles(reg), len(reg.Entries), len(reg.Removed), node, tcp+udp, tcp, udp)
	return nil
}

func countFiles(reg *policy.Registry) int {
	files := map[string]bool{}
	for _, s := range reg.Sources {
		files[s.File] = true
	}
	return len(files)
}

// checkNodes checks the registry for each node of a kubectl nodes list: one
// line per node on stdout; each error once on stderr with the nodes it
// holds for; a warning for each entry whose selector matches none of them.
func checkNodes(paths []string, nodesFile string, strict bool, stdout, stderr io.Writer) error {
	nodes, err := readNodesFile(nodesFile)
	if err != nil {
		return &exitError{code: 1, msg: "check: --nodes " + err.Error()}
	}
	if len(nodes) == 0 {
		return &exitError{code: 1, msg: fmt.Sprintf("check: --nodes %s lists no nodes: nothing to check", nodesFile)}
	}
	reg, err := policy.Load(paths...)
	if reg == nil {
		return fmt.Errorf("check: %w", err)
	}
	var errs nodeErrors
	bad := 0
	for i := range nodes {
		name, labels := nodes[i].Name, nodes[i].Labels
		if ve := reg.Validate(labels); len(ve) > 0 {
			bad++
			errs.add(name, ve)
			fmt.Fprintf(stdout, "node %s: %d errors\n", name, len(ve))
			continue
		}
		tcp, udp := reg.Coverage(labels)
		fmt.Fprintf(stdout, "node %s: ok: %d entries, %d removed; %d ports covered (tcp %d, udp %d)\n",
			name, selected(reg.Entries, labels), selected(reg.Removed, labels), tcp+udp, tcp, udp)
	}
	errs.print(stderr, len(nodes))
	unused := warnUnselected(reg, nodes, nodesFile, stderr)
	switch {
	case bad > 0:
		return &exitError{code: 1, msg: fmt.Sprintf("check: the registry has errors on %d of %d nodes", bad, len(nodes))}
	case strict && unused > 0:
		return &exitError{code: 1, msg: fmt.Sprintf("check: %d entries select no node (--strict)", unused)}
	}
	fmt.Fprintf(stdout, "ok: %d files, %d entries, %d removed; %d nodes\n", countFiles(reg), len(reg.Entries), len(reg.Removed), len(nodes))
	return nil
}

func selected(ents []policy.Entry, labels map[string]string) int {
	n := 0
	for i := range ents {
		if ents[i].Matches(labels) {
			n++
		}
	}
	return n
}

// warnUnselected warns of each entry that selects none of the nodes, and
// returns how many there are.
func warnUnselected(reg *policy.Registry, nodes []corev1.Node, nodesFile string, w io.Writer) int {
	n := 0
	for _, list := range [][]policy.Entry{reg.Entries, reg.Removed} {
		for i := range list {
			e := &list[i]
			if slices.ContainsFunc(nodes, func(node corev1.Node) bool { return e.Matches(node.Labels) }) {
				continue
			}
			n++
			kind := "entry"
			if e.Removed {
				kind = "removed entry"
			}
			fmt.Fprintf(w, "%s: warning: %s %q (port %s/%s) selects none of the %d nodes in %s: nodeSelector %s\n",
				e.Pos, kind, e.Process, e.Ports, protocolNames(e.Protocols), len(nodes), nodesFile, e.NodeSelector)
		}
	}
	return n
}

func protocolNames(ps []policy.Protocol) string {
	if len(ps) == 0 {
		return policy.TCP.String()
	}
	names := make([]string, len(ps))
	for i, p := range ps {
		names[i] = p.String()
	}
	return strings.Join(names, ",")
}

// nodeErrors collects registry errors across nodes, each error once with
// the nodes it holds for, in the order first seen.
type nodeErrors struct {
	order []*policy.Error
	nodes map[policy.Error][]string
}

func (ne *nodeErrors) add(node string, errs policy.ErrorList) {
	if ne.nodes == nil {
		ne.nodes = map[policy.Error][]string{}
	}
	for _, e := range errs {
		if _, ok := ne.nodes[*e]; !ok {
			ne.order = append(ne.order, e)
		}
		ne.nodes[*e] = append(ne.nodes[*e], node)
	}
}

func (ne *nodeErrors) print(w io.Writer, total int) {
	policy.ErrorList(ne.order).Sort()
	for _, e := range ne.order {
		on := ne.nodes[*e]
		where := "node " + strings.Join(on, ", node ")
		if len(on) == total && total > 1 {
			where = "every node"
		}
		fmt.Fprintf(w, "%s (%s)\n", e, where)
	}
}
