package podcheck

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/bindguard/bindguard/policy"
)

// Verdict is what the check says about one declared host port, or about a
// pod that has none.
type Verdict string

// Verdicts on a port (see the package documentation).
const (
	OK         Verdict = "ok"
	Undeclared Verdict = Verdict(policy.ReasonUndeclared)
	Removed    Verdict = Verdict(policy.ReasonRemoved)
	Owner      Verdict = Verdict(policy.ReasonOwner)
	Address    Verdict = Verdict(policy.ReasonAddress)
)

// Warnings: nothing was judged.
const (
	NoPorts     Verdict = "no-ports"
	Unscheduled Verdict = "unscheduled"
	UnknownNode Verdict = "unknown-node"
	SCTP        Verdict = "sctp"
)

// Violations and Warnings list the verdicts of each kind in report order.
var (
	Violations = []Verdict{Undeclared, Owner, Removed, Address}
	Warnings   = []Verdict{NoPorts, Unscheduled, UnknownNode, SCTP}
)

// Violation reports whether v is a violation.
func (v Verdict) Violation() bool { return slices.Contains(Violations, v) }

// Warning reports whether v is a warning.
func (v Verdict) Warning() bool { return slices.Contains(Warnings, v) }

// Container kinds, as Finding.Kind names them.
const (
	KindContainer = "container"
	KindInit      = "init"
	KindEphemeral = "ephemeral"
)

// Finding is the verdict on one declared host port of one container, or a
// pod-level warning (no-ports), which has no container and port.
type Finding struct {
	Namespace string
	Pod       string
	// Node is the pod's spec.nodeName; "" for an unscheduled pod.
	Node        string
	HostNetwork bool
	Container   string
	// Kind is KindContainer, KindInit or KindEphemeral; "" for no-ports.
	Kind string
	// Port is the host port: the hostPort, or for a host-network pod the
	// containerPort when hostPort is unset. 0 for no-ports.
	Port uint16
	// Protocol is "tcp", "udp" or "sctp"; "" for no-ports.
	Protocol string
	// HostIP is the port's hostIP as declared ("" when unset).
	HostIP  string
	Verdict Verdict
	// Rule is the registry entry that judged the port; nil when none did.
	Rule *policy.Origin
	// Detail says why, in words, for a violation or warning.
	Detail string
}

// Summary counts what a check found.
type Summary struct {
	// Pods is how many pods were checked: HostNetwork of them with
	// hostNetwork, the others for a hostPort.
	Pods, HostNetwork int
	// Ports is how many declared host ports were found; OK of them passed.
	Ports, OK int
	// Verdicts counts every violation and warning by verdict.
	Verdicts map[Verdict]int
}

// ViolationCount is the number of violations.
func (s Summary) ViolationCount() int { return s.count(Violations) }

// WarningCount is the number of warnings.
func (s Summary) WarningCount() int { return s.count(Warnings) }

func (s Summary) count(vs []Verdict) (n int) {
	for _, v := range vs {
		n += s.Verdicts[v]
	}
	return n
}

// Report is the result of Check: findings sorted by namespace and pod name,
// in spec order within a pod (containers, then init, then ephemeral).
type Report struct {
	Findings []Finding
	Summary  Summary
}

// Cluster is what is checked: pods and the nodes they run on.
type Cluster struct {
	Pods  []corev1.Pod
	Nodes []corev1.Node
}

// Options change how pods whose node is not known are judged.
type Options struct {
	// Labels, when not nil, are the labels that unscheduled pods and pods on
	// nodes missing from Cluster.Nodes are judged with. When nil they are
	// reported as unscheduled or unknown-node and not judged.
	Labels map[string]string
}

