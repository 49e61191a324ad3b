package policy

import (
	"fmt"
	"net/netip"
)

// Protocol is a transport protocol a registry entry can declare.
type Protocol uint8

const (
	TCP Protocol = 1
	UDP Protocol = 2
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	}
	return fmt.Sprintf("protocol(%d)", uint8(p))
}

// Pos is a place in registry input.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string {
	if p.Col > 0 {
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// FileLine is the "file:line" form used in events and in compile output.
func (p Pos) FileLine() string { return fmt.Sprintf("%s:%d", p.File, p.Line) }

// Limits bound what one compiled policy may hold. They mirror the size of the
// kernel maps (see bpf/bindguard.h) and are checked before anything loads.
const (
	// MaxMapEntries bounds one node's policy: port rules, owner entries and
	// the meta entry together. The kernel keeps rules in a fixed array (one
	// element per port and protocol) and owners in a map of this capacity.
	MaxMapEntries = 1 << 18
	// MaxOwnersPerRule bounds the owners one port may list.
	MaxOwnersPerRule = 64
	// MaxOwnerSets bounds the distinct owner lists of one node's policy:
	// each is one bit of the membership bitmap every owner cgroup carries
	// (BG_OWNER_SETS in bpf/bindguard.h).
	MaxOwnerSets = 512
)

// Origin is the registry entry a compiled rule came from.
type Origin struct {
	Pos     Pos
	Process string
	Removed bool
}

// Owners is who may bind a port. The zero value (no owners) means anyone.
type Owners struct {
	// Cgroups are paths relative to the cgroup2 root ("/system.slice/x.service");
	// a task matches when its cgroup is the path or below it.
	Cgroups []string
	// Units are systemd unit names; each stands for the system manager's
	// unit of that name and everything below it (see cgroups.UnitOf): never
	// a cgroup of that name in a delegated subtree.
	Units []string
	UIDs  []uint32
	// Pods are Kubernetes pod owners (see PodOwner).
	Pods []PodOwner
}

// Any reports whether the owner list is empty, so anyone may bind.
func (o Owners) Any() bool { return o.Count() == 0 }

// Count is the number of owners listed.
func (o Owners) Count() int { return len(o.Cgroups) + len(o.Units) + len(o.UIDs) + len(o.Pods) }

// Rule is what the kernel holds for one (port, protocol) on one node.
type Rule struct {
	Port     uint16
	Protocol Protocol
	// Removed marks a port freed by a removed feature: any bind is a violation.
	Removed bool
	// Localhost: only 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104 may be bound.
	Localhost bool
	// Audit: a violation of this rule is only audited even when the node enforces.
	Audit  bool
	Owners Owners
	// Origin indexes Compiled.Origins.
	Origin int
}

// Compiled is the policy for one node: exactly what the kernel maps hold.
type Compiled struct {
	NodeLabels map[string]string
	// Rules are sorted by protocol, then port; at most one per (port, protocol).
	Rules   []Rule
	Origins []Origin
	// Digest is a hex SHA-256 over the registry input files, for status.
	Digest string
}

// Lookup returns the rule for (port, protocol), or nil when the port is undeclared.
func (c *Compiled) Lookup(port uint16, proto Protocol) *Rule {
	lo, hi := 0, len(c.Rules)
	for lo < hi {
		m := (lo + hi) / 2
		r := &c.Rules[m]
		if r.Protocol < proto || (r.Protocol == proto && r.Port < port) {
			lo = m + 1
		} else {
			hi = m
		}
	}
	if lo < len(c.Rules) && c.Rules[lo].Protocol == proto && c.Rules[lo].Port == port {
		return &c.Rules[lo]
	}
	return nil
}

// IsLoopback reports whether addr is a loopback address in the sense of
// `bind: localhost`: 127.0.0.0/8, ::1, or an IPv4-mapped 127.0.0.0/8.
func IsLoopback(addr netip.Addr) bool {
	return addr.Unmap().IsLoopback()
}
