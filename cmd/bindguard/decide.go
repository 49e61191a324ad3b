package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/bindguard/bindguard/cgroups"
	"github.com/bindguard/bindguard/policy"
)

func init() {
	register("decide", "say what bindguard would do with one bind, and which rule decides", runDecide)
}

type decideFlags struct {
	registry   []string
	labels     []string
	mode       string
	port       uint16
	protocol   string
	address    string
	cgroup     string
	uid        uint32
	otherNetns bool
	allNetns   bool
	assume     bool
	output     string
}

func (f *decideFlags) register(fs *pflag.FlagSet) {
	fs.StringArrayVar(&f.registry, "registry", nil, "registry file, directory of fragments, or builtin:NAME (repeatable)")
	fs.StringArrayVar(&f.labels, "node-label", nil, "a label of the node, as key=value, for nodeSelectors (repeatable)")
	fs.StringVar(&f.mode, "mode", string(policy.ModeEnforce), "the node's mode: audit or enforce")
	fs.Uint16Var(&f.port, "port", 0, "port bound (required; 0 is an ephemeral port)")
	fs.StringVar(&f.protocol, "protocol", "tcp", "tcp or udp")
	fs.StringVar(&f.address, "address", "0.0.0.0", "address bound; its family is the socket's (IPv4-mapped is IPv6)")
	fs.StringVar(&f.cgroup, "cgroup", "/", "cgroup of the binding process, relative to the cgroup2 root")
	fs.Uint32Var(&f.uid, "uid", 0, "uid of the binding process")
	fs.BoolVar(&f.otherNetns, "other-netns", false, "the socket is outside the host network namespace")
	fs.BoolVar(&f.allNetns, "all-netns", false, "the node runs with --all-netns (judges every network namespace)")
	fs.BoolVar(&f.assume, "assume-owners-exist", false, "resolve no owner cgroup on this host: every one exists, a unit owns any cgroup named like it (to predict another node)")
	fs.StringVarP(&f.output, "output", "o", "text", "text or json")
}

// decisionJSON is the JSON form of a decision:
//
//	{"verdict": "deny", "reason": "owner", "rule": "reg.yaml:12", "process": "etcd",
//	 "port": 2379, "protocol": "tcp", "family": 4, "address": "0.0.0.0",
//	 "cgroup": "/", "uid": 0, "hostNetns": true, "mode": "enforce"}
//
// reason is "" when the bind is allowed; rule and process are omitted when
// no rule applies (undeclared, port 0, another network namespace).
type decisionJSON struct {
	Verdict   string `json:"verdict"`
	Reason    string `json:"reason"`
	Rule      string `json:"rule,omitempty"`
	Process   string `json:"process,omitempty"`
	Port      uint16 `json:"port"`
	Protocol  string `json:"protocol"`
	Family    int    `json:"family"`
	Address   string `json:"address"`
	Cgroup    string `json:"cgroup"`
	UID       uint32 `json:"uid"`
	HostNetns bool   `json:"hostNetns"`
	Mode      string `json:"mode"`
}

func runDecide(args []string, stdout, stderr io.Writer) error {
	var f decideFlags
	fs := newFlagSet("decide", "", stderr)
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return &exitError{code: 2, msg: "decide: " + err.Error()}
	}
	a, mode, err := f.attempt(fs)
	if err != nil {
		return &exitError{code: 2, msg: "decide: " + err.Error()}
	}
	if f.output != "text" && f.output != "json" {
		return &exitError{code: 2, msg: fmt.Sprintf("decide: --output %q: want text or json", f.output)}
	}
	c, err := compileForNode("decide", f.registry, f.labels, stderr)
	if err != nil {
		return err
	}
	opts := policy.DecideOptions{AllNetns: f.allNetns}
	if !f.assume {
		cg, err := hostOwnerResolver()
		if err != nil {
			return fmt.Errorf("decide: %w (pass --assume-owners-exist to judge without this host's cgroups)", err)
		}
		defer cg.Close()
		opts.Exists, opts.FindUnit = cg.exists, cg.findUnit
	}
	d := policy.Decide(c, mode, a, opts)
	out := decisionJSON{
		Verdict: string(d.Verdict), Reason: d.Reason, Port: a.Port, Protocol: a.Protocol.String(),
		Family: a.Family, Address: a.Address.String(), Cgroup: a.Cgroup, UID: a.UID,
		HostNetns: a.HostNetns, Mode: string(mode),
	}
	if d.Rule != nil {
		out.Rule, out.Process = d.Rule.Pos.FileLine(), d.Rule.Process
	}
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	netns := "host netns"
	if !a.HostNetns {
		netns = "other netns"
	}
	fmt.Fprintf(stdout, "%s %s from cgroup %s uid %d (%s): %s", a.Protocol, netip.AddrPortFrom(a.Address, a.Port),
		a.Cgroup, a.UID, netns, d.Verdict)
	if d.Reason != "" {
		fmt.Fprintf(stdout, " (%s)", d.Reason)
	}
	if d.Rule != nil {
		fmt.Fprintf(stdout, ", rule %s process %s", out.Rule, d.Rule.Process)
	}
	fmt.Fprintln(stdout)
	return nil
}