// Check judges every pod with hostNetwork or a hostPort against the registry,
// each with the labels of its node, and returns every finding. The registry
// is compiled once per distinct label set; a compile error (the registry
// does not validate for a node) is returned with the node named, and nothing
// is judged.
func Check(reg *policy.Registry, cl Cluster, opt Options) (*Report, error) {
	ck := checker{reg: reg, opt: opt, nodes: map[string]map[string]string{}, compiled: map[string]*policy.Compiled{}}
	for i := range cl.Nodes {
		ck.nodes[cl.Nodes[i].Name] = cl.Nodes[i].Labels
	}
	pods := make([]*corev1.Pod, 0, len(cl.Pods))
	for i := range cl.Pods {
		if hostPod(&cl.Pods[i]) {
			pods = append(pods, &cl.Pods[i])
		}
	}
	slices.SortStableFunc(pods, func(a, b *corev1.Pod) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	rep := &Report{Summary: Summary{Verdicts: map[Verdict]int{}}}
	for _, p := range pods {
		fs, err := ck.pod(p)
		if err != nil {
			return nil, err
		}
		rep.Findings = append(rep.Findings, fs...)
		rep.Summary.Pods++
		if p.Spec.HostNetwork {
			rep.Summary.HostNetwork++
		}
	}
	for _, f := range rep.Findings {
		if f.Port != 0 {
			rep.Summary.Ports++
		}
		if f.Verdict == OK {
			rep.Summary.OK++
		} else {
			rep.Summary.Verdicts[f.Verdict]++
		}
	}
	return rep, nil
}

// hostPod reports whether the pod is checked: host network, or any hostPort.
func hostPod(p *corev1.Pod) bool {
	if p.Spec.HostNetwork {
		return true
	}
	found := false
	eachPort(p, func(_ *corev1.Container, _ string, cp corev1.ContainerPort) {
		found = found || cp.HostPort != 0
	})
	return found
}

// eachPort calls fn for every declared port of every container of the pod,
// in spec order: containers, init containers, ephemeral containers.
func eachPort(p *corev1.Pod, fn func(c *corev1.Container, kind string, cp corev1.ContainerPort)) {
	for i := range p.Spec.Containers {
		c := &p.Spec.Containers[i]
		for _, cp := range c.Ports {
			fn(c, KindContainer, cp)
		}
	}
	for i := range p.Spec.InitContainers {
		c := &p.Spec.InitContainers[i]
		for _, cp := range c.Ports {
			fn(c, KindInit, cp)
		}
	}
	for i := range p.Spec.EphemeralContainers {
		c := (*corev1.Container)(&p.Spec.EphemeralContainers[i].EphemeralContainerCommon)
		for _, cp := range c.Ports {
			fn(c, KindEphemeral, cp)
		}
	}
}

type checker struct {
	reg      *policy.Registry
	opt      Options
	nodes    map[string]map[string]string
	compiled map[string]*policy.Compiled
}

// policyFor returns the compiled policy for the pod's node, or the warning
// that says why there is none.
func (ck *checker) policyFor(p *corev1.Pod) (*policy.Compiled, Verdict, error) {
	labels, known := ck.nodes[p.Spec.NodeName]
	var warn Verdict
	switch {
	case p.Spec.NodeName == "":
		labels, known, warn = ck.opt.Labels, ck.opt.Labels != nil, Unscheduled
	case !known:
		labels, known, warn = ck.opt.Labels, ck.opt.Labels != nil, UnknownNode
	}
	if !known {
		return nil, warn, nil
	}
	key, err := json.Marshal(labels) // map keys are sorted: one key per label set
	if err != nil {
		return nil, "", fmt.Errorf("pod check: labels of node %q: %w", p.Spec.NodeName, err)
	}
	if c, ok := ck.compiled[string(key)]; ok {
		return c, "", nil
	}
	c, err := policy.Compile(ck.reg, labels)
	if err != nil {
		return nil, "", fmt.Errorf("pod check: registry for node %q %s: %w", p.Spec.NodeName, policy.FormatLabels(labels), err)
	}
	ck.compiled[string(key)] = c
	return c, "", nil
}

// pod judges every declared host port of one checked pod.
func (ck *checker) pod(p *corev1.Pod) ([]Finding, error) {
	c, warn, err := ck.policyFor(p)
	if err != nil {
		return nil, err
	}
	base := Finding{Namespace: p.Namespace, Pod: p.Name, Node: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork}
	var out []Finding
	eachPort(p, func(ctr *corev1.Container, kind string, cp corev1.ContainerPort) {
		port := cp.HostPort
		if port == 0 && p.Spec.HostNetwork {
			port = cp.ContainerPort
		}
		if port <= 0 || port > 65535 {
			return // not a host port (ReadPods refuses out-of-range ports)
		}
		f := base
		f.Container, f.Kind, f.Port, f.HostIP = ctr.Name, kind, uint16(port), cp.HostIP
		f.Protocol = protocolName(cp.Protocol)
		switch {
		case f.Protocol == "sctp":
			f.Verdict, f.Detail = SCTP, "SCTP is not judged: the registry and the node agent cover TCP and UDP"
		case c == nil:
			f.Verdict, f.Detail = warn, unjudged(warn, p.Spec.NodeName)
		default:
			judge(c, p, ctr.Name, cp.HostIP, &f)
			if f.Verdict == Undeclared {
				f.Detail += elsewhere(ck.reg, f.Port, f.Protocol)
			}
		}
		out = append(out, f)
	})
	if len(out) == 0 && p.Spec.HostNetwork {
		f := base
		f.Verdict, f.Detail = NoPorts, "host-network pod declares no port: its binds cannot be checked here"
		out = append(out, f)
	}
	return out, nil
}

func unjudged(warn Verdict, node string) string {
	if warn == Unscheduled {
		return "no spec.nodeName: the node's labels are unknown (give --node-label to judge)"
	}
	return fmt.Sprintf("node %q is not among the nodes given: its labels are unknown", node)
}

func protocolName(p corev1.Protocol) string {
	switch p {
	case corev1.ProtocolUDP:
		return "udp"
	case corev1.ProtocolSCTP:
		return "sctp"
	}
	return "tcp" // "" defaults to TCP; ReadPods refuses anything else
}

// judge sets the verdict on one TCP or UDP port, in the order of
// policy.Decide: undeclared, removed, owner, address.
func judge(c *policy.Compiled, p *corev1.Pod, container, hostIP string, f *Finding) {
	proto := policy.TCP
	if f.Protocol == "udp" {
		proto = policy.UDP
	}
	rule := c.Lookup(f.Port, proto)
	if rule == nil {
		f.Verdict, f.Detail = Undeclared, fmt.Sprintf("no registry entry for %d/%s on this node", f.Port, f.Protocol)
		return
	}
	if rule.Origin >= 0 && rule.Origin < len(c.Origins) {
		o := c.Origins[rule.Origin]
		f.Rule = &o
	}
	switch {
	case rule.Removed:
		f.Verdict, f.Detail = Removed, "the registry lists this port as removed"
	case !rule.Owners.Any() && !podOwns(rule.Owners, p, container):
		f.Verdict, f.Detail = Owner, "owners: "+describeOwners(rule.Owners)
	case rule.Localhost && !f.HostNetwork && !loopback(hostIP):
		f.Verdict, f.Detail = Address, "the entry is localhost-only; the hostPort is published on "+publishedOn(hostIP)
	default:
		f.Verdict = OK
	}
}

// elsewhere says which entry declares the port for other nodes, if one
// does: an undeclared port is most often a nodeSelector that does not match
// the node's labels.
func elsewhere(reg *policy.Registry, port uint16, proto string) string {
	want := policy.TCP
	if proto == "udp" {
		want = policy.UDP
	}
	for _, list := range [][]policy.Entry{reg.Entries, reg.Removed} {
		for _, e := range list {
			protos := e.Protocols
			if len(protos) == 0 {
				protos = []policy.Protocol{policy.TCP}
			}
			if port >= e.Ports.Lo && port <= e.Ports.Hi && slices.Contains(protos, want) {
				return fmt.Sprintf("; %s (%s) declares it for other nodes: its nodeSelector does not match this node's labels", e.Pos.FileLine(), e.Process)
			}
		}
	}
	return ""
}

// podOwns reports whether a pod: owner of the rule matches the pod and the
// declaring container. Unit, cgroup and uid owners never admit a pod here.
func podOwns(o policy.Owners, p *corev1.Pod, container string) bool {
	id := policy.Pod{
		Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Labels: p.Labels,
		Container: container, PortsKnown: true,
	}
	for _, po := range o.Pods {
		if po.Matches(&id) {
			return true
		}
	}
	return false
}

func loopback(hostIP string) bool {
	a, err := netip.ParseAddr(hostIP)
	return err == nil && policy.IsLoopback(a)
}

func publishedOn(hostIP string) string {
	if hostIP == "" {
		return "every address"
	}
	return hostIP
}

// describeOwners lists a rule's owners in registry terms, pods first.
func describeOwners(o policy.Owners) string {
	var s []string
	for _, p := range o.Pods {
		d := "pod " + p.Namespace
		if len(p.Labels) > 0 {
			d += " " + policy.FormatLabels(p.Labels)
		}
		if p.Container != "" {
			d += " container " + p.Container
		}
		s = append(s, d)
	}
	for _, u := range o.Units {
		s = append(s, "unit "+u)
	}
	for _, c := range o.Cgroups {
		s = append(s, "cgroup "+c)
	}
	for _, u := range o.UIDs {
		s = append(s, fmt.Sprintf("uid %d", u))
	}
	d := strings.Join(s, ", ")
	if len(o.Pods) == 0 {
		d += " (none is a pod)"
	}
	return d
}
