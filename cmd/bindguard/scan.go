package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
	"github.com/bindguard/bindguard/scan"
)

func init() {
	register("scan", "judge the sockets already bound on this host as the bind programs judge them (exit 3 on violations)", runScan)
}

type scanFlags struct {
	registry  []string
	labels    []string
	mode      string
	cgroup    string
	output    outputFlag
	procfs    bool
	connected bool
}

func (f *scanFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.registry, "registry", nil, "registry file, directory of fragments, or builtin:NAME (repeatable)")
	fs.StringArrayVar(&f.labels, "node-label", nil, "this node's label key=value, for nodeSelectors (repeatable)")
	fs.StringVar(&f.mode, "mode", string(policy.ModeEnforce), "judge as a node in this mode: enforce (what would be denied) or audit")
	fs.StringVar(&f.cgroup, "cgroup", "", "list only sockets of this cgroup or below it: a path below the cgroup2 mount (/sys/fs/cgroup/x) or relative to its root (x, /x)")
	f.output.register(fs, "table", "table or json")
	fs.BoolVar(&f.procfs, "procfs", false, "read /proc/net instead of the BPF socket iterators (what scan does where the kernel has none)")
	fs.BoolVar(&f.connected, "connected", false, "also list connected sockets on ports the kernel chose (client connections); ones on restricted ports are always listed")
}

// parse reads the flags; help is not an error, bad flags exit with 2.
func (f *scanFlags) parse(args []string, stdout, stderr io.Writer) (mode policy.Mode, done bool, err error) {
	fs, done, err := parseFlags("scan", "", f, args, stdout, stderr)
	if done {
		return "", true, err
	}
	if fs.NArg() > 0 {
		return "", false, &exitError{code: 2, msg: fmt.Sprintf("scan: unexpected arguments %q: the registry is given with --registry", fs.Args())}
	}
	if len(f.registry) == 0 {
		return "", false, &exitError{code: 2, msg: "scan: no --registry given"}
	}
	if mode, err = policy.ParseMode(f.mode); err != nil {
		return "", false, &exitError{code: 2, msg: "scan: " + err.Error()}
	}
	if err := f.output.check("scan"); err != nil {
		return "", false, err
	}
	return mode, false, nil
}

func runScan(args []string, stdout, stderr io.Writer) error {
	var f scanFlags
	mode, done, err := f.parse(args, stdout, stderr)
	if done || err != nil {
		return err
	}
	c, err := compileForNode("scan", f.registry, f.labels, stderr)
	if err != nil {
		return err
	}
	owners, err := hostOwnerResolver()
	if err != nil {
		return fmt.Errorf("scan: %w", err)
	}
	defer owners.Close()
	l, err := scan.Sockets(scan.Options{Procfs: f.procfs, Cgroups: owners.fs})
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(stderr, "bindguard: scan: not root: sockets of other users' processes show pid 0")
	}
	// Units are the system manager's below the cgroup run attaches to:
	// --cgroup here, as there; the cgroup2 root on a real host.
	owners.unitRoot = "/"
	if f.cgroup != "" {
		owners.unitRoot = cgroups.ArgPath(f.cgroup)
	}
	for i := range l.Sockets {
		l.Sockets[i].Unit = ""
		if u, _, ok := cgroups.UnitOf(owners.unitRoot, l.Sockets[i].Cgroup); ok {
			l.Sockets[i].Unit = u
		}
	}
	findings := scan.Judge(c, mode, l.Sockets, policy.DecideOptions{Exists: owners.exists, FindUnit: owners.findUnit, UnitRoot: owners.unitRoot})
	findings = f.keep(findings)
	r := scan.Report{Mode: mode, Listing: l, Findings: findings, Summary: scan.Summarize(findings)}
	if f.output.json() {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	if r.Summary.Audited+r.Summary.Denied > 0 {
		return &exitError{code: 3}
	}
	return nil
}

// keep applies --cgroup (to the cgroup each socket is judged with) and
// leaves out client connections on kernel-chosen ports unless --connected.
func (f *scanFlags) keep(fs []scan.Finding) []scan.Finding {
	cg := ""
	if f.cgroup != "" {
		cg = cgroups.ArgPath(f.cgroup)
	}
	kept := fs[:0]
	for _, x := range fs {
		if cg != "" && (x.Cgroup == "" || !policy.InCgroup(x.Cgroup, cg)) {
			continue
		}
		if !f.connected && x.Connected() && x.Verdict == scan.VerdictEphemeral {
			continue
		}
		kept = append(kept, x)
	}
	return kept
}
