package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

const (
	// APIVersion and Kind identify a registry document.
	APIVersion = "bindguard.io/v1"
	Kind       = "PortRegistry"
)

// maxNodeVisits bounds how many YAML nodes one file may expand to through
// aliases, so that a "billion laughs" document fails instead of hanging.
const maxNodeVisits = 10_000_000

// Parse parses one registry file; name is used in positions and the digest.
// A file may hold several YAML documents, each a PortRegistry.
//
// Every problem is reported, not just the first: the error is an ErrorList,
// each error once, and parsing stops after 100 errors (maxErrors).
// On error the returned Registry is still non-nil and holds the entries that
// were well-formed; its Validate reports the parse errors again (with any
// conflicts among those entries), and it never compiles.
func Parse(name string, data []byte) (*Registry, error) {
	r := parseFile(name, data)
	r.Digest = digest([]input{{name, data}})
	return r, r.errs.Err()
}

// parseFile parses one file without computing the digest.
func parseFile(name string, data []byte) *Registry {
	p := &parser{file: name, reg: &Registry{}}
	p.parseDocuments(data)
	p.reg.errs = append(p.reg.errs, p.errs...).sortedUnique()
	return p.reg
}

// maxErrors bounds the distinct errors one file reports. Past it, parsing
// stops with a "too many errors" line: aliases can repeat a bad node many
// times, and a file with that many mistakes is not worth reading further.
const maxErrors = 100

type parser struct {
	file   string
	reg    *Registry
	errs   ErrorList
	visits int
	// seen holds the errors in errs, so that a repeat (an anchor's error
	// met again through an alias) is dropped as it comes.
	seen map[Error]bool
	// reported counts every error reported, repeats included: a part is
	// well-formed when parsing it left the count unchanged.
	reported int
	// full is set once maxErrors errors are in errs: nothing more is
	// parsed or reported.
	full bool
	// bad holds the entries and owners that had errors, so that an alias
	// of one counts as an error again without being parsed again.
	bad map[badNode]bool
}

type badNode struct {
	n    *yaml.Node
	what string
}

// knownBad reports whether n already failed to parse as what; if so it
// counts as a (repeated) error.
func (p *parser) knownBad(n *yaml.Node, what string) bool {
	if p.bad == nil {
		p.bad = map[badNode]bool{}
	}
	if p.bad[badNode{n, what}] {
		p.reported++
		return true
	}
	return false
}

func (p *parser) pos(n *yaml.Node) Pos { return Pos{File: p.file, Line: n.Line, Col: n.Column} }

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	if p.full {
		p.reported++
		return
	}
	p.add(p.pos(n), fmt.Sprintf(format, args...))
}

// add records an error unless it is a repeat or the list is full.
func (p *parser) add(pos Pos, msg string) {
	p.reported++
	e := Error{Pos: pos, Msg: msg}
	if p.full || p.seen[e] {
		return
	}
	if p.seen == nil {
		p.seen = map[Error]bool{}
	}
	p.seen[e] = true
	if len(p.errs) == maxErrors {
		p.full = true
		msg = fmt.Sprintf("too many errors: stopped after %d; fix these and check again", maxErrors)
	}
	p.errs.add(pos, msg)
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxError turns "yaml: line N: msg" into FILE:N:1: invalid yaml: msg.
// Some errors come without a line: then the offending text is looked for
// in data, and failing that the error says its position is unknown (line
// 0, which Error prints as FILE alone) rather than pointing at 1:1.
func (p *parser) syntaxError(err error, data []byte) {
	msg := err.Error()
	pos := Pos{File: p.file}
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		pos.Line, _ = strconv.Atoi(m[1])
		pos.Col = 1
		msg = m[2]
	} else {
		msg = strings.TrimPrefix(msg, "yaml: ")
		if off := locateYAMLError(msg, data); off >= 0 {
			pos.Line, pos.Col = lineCol(data, off)
		} else if strings.Contains(msg, "end of stream") {
			// The input ended too soon: the place is its end.
			pos.Line, pos.Col = lineCol(data, len(data))
		} else {
			msg += " (the YAML parser gives no position)"
		}
	}
	p.add(pos, "invalid yaml: "+msg)
}

