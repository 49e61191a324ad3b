package policy

import (
	"fmt"
	"slices"
	"strings"
)

// This file is the vocabulary that events, counters, metrics and the command
// line share: each value's Go type and its name. Other packages map their
// encodings (the kernel's BG_* values, flags) onto these, in one place each.

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

// Verdicts lists the verdicts.
func Verdicts() []Verdict { return []Verdict{Allow, Audit, Deny} }

func (v Verdict) String() string { return string(v) }

// Reason is why a bind is a violation; "" for none.
type Reason string

// Reasons for a violation, as events and counters name them.
const (
	ReasonNone       Reason = ""
	ReasonUndeclared Reason = "undeclared" // no rule for (protocol, port)
	ReasonRemoved    Reason = "removed"    // the port is in the registry's removed list
	ReasonOwner      Reason = "owner"      // the rule has owners; none is the binder
	// ReasonPodPending: the binder is in a pod whose identity (or declared
	// ports) the runtime has not reported yet, and the verdict needs it.
	// Never denied: always audited and counted.
	ReasonPodPending Reason = "pod-pending"
	ReasonAddress    Reason = "address" // the rule is localhost-only; the address is not loopback
	// ReasonPodUndeclared: with PodPortsRequire, the binder's pod declares
	// no container port or host port for (port, protocol).
	ReasonPodUndeclared Reason = "pod-undeclared"
	// ReasonAutobind: a port the kernel chose (bind(0)) that this binder may
	// not bind. Not a step of Decide, which judges the port a caller names:
	// the post_bind programs and scan report it.
	ReasonAutobind Reason = "autobind"
)

// Reasons lists the violation reasons in verdict order: the order in which
// Decide (and the kernel program) tests them.
func Reasons() []Reason {
	return []Reason{ReasonUndeclared, ReasonRemoved, ReasonOwner, ReasonPodPending, ReasonAddress, ReasonPodUndeclared}
}

func (r Reason) String() string { return string(r) }

// ParseReason accepts a reason's name.
func ParseReason(s string) (Reason, error) {
	if r := Reason(s); slices.Contains(Reasons(), r) {
		return r, nil
	}
	return "", fmt.Errorf("reason %q: want one of %s", s, joinNames(Reasons()))
}

// Mode says whether a violation is only reported (audit) or refused (enforce).
type Mode string

const (
	ModeAudit   Mode = "audit"
	ModeEnforce Mode = "enforce"
)

// Modes lists the modes.
func Modes() []Mode { return []Mode{ModeAudit, ModeEnforce} }

func (m Mode) String() string { return string(m) }

// ParseMode accepts "audit" or "enforce".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeAudit, ModeEnforce:
		return Mode(s), nil
	}
	return "", fmt.Errorf("mode %q: must be audit or enforce", s)
}

// Family is a socket's address family as the kernel programs report it.
type Family uint8

const (
	// FamilyIPv4 is an AF_INET socket.
	FamilyIPv4 Family = 4
	// FamilyIPv6 is an AF_INET6 socket, IPv4-mapped addresses included.
	FamilyIPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case FamilyIPv4:
		return "ipv4"
	case FamilyIPv6:
		return "ipv6"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// PodPortsMode says whether a pod may bind only ports its containers
// declare (`run --pod-ports`).
type PodPortsMode string

const (
	// PodPortsIgnore: declared ports are not checked. The zero value means it.
	PodPortsIgnore PodPortsMode = "ignore"
	// PodPortsRequire: a pod binding a port none of its containers declares
	// (containerPort or hostPort, with the protocol) is a pod-undeclared
	// violation. Host processes are not affected.
	PodPortsRequire PodPortsMode = "require"
)

func (m PodPortsMode) String() string {
	if m == "" {
		return string(PodPortsIgnore)
	}
	return string(m)
}

// ParsePodPortsMode accepts "ignore" or "require".
func ParsePodPortsMode(s string) (PodPortsMode, error) {
	switch PodPortsMode(s) {
	case PodPortsIgnore, PodPortsRequire:
		return PodPortsMode(s), nil
	}
	return "", fmt.Errorf("pod ports %q: want ignore or require", s)
}

func joinNames[T ~string](vs []T) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}
