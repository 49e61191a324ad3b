package autobind

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/bindguard/bindguard/policy"
)

// Restricted returns the ports of c whose rules make some bind a violation
// (owners, localhost-only, removed), once each, sorted: the ports to keep out
// of autobind.
func Restricted(c *policy.Compiled) []uint16 {
	s := Set{}
	for _, r := range c.Rules {
		if restricts(r) {
			s[r.Port] = true
		}
	}
	return s.Sorted()
}

func restricts(r policy.Rule) bool {
	return r.Removed || r.Localhost || !r.Owners.Any()
}

// Conflict is a restricted port inside the ephemeral range: one the kernel
// may hand out to a process that never named it, unless it is reserved.
type Conflict struct {
	Port     uint16
	Protocol policy.Protocol
	// Why: "owners", "localhost" or "removed".
	Why    string
	Origin *policy.Origin
	// Reserved is set when the port is in ip_local_reserved_ports now.
	Reserved bool
}

func (c Conflict) String() string {
	where := ""
	if c.Origin != nil {
		where = c.Origin.Pos.FileLine() + ": "
	}
	state := "not reserved: the kernel may give it to any process that binds port 0, listens, connects or sends without a bind"
	if c.Reserved {
		state = "reserved (ip_local_reserved_ports) now, so the kernel does not hand it out"
	}
	return fmt.Sprintf("%sport %d/%s (%s) lies inside ip_local_port_range: %s", where, c.Port, c.Protocol, c.Why, state)
}

// PortRange reads an ip_local_port_range file: "32768\t60999".
func PortRange(path string) (lo, hi uint16, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("autobind: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("autobind: %s: want two ports, got %q", path, b)
	}
	l, err1 := strconv.ParseUint(f[0], 10, 16)
	h, err2 := strconv.ParseUint(f[1], 10, 16)
	if err1 != nil || err2 != nil || l > h {
		return 0, 0, fmt.Errorf("autobind: %s: want two ports, low first, got %q", path, b)
	}
	return uint16(l), uint16(h), nil
}

// InRange returns the restricted ports of c inside the host's
// ip_local_port_range, marking those reserved now; check and compile warn
// with them.
func InRange(c *policy.Compiled) ([]Conflict, error) {
	lo, hi, err := PortRange(PortRangeSysctl)
	if err != nil {
		return nil, err
	}
	reserved, err := readList(ReservedPortsSysctl)
	if err != nil {
		return nil, fmt.Errorf("autobind: %w", err)
	}
	return inRange(c, lo, hi, reserved), nil
}

func inRange(c *policy.Compiled, lo, hi uint16, reserved Set) []Conflict {
	var out []Conflict
	for _, r := range c.Rules {
		if !restricts(r) || r.Port < lo || r.Port > hi {
			continue
		}
		cf := Conflict{Port: r.Port, Protocol: r.Protocol, Why: "owners", Reserved: reserved[r.Port]}
		switch {
		case r.Removed:
			cf.Why = "removed"
		case r.Localhost:
			cf.Why = "localhost"
		}
		if r.Origin >= 0 && r.Origin < len(c.Origins) {
			cf.Origin = &c.Origins[r.Origin]
		}
		out = append(out, cf)
	}
	return out
}