var unknownAnchorRE = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// locateYAMLError returns the offset in data of the problem a YAML error
// without a line describes, or -1: the first use of an unknown anchor, or
// the first character the YAML reader refuses.
func locateYAMLError(msg string, data []byte) int {
	if m := unknownAnchorRE.FindStringSubmatch(msg); m != nil {
		alias := []byte("*" + m[1])
		for from := 0; ; {
			i := bytes.Index(data[from:], alias)
			if i < 0 {
				return -1
			}
			i += from
			end := i + len(alias)
			if (i == 0 || strings.IndexByte(" \t\r\n[{,:-?", data[i-1]) >= 0) &&
				(end == len(data) || strings.IndexByte(" \t\r\n]},", data[end]) >= 0) {
				return i
			}
			from = i + 1
		}
	}
	switch msg {
	case "control characters are not allowed", "invalid leading UTF-8 octet", "incomplete UTF-8 octet sequence",
		"invalid trailing UTF-8 octet", "invalid length of a UTF-8 sequence", "invalid Unicode character":
		for i := 0; i < len(data); {
			r, w := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && w <= 1 || !yamlPrintable(r) {
				return i
			}
			i += w
		}
	}
	return -1
}

// yamlPrintable is the set of characters a YAML stream may hold.
func yamlPrintable(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || (r >= 0x20 && r <= 0x7E) || r == 0x85 ||
		(r >= 0xA0 && r <= 0xD7FF) || (r >= 0xE000 && r <= 0xFFFD) || (r >= 0x10000 && r <= 0x10FFFF)
}

// lineCol returns the 1-based line and column (in characters) of offset
// off in data.
func lineCol(data []byte, off int) (line, col int) {
	start := bytes.LastIndexByte(data[:off], '\n') + 1
	return bytes.Count(data[:off], []byte{'\n'}) + 1, utf8.RuneCount(data[start:off]) + 1
}

func (p *parser) parseDocuments(data []byte) {
	defer func() {
		// The YAML parser should never panic; if it does on some input, that
		// input is reported as invalid rather than crashing the daemon.
		if v := recover(); v != nil {
			p.add(Pos{File: p.file}, fmt.Sprintf("invalid yaml: parser failed: %v (position unknown)", v))
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	docs := 0
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.syntaxError(err, data)
			return
		}
		if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
			continue
		}
		root := doc.Content[0]
		if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
			continue // an empty document, as a trailing "---" makes
		}
		docs++
		p.document(root)
	}
	if docs == 0 && len(p.errs) == 0 {
		p.add(Pos{File: p.file, Line: 1, Col: 1}, "file is empty: want a registry with apiVersion: "+APIVersion+" and kind: "+Kind)
	}
}

// resolve follows aliases and counts the visit against the budget. It
// returns nil once the budget is spent.
func (p *parser) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > 100 {
			return nil
		}
		n = n.Alias
	}
	if n == nil || p.full {
		return nil
	}
	p.visits++
	if p.visits == maxNodeVisits {
		p.errorf(n, "document expands to more than %d nodes through aliases", maxNodeVisits)
	}
	if p.visits >= maxNodeVisits {
		return nil
	}
	return n
}

// describe names a node's type for "got …" in messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("string %q", n.Value)
		case "!!int":
			return "integer " + n.Value
		case "!!float":
			return "number " + n.Value
		case "!!bool":
			return "boolean " + n.Value
		case "!!null":
			return "nothing"
		}
		return fmt.Sprintf("%s %q", n.ShortTag(), n.Value)
	}
	return "an unexpected node"
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" }

// want reports whether n is of kind; otherwise it reports the error
// "what: want desc, got …".
func (p *parser) want(n *yaml.Node, kind yaml.Kind, what, desc string) bool {
	if n.Kind == kind {
		return true
	}
	p.errorf(n, "%s: want %s, got %s", what, desc, describe(n))
	return false
}

// optional reports whether n, a field that may be null, holds a value: null
// is no value and no error; anything else must be of kind, as for want.
func (p *parser) optional(n *yaml.Node, kind yaml.Kind, what, desc string) bool {
	return !isNull(n) && p.want(n, kind, what, desc)
}

