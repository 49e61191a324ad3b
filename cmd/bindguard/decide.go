package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
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
	output     outputFlag
	podPorts   string
	unitRoot   string
	pod        podFlags
}

// podFlags describe the binder's pod, as the runtime reports it.
type podFlags struct {
	namespace, name, uid, container string
	labels, ports                   []string
	pending, portsUnknown           bool
}

func (f *podFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.namespace, "pod-namespace", "", "the binder runs in a pod of this namespace (without it and --pod-pending: a host process)")
	fs.StringVar(&f.name, "pod-name", "", "the pod's name")
	fs.StringVar(&f.uid, "pod-uid", "", "the pod's UID")
	fs.StringArrayVar(&f.labels, "pod-label", nil, "a label of the pod, as key=value (repeatable)")
	fs.StringVar(&f.container, "pod-container", "", "the name of the binder's container")
	fs.StringArrayVar(&f.ports, "pod-port", nil, "a port one of the pod's containers declares, as PORT/PROTOCOL like 2379/tcp (repeatable)")
	fs.BoolVar(&f.pending, "pod-pending", false, "the binder is in a pod whose identity the runtime has not reported yet")
	fs.BoolVar(&f.portsUnknown, "pod-ports-unknown", false, "the pod's declared ports are not known yet")
}

// attempt returns the pod the flags describe, or nil for a host process.
func (f *podFlags) attempt() (*policy.Pod, error) {
	named := f.namespace != "" || f.name != "" || f.uid != "" || f.container != "" || len(f.labels) > 0 || len(f.ports) > 0
	switch {
	case f.pending && named:
		return nil, errors.New("--pod-pending: a pending pod's identity is not known; give no other --pod-* flag")
	case f.pending:
		return &policy.Pod{Pending: true}, nil
	case !named:
		if f.portsUnknown {
			return nil, errors.New("--pod-ports-unknown needs --pod-namespace")
		}
		return nil, nil
	case f.namespace == "":
		return nil, errors.New("--pod-* flags need --pod-namespace")
	}
	labels, err := parseKeyValues("--pod-label", f.labels)
	if err != nil {
		return nil, err
	}
	p := &policy.Pod{Namespace: f.namespace, Name: f.name, UID: f.uid, Labels: labels, Container: f.container, PortsKnown: !f.portsUnknown}
	for _, s := range f.ports {
		port, proto, ok := strings.Cut(s, "/")
		n, err := strconv.ParseUint(port, 10, 16)
		pr, perr := parseProtocolFlag(proto)
		if !ok || err != nil || n == 0 || perr != nil {
			return nil, fmt.Errorf("--pod-port %q: want PORT/PROTOCOL like 2379/tcp", s)
		}
		p.Ports = append(p.Ports, policy.PodPort{Port: uint16(n), Protocol: pr})
	}
	return p, nil
}

func parseProtocolFlag(s string) (policy.Protocol, error) {
	switch strings.ToLower(s) {
	case "tcp":
		return policy.TCP, nil
	case "udp":
		return policy.UDP, nil
	}
	return 0, fmt.Errorf("%q: want tcp or udp", s)
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
	f.output.register(fs, "text", "text or json")
	fs.StringVar(&f.podPorts, "pod-ports", string(policy.PodPortsIgnore), "the node's --pod-ports: ignore, or require (a pod binds only ports it declares)")
	fs.StringVar(&f.unitRoot, "unit-root", "/", "the cgroup below which the system manager's units are owners: the node's attach cgroup")
	f.pod.register(fs)
}

// decisionJSON is the JSON form of a decision:
//
//	{"verdict": "deny", "reason": "owner", "rule": "reg.yaml:12", "process": "etcd",
//	 "port": 2379, "protocol": "tcp", "family": 4, "address": "0.0.0.0",
//	 "cgroup": "/", "uid": 0, "hostNetns": true, "mode": "enforce",
//	 "podPorts": "ignore", "pod": {"namespace": "kube-system", "name": "etcd-cp1",
//	 "container": "etcd", "pending": false}}
//
// reason is "" when the bind is allowed; rule and process are omitted when
// no rule applies (undeclared, port 0, another network namespace); pod is
// omitted for a host process.
type decisionJSON struct {
	Verdict   string   `json:"verdict"`
	Reason    string   `json:"reason"`
	Rule      string   `json:"rule,omitempty"`
	Process   string   `json:"process,omitempty"`
	Port      uint16   `json:"port"`
	Protocol  string   `json:"protocol"`
	Family    int      `json:"family"`
	Address   string   `json:"address"`
	Cgroup    string   `json:"cgroup"`
	UID       uint32   `json:"uid"`
	HostNetns bool     `json:"hostNetns"`
	Mode      string   `json:"mode"`
	PodPorts  string   `json:"podPorts"`
	Pod       *podJSON `json:"pod,omitempty"`
}

type podJSON struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Container string `json:"container"`
	Pending   bool   `json:"pending"`
}

