package policy

import (
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// This file checks single values; the parser and Validate share it, so a
// registry built in memory is held to the same rules as one parsed from YAML.

// parsePorts parses "2379", "9200-9219" or "9200 - 9219".
func parsePorts(s string) (PortRange, error) {
	lo, hi, isRange := strings.Cut(s, "-")
	if !isRange {
		p, err := parsePort(s)
		return PortRange{p, p}, err
	}
	if !isDigits(lo) || !isDigits(hi) {
		return PortRange{}, fmt.Errorf("malformed port range %q: want LO-HI like \"9200-9219\"", s)
	}
	l, err := parsePort(lo)
	if err != nil {
		return PortRange{}, fmt.Errorf("port range %q: %w", s, err)
	}
	h, err := parsePort(hi)
	if err != nil {
		return PortRange{}, fmt.Errorf("port range %q: %w", s, err)
	}
	if l > h {
		return PortRange{}, fmt.Errorf("port range %q is reversed: write \"%d-%d\"", s, h, l)
	}
	return PortRange{l, h}, nil
}

func isDigits(s string) bool {
	s = strings.TrimSpace(s)
	return s != "" && strings.TrimLeft(s, "0123456789") == ""
}

func parsePort(s string) (uint16, error) {
	s = strings.TrimSpace(s)
	if !isDigits(s) {
		return 0, fmt.Errorf("port %q is not a number: want 1-65535 or a range like \"9200-9219\"", s)
	}
	if !isDecimal(s) {
		return 0, notDecimal("port", s)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > 65535 {
		return 0, fmt.Errorf("port %s is out of range: want 1-65535", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("port 0 is not allowed: it asks the kernel for an ephemeral port, which bindguard never judges; want 1-65535")
	}
	return uint16(n), nil
}

// isDecimal reports whether s is a plain decimal integer: digits only, with
// no sign, no leading 0 (but "0" itself), no base prefix and no "_".
func isDecimal(s string) bool {
	return s == "0" || (s != "" && s[0] >= '1' && s[0] <= '9' && strings.TrimLeft(s, "0123456789") == "")
}

// notDecimal is the error for a number not written in plain decimal, as
// 0443 (which YAML reads as octal 291), 0x1bb, 0o14, +443 or 1_000.
func notDecimal(what, s string) error {
	t := strings.TrimLeft(s, "0")
	if t == "" {
		t = "0"
	}
	if t != s && isDecimal(t) {
		return fmt.Errorf("%s %s has a leading 0: write %ss in decimal, like %s (YAML reads a leading 0 as octal)", what, s, what, t)
	}
	return fmt.Errorf("%s %s is not a plain decimal number: write %ss in decimal, without a leading 0, 0x, 0o, 0b, + or _", what, s, what)
}

// yamlDecimal reads the value of a YAML integer that must be written in
// plain decimal; a "-" is kept so that the caller reports it out of range.
func yamlDecimal(what, s string) (int64, error) {
	digits := strings.TrimPrefix(s, "-")
	if !isDecimal(digits) {
		return 0, notDecimal(what, s)
	}
	return strconv.ParseInt(s, 10, 64)
}

func checkPorts(r PortRange) error {
	switch {
	case r.Lo == 0:
		return fmt.Errorf("port 0 is not allowed: want 1-65535")
	case r.Lo > r.Hi:
		return fmt.Errorf("port range %d-%d is reversed: write %d-%d", r.Lo, r.Hi, r.Hi, r.Lo)
	}
	return nil
}

// unsupportedProtocols are transport protocols people may write that the
// kernel programs do not judge.
var unsupportedProtocols = map[string]string{
	"sctp":     "SCTP",
	"dccp":     "DCCP",
	"udplite":  "UDP-Lite",
	"udp-lite": "UDP-Lite",
	"icmp":     "ICMP",
	"raw":      "raw",
}

func parseProtocol(s string) (Protocol, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	switch l {
	case "tcp":
		return TCP, nil
	case "udp":
		return UDP, nil
	case "mptcp":
		return 0, fmt.Errorf("protocol %q: write tcp; MPTCP binds are checked as TCP", s)
	case "quic", "http3":
		return 0, fmt.Errorf("protocol %q: QUIC runs over UDP; write udp", s)
	}
	if name, ok := unsupportedProtocols[l]; ok {
		return 0, fmt.Errorf("protocol %q is not supported: bindguard checks TCP and UDP binds (MPTCP counts as TCP); %s sockets are not judged", s, name)
	}
	return 0, fmt.Errorf("unknown protocol %q: want tcp, udp or a list of them", s)
}

func checkProtocols(ps []Protocol) error {
	var seen [3]bool
	for _, p := range ps {
		if p != TCP && p != UDP {
			return fmt.Errorf("unknown protocol %v: want tcp or udp", p)
		}
		if seen[p] {
			return fmt.Errorf("protocol %v is listed twice", p)
		}
		seen[p] = true
	}
	return nil
}

func checkProcess(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("process is empty: name the process that binds the port")
	}
	return checkText("process", s)
}

// checkText refuses control characters (and invalid UTF-8) in a text field:
// the value reaches tables, logs and events, where a NUL, an escape sequence
// or a newline would forge or garble output, and process names key merges.
func checkText(field, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s %q is not valid UTF-8", field, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains the control character %U: control characters are not allowed in %s", field, s, r, field)
		}
	}
	return nil
}