// fields walks the key/value pairs of mapping n. It reports duplicate keys,
// keys that are not strings, merge keys and unknown fields, and calls fn with
// each known field's key node and resolved value.
func (p *parser) fields(n *yaml.Node, what string, allowed []string, fn func(key string, k, v *yaml.Node)) {
	// Known fields are few: a slice indexed like allowed beats a map.
	var seenBuf [16]*yaml.Node
	seen := seenBuf[:0]
	if len(allowed) > len(seenBuf) {
		seen = make([]*yaml.Node, 0, len(allowed))
	}
	seen = seen[:len(allowed)]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := p.resolve(n.Content[i]), p.resolve(n.Content[i+1])
		if k == nil || v == nil {
			return
		}
		if k.ShortTag() == "!!merge" {
			p.errorf(k, "merge keys (<<) are not supported: write the fields out, or alias the whole %s", what)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "%s key must be a string, got %s", what, describe(k))
			continue
		}
		f := slices.Index(allowed, k.Value)
		if f < 0 {
			p.errorf(k, "unknown field %q in %s%s: want %s", k.Value, what, suggest(k.Value, allowed), strings.Join(allowed, ", "))
			continue
		}
		if first := seen[f]; first != nil {
			p.errorf(k, "mapping key %q already defined at line %d", k.Value, first.Line)
			continue
		}
		seen[f] = k
		fn(k.Value, k, v)
	}
}

// suggest returns ` (did you mean "x"?)` for a near miss of an allowed field.
func suggest(got string, allowed []string) string {
	for _, a := range allowed {
		if strings.EqualFold(got, a) || (len(a) > 3 && editDistance(strings.ToLower(got), strings.ToLower(a)) <= 2) {
			return fmt.Sprintf(" (did you mean %q?)", a)
		}
	}
	return ""
}

func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// text returns a scalar field's text. Any scalar is accepted, so that
// `since: 4.10` keeps its digits as written; null is "".
func (p *parser) text(field string, n *yaml.Node) (string, bool) {
	if !p.want(n, yaml.ScalarNode, field, "a string") {
		return "", false
	}
	if isNull(n) {
		return "", true
	}
	return n.Value, true
}

var (
	topFields      = []string{"apiVersion", "kind", "metadata", "entries", "removed"}
	metadataFields = []string{"name", "source"}
	entryFields    = []string{"port", "protocol", "process", "owners", "nodeSelector", "bind", "mode", "team", "since", "notes"}
	removedFields  = []string{"port", "protocol", "process", "nodeSelector", "removed", "team", "since", "notes"}
	ownerFields    = []string{"cgroup", "unit", "uid", "pod"}
)

func (p *parser) document(n *yaml.Node) {
	if n = p.resolve(n); n == nil {
		return
	}
	if n.Kind != yaml.MappingNode {
		p.errorf(n, "a registry must be a mapping with apiVersion: %s and kind: %s, got %s", APIVersion, Kind, describe(n))
		return
	}
	src := Source{File: p.file, Pos: p.pos(n)}
	var apiVersion, kind bool
	p.fields(n, "registry", topFields, func(key string, k, v *yaml.Node) {
		switch key {
		case "apiVersion":
			apiVersion = true
			if s, ok := p.text(key, v); ok && s != APIVersion {
				p.errorf(v, "apiVersion %q is not supported: want %s", s, APIVersion)
			}
		case "kind":
			kind = true
			if s, ok := p.text(key, v); ok && s != Kind {
				p.errorf(v, "kind %q: want %s", s, Kind)
			}
		case "metadata":
			p.metadata(v, &src)
		case "entries", "removed":
			p.entries(key, v)
		}
	})
	if !apiVersion {
		p.errorf(n, "missing apiVersion: want apiVersion: %s", APIVersion)
	}
	if !kind {
		p.errorf(n, "missing kind: want kind: %s", Kind)
	}
	p.reg.Sources = append(p.reg.Sources, src)
}

func (p *parser) metadata(n *yaml.Node, src *Source) {
	if !p.optional(n, yaml.MappingNode, "metadata", "a mapping with "+strings.Join(metadataFields, ", ")) {
		return
	}
	p.fields(n, "metadata", metadataFields, func(key string, k, v *yaml.Node) {
		s, _ := p.freeText("metadata."+key, v)
		switch key {
		case "name":
			src.Name = s
		case "source":
			src.Source = s
		}
	})
}

