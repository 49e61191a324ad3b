package daemon

import (
	"strconv"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bindguard/bindguard/loader"
	"github.com/bindguard/bindguard/policy"
)

// Cardinality caps of bindguard_violations_total (docs/rollout.md, "Metrics").
const (
	// MaxUndeclaredPorts is how many distinct undeclared (port, protocol)
	// pairs get a series of their own; later ones are counted under
	// port="other", protocol="".
	MaxUndeclaredPorts = 64
	// MaxPods is how many distinct (namespace, pod) binders get a series of
	// their own; later ones are counted under namespace="other", pod="other".
	MaxPods = 128
	// otherLabel is the value that collects what is beyond a cap.
	otherLabel = "other"
)

// violationLabels are the labels of bindguard_violations_total, in order.
//
//	entry       the registry entry that matched, FILE:LINE; "" for an
//	            undeclared port, "unknown" when the entry's policy is gone
//	process     the entry's process; "" when entry is "" or "unknown"
//	reason      undeclared, owner, address, removed
//	verdict     audit (the bind proceeded), deny (it failed with EPERM)
//	owner_kind  the kinds of owner the entry lists, joined by "+" in the
//	            order cgroup, unit, uid, pod; "none" when anyone may bind
//	            (and for undeclared ports)
//	port        the port, for undeclared ports only (capped); else ""
//	protocol    tcp or udp, for undeclared ports only; else ""
//	namespace   the binder's pod namespace when it runs in a pod (capped)
//	pod         the binder's pod name when it runs in a pod (capped)
var violationLabels = []string{"entry", "process", "reason", "verdict", "owner_kind", "port", "protocol", "namespace", "pod"}

// violations keeps bindguard_violations_total and its caps. It is fed by
// the event reader and by policy applies, which run on different goroutines.
type violations struct {
	vec *prometheus.CounterVec

	mu         sync.Mutex
	undeclared map[string]bool // "port/protocol" with a series of its own
	pods       map[string]bool // "namespace/pod" with a series of its own
	entries    map[string]entryInfo
}

// entryInfo is what the labels need to know about one registry entry.
type entryInfo struct {
	process   string
	ownerKind string
}

func newViolations() *violations {
	return &violations{
		vec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "bindguard_violations_total",
			Help: "Violating bind() calls by registry entry (FILE:LINE), reason, verdict and the entry's owner kinds; " +
				"undeclared ports by port (first 64, then \"other\"); pod binders by namespace and pod. " +
				"Counted from events (1 + suppressed each): exact, lagging by what rate limiting still holds.",
		}, violationLabels),
		undeclared: map[string]bool{},
		pods:       map[string]bool{},
		entries:    map[string]entryInfo{},
	}
}

// applied creates, at zero, every series the policy in force can produce
// with no pod binder: per entry, each reason its rules can give, with the
// verdict the node's mode gives them; and the undeclared series port="other".
// Series of entries no longer in force keep their counts.
func (v *violations) applied(c *policy.Compiled, mode policy.Mode) {
	type key struct {
		origin  int
		reason  loader.Reason
		verdict string
	}
	kinds := map[int]map[string]bool{}
	seen := map[key]bool{}
	for _, r := range c.Rules {
		if kinds[r.Origin] == nil {
			kinds[r.Origin] = map[string]bool{}
		}
		addOwnerKinds(kinds[r.Origin], r.Owners)
		verdict := "deny"
		if mode != policy.ModeEnforce || r.Audit {
			verdict = "audit"
		}
		for _, reason := range ruleReasons(r) {
			seen[key{r.Origin, reason, verdict}] = true
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for i, o := range c.Origins {
		v.entries[o.Pos.FileLine()] = entryInfo{process: o.Process, ownerKind: ownerKind(kinds[i])}
	}
	for k := range seen {
		o := c.Origins[k.origin]
		info := v.entries[o.Pos.FileLine()]
		v.vec.WithLabelValues(o.Pos.FileLine(), info.process, k.reason.String(), k.verdict, info.ownerKind, "", "", "", "")
	}
	verdict := "deny"
	if mode != policy.ModeEnforce {
		verdict = "audit"
	}
	v.vec.WithLabelValues("", "", loader.ReasonUndeclared.String(), verdict, "none", otherLabel, "", "", "")
}

// ruleReasons lists the violations a rule can produce.
func ruleReasons(r policy.Rule) []loader.Reason {
	if r.Removed {
		return []loader.Reason{loader.ReasonRemoved}
	}
	var out []loader.Reason
	if !r.Owners.Any() {
		out = append(out, loader.ReasonOwner)
	}
	if r.Localhost {
		out = append(out, loader.ReasonAddress)
	}
	return out
}

func addOwnerKinds(set map[string]bool, o policy.Owners) {
	for kind, n := range map[string]int{"cgroup": len(o.Cgroups), "unit": len(o.Units), "uid": len(o.UIDs), "pod": len(o.Pods)} {
		if n > 0 {
			set[kind] = true
		}
	}
}

// ownerKind joins the kinds present, in a fixed order, or says "none".
func ownerKind(set map[string]bool) string {
	var out []string
	for _, k := range []string{"cgroup", "unit", "uid", "pod"} {
		if set[k] {
			out = append(out, k)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, "+")
}

// count adds one event, and the events rate limiting folded into it, to its
// series. origin is the entry the event's rule came from (nil when
// undeclared or unknown), pod the binder's identity when it runs in a pod.
func (v *violations) count(ev loader.Event, origin *policy.Origin, pod *policy.Pod) {
	verdict := "audit"
	if ev.Denied {
		verdict = "deny"
	}
	entry, process, kind, port, proto := "", "", "none", "", ""
	v.mu.Lock()
	switch {
	case origin != nil:
		entry = origin.Pos.FileLine()
		info, ok := v.entries[entry]
		process, kind = origin.Process, info.ownerKind
		if !ok {
			kind = "none"
		}
	case ev.Reason == loader.ReasonUndeclared:
		port, proto = v.capPort(ev.Port, ev.Protocol)
	default:
		entry = "unknown"
	}
	ns, name := v.capPod(pod)
	v.mu.Unlock()
	v.vec.WithLabelValues(entry, process, ev.Reason.String(), verdict, kind, port, proto, ns, name).
		Add(1 + float64(ev.Suppressed))
}

// capPort returns the port labels of an undeclared port. Called with v.mu held.
func (v *violations) capPort(port uint16, proto policy.Protocol) (string, string) {
	p := strconv.Itoa(int(port))
	k := p + "/" + proto.String()
	if !v.undeclared[k] {
		if len(v.undeclared) >= MaxUndeclaredPorts {
			return otherLabel, ""
		}
		v.undeclared[k] = true
	}
	return p, proto.String()
}

// capPod returns the pod labels of a binder. Called with v.mu held.
func (v *violations) capPod(pod *policy.Pod) (string, string) {
	if !pod.Known() {
		return "", ""
	}
	k := pod.Namespace + "/" + pod.Name
	if !v.pods[k] {
		if len(v.pods) >= MaxPods {
			return otherLabel, otherLabel
		}
		v.pods[k] = true
	}
	return pod.Namespace, pod.Name
}
