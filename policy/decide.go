package policy

import (
	"net/netip"
	"path"
	"slices"
	"strings"

	"github.com/bindguard/bindguard/cgroups"
)

// BindAttempt is one bind() as the kernel programs see it.
type BindAttempt struct {
	Port     uint16
	Protocol Protocol
	// Family is the socket's family; an IPv4-mapped address on an IPv6
	// socket is FamilyIPv6. It does not change the verdict.
	Family  Family
	Address netip.Addr
	// Cgroup is the task's cgroup, a registry path relative to the cgroup2
	// root ("/system.slice/x.service"; "" or "/" for the root).
	Cgroup string
	// UID is the task's real uid.
	UID uint32
	// HostNetns is set when the socket is in the host network namespace.
	HostNetns bool
	// Pod is the binder's pod identity when its cgroup is a pod's; nil for a
	// host process.
	Pod *Pod
}

// Decision is the verdict on one bind.
type Decision struct {
	Verdict Verdict
	// Reason is ReasonNone when the bind is allowed.
	Reason Reason
	// Rule is the registry entry the rule judging the bind came from; nil
	// when no rule applies (undeclared, port 0, another network namespace,
	// another protocol).
	Rule *Origin
}

// Violation reports whether the decision is a violation (audited or denied).
func (d Decision) Violation() bool { return d.Reason != ReasonNone }

// DecideOptions say how owners resolve, as the loader resolves them when it
// loads the policy, and how the node runs.
type DecideOptions struct {
	// AllNetns judges binds in every network namespace, as `run --all-netns`.
	AllNetns bool
	// PodPorts is `run --pod-ports`; "" is PodPortsIgnore.
	PodPorts PodPortsMode
	// UnitRoot is the cgroup the system manager's units are found below
	// (see cgroups.UnitOf): the attach cgroup; "" is "/".
	UnitRoot string
	// Exists reports whether an owner cgroup (a registry path) exists. An
	// owner whose cgroup does not exist never matches: the loader leaves it
	// out. nil: every owner cgroup exists.
	Exists func(path string) bool
	// FindUnit returns the registry paths of the cgroups named unit, as
	// cgroups.FS.FindUnit does; of those, the one that is the system
	// manager's unit (cgroups.UnitOf) owns. nil: the task's own unit, by
	// cgroups.UnitOf, is found.
	FindUnit func(unit string) []string
}

// Decide is the reference for the verdict of the kernel programs
// (bpf/bindguard.c) on a bind under policy c on a node in mode. It follows
// the program's order, the first that applies deciding:
//
//  1. port 0 (ephemeral)                                  -> allow
//  2. neither TCP nor UDP                                 -> allow
//  3. outside the host netns, unless opts.AllNetns        -> allow
//  4. no rule for (protocol, port)                        -> undeclared
//  5. the rule is a removed port                          -> removed
//  6. the rule has owners and none is the binder          -> owner, but
//     pod-pending when the binder is a pod whose identity
//     is pending and the rule has pod owners
//  7. the rule is localhost-only, address not loopback    -> address
//  8. opts.PodPorts is require, the binder is a pod, and
//     no container of the pod declares (port, protocol)   -> pod-undeclared,
//     or pod-pending while the pod's identity or ports
//     are not known
//  9. -> allow
//
// A violation is audited when mode is not ModeEnforce or the rule is
// audit-only, denied otherwise; pod-pending is always audited, in either
// mode: a pod whose identity the runtime has not reported yet is never
// refused, its bind proceeds and is reported and counted.
//
// Pod checks come after the registry's: a port must be declared, owned and
// bound on the right address before the pod's own declaration matters, so a
// bind that breaks both is reported for the registry (which the platform
// owns) rather than for the pod spec.
//
// An owner matches when the task's uid is an owner uid; or its cgroup is an
// owner cgroup or below it (whole path components: /a/b is below /a, /ab is
// not); or its cgroup is the system manager's unit of an owner unit or below
// it (cgroups.InUnit); or its pod matches a pod owner (PodOwner.Matches).
// Owner cgroups resolve as the loader resolves them: one that does not
// exist never matches. Owners and tasks may sit at any depth (the kernel
// inherits memberships at mkdir, it walks no ancestors). The
// task's cgroup may be at any depth below its owner.
func Decide(c *Compiled, mode Mode, a BindAttempt, opts DecideOptions) Decision {
	if a.Port == 0 || (a.Protocol != TCP && a.Protocol != UDP) || (!a.HostNetns && !opts.AllNetns) {
		return Decision{Verdict: Allow}
	}
	rule := c.Lookup(a.Port, a.Protocol)
	var origin *Origin
	if rule != nil && rule.Origin >= 0 && rule.Origin < len(c.Origins) {
		origin = &c.Origins[rule.Origin]
	}
	reason := ruleReason(rule, a, opts)
	if reason == ReasonNone {
		reason = podPortsReason(a, opts.PodPorts)
	}
	v := Allow
	switch {
	case reason == ReasonNone:
	case reason == ReasonPodPending, mode != ModeEnforce, rule != nil && rule.Audit:
		v = Audit
	default:
		v = Deny
	}
	return Decision{Verdict: v, Reason: reason, Rule: origin}
}