func (p *parser) entries(list string, n *yaml.Node) {
	if !p.optional(n, yaml.SequenceNode, list, "a list of entries") {
		return
	}
	removed := list == "removed"
	for _, item := range n.Content {
		if item = p.resolve(item); item == nil {
			return
		}
		if p.knownBad(item, list) {
			continue
		}
		e, ok := p.entry(item, removed)
		if !ok {
			p.bad[badNode{item, list}] = true
			continue
		}
		if removed {
			p.reg.Removed = append(p.reg.Removed, e)
		} else {
			p.reg.Entries = append(p.reg.Entries, e)
		}
	}
}

// entry parses one entry; ok is false when it had any error.
func (p *parser) entry(n *yaml.Node, removed bool) (e Entry, ok bool) {
	what, allowed := "entry", entryFields
	if removed {
		what, allowed = "removed entry", removedFields
	}
	if !p.want(n, yaml.MappingNode, what, "a mapping with port, protocol, process…") {
		return e, false
	}
	before := p.reported
	e = Entry{Pos: p.pos(n), Removed: removed, Bind: BindAny, Protocols: []Protocol{TCP}}
	var hasPort, hasProcess bool
	p.fields(n, what, allowed, func(key string, k, v *yaml.Node) {
		hasPort = hasPort || key == "port"
		hasProcess = hasProcess || key == "process"
		p.entryField(&e, key, v)
	})
	if !hasPort {
		p.errorf(n, "%s has no port: want port: 1-65535 or a range like \"9200-9219\"", what)
	}
	if !hasProcess {
		p.errorf(n, "%s has no process: name the process that binds the port", what)
	}
	return e, p.reported == before
}

// entryField parses one field of an entry into e.
func (p *parser) entryField(e *Entry, key string, v *yaml.Node) {
	switch key {
	case "port":
		e.Ports = p.ports(v)
	case "protocol":
		e.Protocols = p.protocols(v)
	case "process":
		if s, ok := p.text(key, v); ok {
			if err := checkProcess(s); err != nil {
				p.errorf(v, "%v", err)
			}
			e.Process = strings.TrimSpace(s)
		}
	case "owners":
		e.Owners = p.owners(v)
	case "nodeSelector":
		e.NodeSelector = p.selector(v)
	case "bind":
		if s, ok := p.text(key, v); ok && !isNull(v) {
			b, err := parseBind(s)
			if err != nil {
				p.errorf(v, "%v", err)
			}
			e.Bind = b
		}
	case "mode":
		if s, ok := p.text(key, v); ok && !isNull(v) {
			m, err := ParseMode(s)
			if err != nil {
				p.errorf(v, "mode %q: want audit or enforce (or omit it: the node's mode applies)", s)
			}
			e.Mode = m
		}
	case "team":
		e.Team, _ = p.freeText(key, v)
	case "since":
		e.Since, _ = p.freeText(key, v)
	case "notes":
		e.Notes, _ = p.freeText(key, v)
	case "removed":
		e.RemovedIn, _ = p.freeText(key, v)
	}
}

// freeText is text for a field shown as written (team, notes…): it must
// hold no control characters.
func (p *parser) freeText(field string, n *yaml.Node) (string, bool) {
	s, ok := p.text(field, n)
	if ok {
		if err := checkText(field, s); err != nil {
			p.errorf(n, "%v", err)
			return "", false
		}
	}
	return s, ok
}

func (p *parser) ports(n *yaml.Node) PortRange {
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!int":
			v, err := yamlDecimal("port", n.Value)
			var ne *strconv.NumError
			switch {
			case err != nil && !errors.As(err, &ne):
				p.errorf(n, "%v", err)
			case err != nil || v < 0 || v > 65535:
				p.errorf(n, "port %s is out of range: want 1-65535", n.Value)
			case v == 0:
				p.errorf(n, "port 0 is not allowed: it asks the kernel for an ephemeral port, which bindguard never judges; want 1-65535")
			default:
				return PortRange{uint16(v), uint16(v)}
			}
			return PortRange{}
		case "!!str":
			r, err := parsePorts(n.Value)
			if err != nil {
				p.errorf(n, "%v", err)
			}
			return r
		}
	}
	p.errorf(n, "port: want an integer 1-65535 or a range like \"9200-9219\", got %s", describe(n))
	return PortRange{}
}