// attempt checks the flags and returns the bind they describe.
func (f *decideFlags) attempt(fs *pflag.FlagSet) (policy.BindAttempt, policy.Mode, error) {
	var a policy.BindAttempt
	if fs.NArg() > 0 {
		return a, "", fmt.Errorf("unexpected arguments %q: the registry is given with --registry", fs.Args())
	}
	if len(f.registry) == 0 {
		return a, "", errors.New("no --registry given")
	}
	if !fs.Changed("port") {
		return a, "", errors.New("no --port given")
	}
	mode, err := policy.ParseMode(f.mode)
	if err != nil {
		return a, "", err
	}
	switch strings.ToLower(f.protocol) {
	case "tcp":
		a.Protocol = policy.TCP
	case "udp":
		a.Protocol = policy.UDP
	default:
		return a, "", fmt.Errorf("--protocol %q: want tcp or udp", f.protocol)
	}
	addr, err := netip.ParseAddr(f.address)
	if err != nil {
		return a, "", fmt.Errorf("--address: %w", err)
	}
	a.Address, a.Family = addr, 6
	if addr.Is4() {
		a.Family = 4
	}
	if !strings.HasPrefix(f.cgroup, "/") {
		return a, "", fmt.Errorf("--cgroup %q: want a path from the cgroup2 root like /system.slice/x.service", f.cgroup)
	}
	a.Port, a.Cgroup, a.UID, a.HostNetns = f.port, f.cgroup, f.uid, !f.otherNetns
	return a, mode, nil
}

// compileForNode loads and compiles registries for a node with the given
// labels. Registry errors are printed to stderr one per line and returned as
// an exitError with code 1 and no message.
func compileForNode(cmd string, paths, labelFlags []string, stderr io.Writer) (*policy.Compiled, error) {
	labels, err := parseLabels(labelFlags)
	if err != nil {
		return nil, &exitError{code: 2, msg: cmd + ": " + err.Error()}
	}
	reg, err := policy.Load(paths...)
	if reg == nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	c, err := policy.Compile(reg, labels)
	var errs policy.ErrorList
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return nil, &exitError{code: 1, msg: fmt.Sprintf("%s: registry has %d errors: nothing judged", cmd, len(errs))}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return c, nil
}

// ownerResolver resolves owners in this host's cgroup2 tree, as the daemon
// does when it loads a policy. Unit lookups walk the tree, so they are cached.
type ownerResolver struct {
	fs    *cgroups.FS
	units map[string][]string
}

func hostOwnerResolver() (*ownerResolver, error) {
	fs, err := cgroups.Open("")
	if err != nil {
		return nil, err
	}
	return &ownerResolver{fs: fs, units: map[string][]string{}}, nil
}

func (r *ownerResolver) exists(path string) bool {
	st, err := os.Stat(r.fs.Abs(path))
	return err == nil && st.IsDir()
}

func (r *ownerResolver) findUnit(unit string) []string {
	if p, ok := r.units[unit]; ok {
		return p
	}
	p, _ := r.fs.FindUnit(unit) // an unreadable tree resolves nothing, as in the loader
	r.units[unit] = p
	return p
}

func (r *ownerResolver) Close() error { return r.fs.Close() }