func parseBind(s string) (Bind, error) {
	switch Bind(s) {
	case BindAny, BindLocalhost:
		return Bind(s), nil
	case "":
		return BindAny, nil
	}
	return "", fmt.Errorf("bind %q: want any or localhost", s)
}

// checkCgroup checks an owner cgroup path: absolute, clean, relative to the
// cgroup2 root, and no deeper than the kernel program looks.
func checkCgroup(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("cgroup is empty: want a path like /system.slice/etcd.service")
	case !strings.HasPrefix(p, "/"):
		return fmt.Errorf("cgroup %q is not absolute: want a path from the cgroup2 root like /system.slice/etcd.service", p)
	case p == "/":
		return fmt.Errorf("cgroup \"/\" is the root and holds every process: omit owners to let any process bind")
	case checkText("cgroup", p) != nil:
		return checkText("cgroup", p)
	case strings.HasPrefix(p, "/sys/fs/cgroup/") || p == "/sys/fs/cgroup":
		return fmt.Errorf("cgroup %q: write the path relative to the cgroup2 mount, without /sys/fs/cgroup", p)
	}
	for _, c := range strings.Split(p[1:], "/") {
		if c == ".." {
			return fmt.Errorf("cgroup %q contains \"..\": want a clean absolute path", p)
		}
		if len(c) > 255 {
			return fmt.Errorf("cgroup %q has a component longer than 255 bytes", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("cgroup %q is not clean: write %q", p, path.Clean(p))
	}
	return nil
}

// unitSuffixes are the systemd unit types that own a cgroup with processes.
var unitSuffixes = []string{".service", ".scope", ".slice", ".socket", ".mount", ".swap"}

// idleUnitSuffixes are unit types that run no processes of their own.
var idleUnitSuffixes = []string{".target", ".timer", ".path", ".device", ".automount"}

var unitNameRE = regexp.MustCompile(`^[A-Za-z0-9:_.\\@-]+$`)

func checkUnit(u string) error {
	if u == "" {
		return fmt.Errorf("unit is empty: want a systemd unit name like etcd.service")
	}
	for _, s := range idleUnitSuffixes {
		if strings.HasSuffix(u, s) && len(u) > len(s) {
			return fmt.Errorf("unit %q runs no processes of its own: name the unit it starts (a .service)", u)
		}
	}
	var suffix string
	for _, s := range unitSuffixes {
		if strings.HasSuffix(u, s) {
			suffix = s
		}
	}
	if suffix == "" {
		return fmt.Errorf("unit %q has no unit suffix: want a name ending in .service, .scope, .slice, .socket, .mount or .swap", u)
	}
	prefix := strings.TrimSuffix(u, suffix)
	switch {
	case len(u) > 255:
		return fmt.Errorf("unit %q is longer than 255 bytes", u)
	case prefix == "" || !unitNameRE.MatchString(prefix) || strings.Contains(prefix, "/"):
		return fmt.Errorf("unit %q is not a valid systemd unit name", u)
	case strings.HasSuffix(prefix, "@"):
		return fmt.Errorf("unit %q is a template: name an instance like %s", u, strings.TrimSuffix(prefix, "@")+"@NAME"+suffix)
	}
	return nil
}

func checkUID(n uint64) error {
	if n > 4294967294 {
		return fmt.Errorf("uid %d is out of range: want 0-4294967294", n)
	}
	return nil
}