func (p *parser) protocols(n *yaml.Node) []Protocol {
	switch {
	case isNull(n):
		return []Protocol{TCP}
	case n.Kind == yaml.ScalarNode:
		pr, err := parseProtocol(n.Value)
		if err != nil {
			p.errorf(n, "%v", err)
		}
		return []Protocol{pr}
	case n.Kind == yaml.SequenceNode:
		if len(n.Content) == 0 {
			p.errorf(n, "protocol list is empty: want tcp, udp or [tcp, udp]")
		}
		var out []Protocol
		for _, item := range n.Content {
			if item = p.resolve(item); item == nil {
				return out
			}
			if item.Kind != yaml.ScalarNode || isNull(item) {
				p.errorf(item, "protocol: want tcp or udp, got %s", describe(item))
				continue
			}
			pr, err := parseProtocol(item.Value)
			if err != nil {
				p.errorf(item, "%v", err)
				continue
			}
			if slices.Contains(out, pr) {
				p.errorf(item, "protocol %v is listed twice", pr)
				continue
			}
			out = append(out, pr)
		}
		return out
	}
	p.errorf(n, "protocol: want tcp, udp or a list of them, got %s", describe(n))
	return nil
}

func (p *parser) owners(n *yaml.Node) Owners {
	var o Owners
	if !p.optional(n, yaml.SequenceNode, "owners", "a list of items each with one of cgroup, unit, uid, pod") {
		return o
	}
	if len(n.Content) == 0 {
		p.errorf(n, "owners list is empty: omit owners to let any process bind, or list who may")
		return o
	}
	for _, item := range n.Content {
		if item = p.resolve(item); item == nil {
			return o
		}
		if p.knownBad(item, "owner") {
			continue
		}
		before := p.reported
		p.owner(item, &o)
		if p.reported != before {
			p.bad[badNode{item, "owner"}] = true
		}
	}
	o = normalizeOwners(o)
	if c := o.Count(); c > MaxOwnersPerRule {
		p.errorf(n, "%d owners: at most %d are allowed per port", c, MaxOwnersPerRule)
	}
	return o
}

func (p *parser) owner(n *yaml.Node, o *Owners) {
	if !p.want(n, yaml.MappingNode, "owner", "a mapping with exactly one of cgroup, unit, uid, pod") {
		return
	}
	var named []string
	p.fields(n, "owner", ownerFields, func(key string, k, v *yaml.Node) {
		named = append(named, key)
		if len(named) > 1 {
			return
		}
		switch key {
		case "cgroup", "unit":
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
				p.errorf(v, "%s: want a string, got %s", key, describe(v))
				return
			}
			check, list := checkCgroup, &o.Cgroups
			if key == "unit" {
				check, list = checkUnit, &o.Units
			}
			if err := check(v.Value); err != nil {
				p.errorf(v, "%v", err)
				return
			}
			*list = append(*list, v.Value)
		case "uid":
			if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
				p.errorf(v, "uid: want an integer 0-4294967294, got %s", describe(v))
				return
			}
			u, err := yamlDecimal("uid", v.Value)
			var ne *strconv.NumError
			switch {
			case err != nil && !errors.As(err, &ne):
			case err != nil || u < 0:
				err = fmt.Errorf("uid %s is out of range: want 0-4294967294", v.Value)
			default:
				err = checkUID(uint64(u))
			}
			if err != nil {
				p.errorf(v, "%v", err)
				return
			}
			o.UIDs = append(o.UIDs, uint32(u))
		case "pod":
			if po, ok := p.podOwner(v); ok {
				o.Pods = append(o.Pods, po)
			}
		}
	})
	switch len(named) {
	case 0:
		p.errorf(n, "owner names none of cgroup, unit, uid, pod: want exactly one")
	case 1:
	default:
		p.errorf(n, "owner names %s: want exactly one of cgroup, unit, uid, pod per item", strings.Join(named, " and "))
	}
}