// ruleReason is steps 4 to 7 of Decide: what the registry's rule says.
func ruleReason(rule *Rule, a BindAttempt, opts DecideOptions) Reason {
	switch {
	case rule == nil:
		return ReasonUndeclared
	case rule.Removed:
		return ReasonRemoved
	case !rule.Owners.Any() && !ownerMatches(rule.Owners, a, opts):
		if a.Pod != nil && a.Pod.Pending && len(rule.Owners.Pods) > 0 {
			return ReasonPodPending
		}
		return ReasonOwner
	case rule.Localhost && !IsLoopback(a.Address):
		return ReasonAddress
	}
	return ReasonNone
}

// podPortsReason is step 8 of Decide: whether the binder's pod declares the port.
func podPortsReason(a BindAttempt, mode PodPortsMode) Reason {
	if mode != PodPortsRequire || a.Pod == nil || a.Pod.Declares(a.Port, a.Protocol) {
		return ReasonNone
	}
	if a.Pod.Pending || !a.Pod.PortsKnown {
		return ReasonPodPending
	}
	return ReasonPodUndeclared
}

// ownerMatches reports whether the task's uid, cgroup, unit or pod owns the rule.
func ownerMatches(o Owners, a BindAttempt, opts DecideOptions) bool {
	if slices.Contains(o.UIDs, a.UID) {
		return true
	}
	task := cleanCgroup(a.Cgroup)
	for _, cg := range o.Cgroups {
		if ownerCgroupMatches(cg, task, opts.Exists) {
			return true
		}
	}
	for _, u := range o.Units {
		if unitMatches(u, task, opts) {
			return true
		}
	}
	return slices.ContainsFunc(o.Pods, func(p PodOwner) bool { return p.Matches(a.Pod) })
}

// unitMatches reports whether the task is in the system manager's unit u,
// and that unit's cgroup resolves as the loader resolves it.
func unitMatches(u, task string, opts DecideOptions) bool {
	root := opts.UnitRoot
	if root == "" {
		root = "/"
	}
	at, ok := cgroups.UnitCgroup(root, task, u)
	if !ok {
		return false
	}
	if opts.FindUnit != nil && !slices.Contains(opts.FindUnit(u), at) {
		return false
	}
	return ownerCgroupMatches(at, task, opts.Exists)
}

// ownerCgroupMatches reports whether the owner cgroup resolves, as the loader
// resolves it, and the task's cgroup is it or below it.
func ownerCgroupMatches(owner, task string, exists func(string) bool) bool {
	owner = cleanCgroup(owner)
	if !InCgroup(task, owner) {
		return false
	}
	return exists == nil || exists(owner)
}

// InCgroup reports whether the cgroup path is ancestor or below it, comparing
// whole path components: /a/b is in /a, /ab is not. Both are registry paths
// relative to the cgroup2 root; "" stands for the root.
func InCgroup(path, ancestor string) bool {
	path, ancestor = cleanCgroup(path), cleanCgroup(ancestor)
	if ancestor == "/" || path == ancestor {
		return true
	}
	return strings.HasPrefix(path, ancestor+"/")
}

func cleanCgroup(p string) string { return path.Clean("/" + p) }
