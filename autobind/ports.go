package autobind

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Set is a set of ports.
type Set map[uint16]bool

// ParseList parses the sysctl's list form: "", "8080" or "40000,40002-40005",
// with optional surrounding white space. Port 0 is refused, as the kernel
// refuses it. Ranges are merged before they are expanded, so the work is
// bounded by the input's length plus 65535 whatever the ranges.
func ParseList(s string) (Set, error) {
	out := Set{}
	s = strings.TrimSpace(s)
	if s == "" {
		return out, nil
	}
	var spans [][2]uint16
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := parsePort(lo)
		if err != nil {
			return nil, fmt.Errorf("port list %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = parsePort(hi); err != nil {
				return nil, fmt.Errorf("port list %q: %w", s, err)
			}
			if b < a {
				return nil, fmt.Errorf("port list %q: range %s goes down", s, part)
			}
		}
		spans = append(spans, [2]uint16{a, b})
	}
	slices.SortFunc(spans, func(x, y [2]uint16) int { return int(x[0]) - int(y[0]) })
	next := 0 // the first port not yet added
	for _, sp := range spans {
		for p := max(int(sp[0]), next); p <= int(sp[1]); p++ {
			out[uint16(p)] = true
		}
		next = max(next, int(sp[1])+1)
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q: want 1-65535", s)
	}
	return uint16(n), nil
}

// String is the list form the kernel prints: sorted, runs as ranges.
func (s Set) String() string {
	ports := s.Sorted()
	var b strings.Builder
	for i := 0; i < len(ports); {
		j := i
		for j+1 < len(ports) && ports[j+1] == ports[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(int(ports[i])))
		if j > i {
			b.WriteString("-" + strconv.Itoa(int(ports[j])))
		}
		i = j + 1
	}
	return b.String()
}

// Sorted returns the ports in order.
func (s Set) Sorted() []uint16 {
	out := make([]uint16, 0, len(s))
	for p := range s {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// Of returns the set of ports; 0 is left out.
func Of(ports []uint16) Set {
	s := Set{}
	for _, p := range ports {
		if p != 0 {
			s[p] = true
		}
	}
	return s
}