func runDecide(args []string, stdout, stderr io.Writer) error {
	var f decideFlags
	fs, done, err := parseFlags("decide", "", &f, args, stdout, stderr)
	if done {
		return err
	}
	a, mode, err := f.attempt(fs)
	if err != nil {
		return &exitError{code: 2, msg: "decide: " + err.Error()}
	}
	podPorts, err := policy.ParsePodPortsMode(f.podPorts)
	if err != nil {
		return &exitError{code: 2, msg: "decide: --pod-ports: " + err.Error()}
	}
	if err := f.output.check("decide"); err != nil {
		return err
	}
	c, err := compileForNode("decide", f.registry, f.labels, stderr)
	if err != nil {
		return err
	}
	opts := policy.DecideOptions{AllNetns: f.allNetns, PodPorts: podPorts, UnitRoot: f.unitRoot}
	if !f.assume {
		cg, err := hostOwnerResolver()
		if err != nil {
			return fmt.Errorf("decide: %w (pass --assume-owners-exist to judge without this host's cgroups)", err)
		}
		defer cg.Close()
		cg.unitRoot = f.unitRoot
		opts.Exists, opts.FindUnit = cg.exists, cg.findUnit
	}
	d := policy.Decide(c, mode, a, opts)
	return writeDecision(stdout, f.output.json(), newDecisionJSON(a, mode, podPorts, d))
}

func newDecisionJSON(a policy.BindAttempt, mode policy.Mode, podPorts policy.PodPortsMode, d policy.Decision) decisionJSON {
	out := decisionJSON{
		Verdict: d.Verdict.String(), Reason: d.Reason.String(), Port: a.Port, Protocol: a.Protocol.String(),
		Family: int(a.Family), Address: a.Address.String(), Cgroup: a.Cgroup, UID: a.UID,
		HostNetns: a.HostNetns, Mode: mode.String(), PodPorts: podPorts.String(),
	}
	if d.Rule != nil {
		out.Rule, out.Process = d.Rule.Pos.FileLine(), d.Rule.Process
	}
	if p := a.Pod; p != nil {
		out.Pod = &podJSON{Namespace: p.Namespace, Name: p.Name, Container: p.Container, Pending: p.Pending}
	}
	return out
}

func writeDecision(w io.Writer, asJSON bool, d decisionJSON) error {
	if asJSON {
		return writeJSON(w, d)
	}
	netns := "host netns"
	if !d.HostNetns {
		netns = "other netns"
	}
	addr, _ := netip.ParseAddr(d.Address)
	fmt.Fprintf(w, "%s %s from cgroup %s uid %d", d.Protocol, netip.AddrPortFrom(addr, d.Port), d.Cgroup, d.UID)
	switch p := d.Pod; {
	case p == nil:
	case p.Pending:
		fmt.Fprint(w, " pod (pending)")
	default:
		fmt.Fprintf(w, " pod %s/%s container %s", p.Namespace, p.Name, p.Container)
	}
	fmt.Fprintf(w, " (%s): %s", netns, d.Verdict)
	if d.Reason != "" {
		fmt.Fprintf(w, " (%s)", d.Reason)
	}
	if d.Rule != "" {
		fmt.Fprintf(w, ", rule %s process %s", d.Rule, d.Process)
	}
	_, err := fmt.Fprintln(w)
	return err
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
	if a.Protocol, err = parseProtocolFlag(f.protocol); err != nil {
		return a, "", fmt.Errorf("--protocol %w", err)
	}
	addr, err := netip.ParseAddr(f.address)
	if err != nil {
		return a, "", fmt.Errorf("--address: %w", err)
	}
	a.Address, a.Family = addr, policy.FamilyIPv6
	if addr.Is4() {
		a.Family = policy.FamilyIPv4
	}
	for _, fl := range [][2]string{{"--cgroup", f.cgroup}, {"--unit-root", f.unitRoot}} {
		if !strings.HasPrefix(fl[1], "/") {
			return a, "", fmt.Errorf("%s %q: want a path from the cgroup2 root like /system.slice/x.service", fl[0], fl[1])
		}
	}
	if a.Pod, err = f.pod.attempt(); err != nil {
		return a, "", err
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
	c, _, err := policy.LoadAndCompile(labels, paths...)
	var errs policy.ErrorList
	if errors.As(err, &errs) {
		for _, e := range errs {
			fmt.Fprintln(stderr, e)
		}
		return nil, &exitError{code: 1, msg: fmt.Sprintf("%s: the registry has %d errors: nothing compiled", cmd, len(errs))}
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cmd, err)
	}
	return c, nil
}

// ownerResolver resolves owners in this host's cgroup2 tree, as the daemon
// does when it loads a policy. Unit lookups walk the slices below unitRoot
// ("/" unless set), so they are cached.
type ownerResolver struct {
	fs       *cgroups.FS
	unitRoot string
	units    map[string][]string
}

func hostOwnerResolver() (*ownerResolver, error) {
	fs, err := cgroups.Open("")
	if err != nil {
		return nil, err
	}
	return &ownerResolver{fs: fs, unitRoot: "/", units: map[string][]string{}}, nil
}

func (r *ownerResolver) exists(path string) bool {
	st, err := os.Stat(r.fs.Abs(path))
	return err == nil && st.IsDir()
}

func (r *ownerResolver) findUnit(unit string) []string {
	if p, ok := r.units[unit]; ok {
		return p
	}
	found, _ := r.fs.FindSystemUnits(r.unitRoot, []string{unit}) // an unreadable tree resolves nothing, as in the loader
	r.units[unit] = found[unit]
	return found[unit]
}

func (r *ownerResolver) Close() error { return r.fs.Close() }
