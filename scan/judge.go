package scan

import "github.com/bindguard/bindguard/policy"

// What scan reports beyond policy's verdicts and reasons.
const (
	// VerdictEphemeral: the kernel chose the port and the registry does not
	// restrict it. No bind program judged a port, so there is nothing to
	// allow or deny; not a violation.
	VerdictEphemeral = "ephemeral"
	// ReasonAutobind: the kernel chose the port, and the registry restricts
	// it (owners, localhost-only, removed) so that a bind of it by this
	// socket's cgroup and uid would have been a violation. The autobind
	// bypass: the bind programs saw port 0 or nothing.
	ReasonAutobind = string(policy.ReasonAutobind)
)

// Finding is a socket and what scan makes of it.
type Finding struct {
	Socket
	// Decision is policy.Decide's verdict on a bind of the socket's address
	// and port from its cgroup by its owner: for an explicit port the
	// verdict the bind programs gave it.
	Decision policy.Decision
	// Verdict and Reason are what scan reports: the Decision's, except for
	// a port the kernel chose, which is VerdictEphemeral with no reason, or,
	// on a port the registry restricts, the Decision's verdict with
	// ReasonAutobind. Reason is "" when the socket is no violation.
	Verdict string
	Reason  string
}

// Violation reports whether the finding counts against the exit code.
func (f Finding) Violation() bool { return f.Reason != "" }

// Judge decides each socket as the bind programs judged its bind: in the
// host network namespace, under policy c on a node in mode, with the
// socket's cgroup and owner uid. A socket whose cgroup is unknown is judged
// as a bind from the cgroup2 root. Sockets from procfs (Bound ==
// BoundUnknown) are judged as explicit binds: procfs cannot tell.
func Judge(c *policy.Compiled, mode policy.Mode, socks []Socket, opts policy.DecideOptions) []Finding {
	out := make([]Finding, len(socks))
	for i, s := range socks {
		a := policy.BindAttempt{Port: s.Port, Protocol: s.Protocol, Family: policy.Family(s.Family), Address: s.Address,
			Cgroup: s.Cgroup, UID: s.UID, HostNetns: true}
		d := policy.Decide(c, mode, a, opts)
		f := Finding{Socket: s, Decision: d, Verdict: string(d.Verdict), Reason: string(d.Reason)}
		if s.Bound == BoundKernel {
			f.Verdict, f.Reason = VerdictEphemeral, ""
			if d.Violation() && string(d.Reason) != string(policy.ReasonUndeclared) {
				f.Verdict, f.Reason = string(d.Verdict), ReasonAutobind
			}
		}
		out[i] = f
	}
	return out
}

// Summary counts findings.
type Summary struct {
	Sockets int
	Allowed int
	// Ephemeral counts sockets on unrestricted ports the kernel chose.
	Ephemeral int
	// Violations counts violations by reason; Audited and Denied by verdict.
	Violations map[string]int
	Audited    int
	Denied     int
}

// Summarize counts findings by verdict and reason.
func Summarize(fs []Finding) Summary {
	s := Summary{Sockets: len(fs), Violations: map[string]int{}}
	for _, f := range fs {
		switch f.Verdict {
		case string(policy.Allow):
			s.Allowed++
		case VerdictEphemeral:
			s.Ephemeral++
		case string(policy.Audit):
			s.Audited++
		case string(policy.Deny):
			s.Denied++
		}
		if f.Reason != "" {
			s.Violations[f.Reason]++
		}
	}
	return s
}
