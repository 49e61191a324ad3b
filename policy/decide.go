package policy

import (
	"net/netip"
	"path"
	"strings"
)

// BindAttempt is one bind() as the kernel programs see it.
type BindAttempt struct {
	Port     uint16
	Protocol Protocol
	// Family is the socket's family, 4 or 6; an IPv4-mapped address on an
	// IPv6 socket is family 6. It does not change the verdict.
	Family  int
	Address netip.Addr
	// Cgroup is the task's cgroup, a registry path relative to the cgroup2
	// root ("/system.slice/x.service"; "" or "/" for the root).
	Cgroup string
	// UID is the task's real uid.
	UID uint32
	// HostNetns is set when the socket is in the host network namespace.
	HostNetns bool
}

// Verdict is what becomes of a bind.
type Verdict string

const (
	// Allow: no violation.
	Allow Verdict = "allow"
	// Audit: a violation that is reported; the bind proceeds.
	Audit Verdict = "audit"
	// Deny: a violation that is reported; the bind fails with EPERM.
	Deny Verdict = "deny"
)

// Reasons for a violation, as events and counters name them.
const (
	ReasonUndeclared = "undeclared" // no rule for (protocol, port)
	ReasonOwner      = "owner"      // the rule has owners; neither the task's cgroup chain nor its uid is one
	ReasonAddress    = "address"    // the rule is localhost-only; the address is not loopback
	ReasonRemoved    = "removed"    // the port is in the registry's removed list
)

// Decision is the verdict on one bind.
type Decision struct {
	Verdict Verdict
	// Reason is "" when the bind is allowed, else one of the Reason constants.
	Reason string
	// Rule is the registry entry the rule judging the bind came from; nil
	// when no rule applies (undeclared, port 0, another network namespace,
	// another protocol).
	Rule *Origin
}

// Violation reports whether the decision is a violation (audited or denied).
func (d Decision) Violation() bool { return d.Reason != "" }

// DecideOptions say how owners resolve, as the loader resolves them when it
// loads the policy.
type DecideOptions struct {
	// AllNetns judges binds in every network namespace, as `run --all-netns`.
	AllNetns bool
	// Exists reports whether an owner cgroup (a registry path) exists. An
	// owner whose cgroup does not exist never matches: the loader leaves it
	// out. nil: every owner cgroup exists.
	Exists func(path string) bool
	// FindUnit returns the registry paths of every cgroup named unit, as
	// cgroups.FS.FindUnit does; the loader makes each an owner. nil: a unit
	// owns every existing cgroup of the task's path named like it.
	FindUnit func(unit string) []string
}

// Decide is the reference for the verdict of the kernel programs
// (bpf/bindguard.c) on a bind under policy c on a node in mode. It follows
// the program's order:
//
//  1. port 0 (ephemeral)                                -> allow
//  2. neither TCP nor UDP                               -> allow
//  3. outside the host netns, unless opts.AllNetns      -> allow
//  4. no rule for (protocol, port)                      -> undeclared
//  5. the rule is a removed port                        -> removed
//  6. the rule has owners and none matches the task     -> owner
//  7. the rule is localhost-only, address not loopback  -> address
//  8. -> allow
//
// A violation is audited when mode is not ModeEnforce or the rule is
// audit-only, denied otherwise.
//
// An owner matches when the task's uid is an owner uid, or its cgroup is an
// owner cgroup or below it (whole path components: /a/b is below /a, /ab is
// not). Owner cgroups resolve as loader.Encode resolves them: one that does
// not exist, or lies deeper than MaxCgroupDepth, never matches; a unit owner
// stands for every cgroup opts.FindUnit finds.
func Decide(c *Compiled, mode Mode, a BindAttempt, opts DecideOptions) Decision {
	allow := Decision{Verdict: Allow}
	if a.Port == 0 {
		return allow
	}
	if a.Protocol != TCP && a.Protocol != UDP {
		return allow
	}
	if !a.HostNetns && !opts.AllNetns {
		return allow
	}
	rule := c.Lookup(a.Port, a.Protocol)
	var origin *Origin
	if rule != nil && rule.Origin >= 0 && rule.Origin < len(c.Origins) {
		origin = &c.Origins[rule.Origin]
	}
	var reason string
	switch {
	case rule == nil:
		reason = ReasonUndeclared
	case rule.Removed:
		reason = ReasonRemoved
	case !rule.Owners.Any() && !ownerMatches(rule.Owners, a, opts):
		reason = ReasonOwner
	case rule.Localhost && !IsLoopback(a.Address):
		reason = ReasonAddress
	default:
		return Decision{Verdict: Allow, Rule: origin}
	}
	v := Deny
	if mode != ModeEnforce || (rule != nil && rule.Audit) {
		v = Audit
	}
	return Decision{Verdict: v, Reason: reason, Rule: origin}
}

// ownerMatches reports whether the task's uid or one of its cgroup ancestors owns the rule.
func ownerMatches(o Owners, a BindAttempt, opts DecideOptions) bool {
	for _, uid := range o.UIDs {
		if uid == a.UID {
			return true
		}
	}
	task := cleanCgroup(a.Cgroup)
	for _, cg := range o.Cgroups {
		if ownerCgroupMatches(cg, task, opts.Exists) {
			return true
		}
	}
	for _, u := range o.Units {
		var paths []string
		if opts.FindUnit != nil {
			paths = opts.FindUnit(u)
		} else {
			paths = unitAncestors(task, u)
		}
		for _, p := range paths {
			if ownerCgroupMatches(p, task, opts.Exists) {
				return true
			}
		}
	}
	return false
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

// unitAncestors returns the cgroups of the task's path named unit.
func unitAncestors(task, unit string) []string {
	var out []string
	for p := task; p != "/"; p = path.Dir(p) {
		if path.Base(p) == unit {
			out = append(out, p)
		}
	}
	return out
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

// cgroupDepth is the number of components of a clean registry path ("/" is 0).
func cgroupDepth(p string) int {
	if p == "/" {
		return 0
	}
	return strings.Count(p, "/")
}
