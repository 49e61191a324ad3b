package importer

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/bindguard/bindguard/policy"
)

// Limits that bound what an import holds in memory by its input: a row
// that names many ports repeats its other cells in every entry, so the cells
// and the entries are bounded too, not only the input.
const (
	// MaxInput is the largest markdown document Markdown reads.
	MaxInput = 4 << 20
	// MaxEntries is the most entries (and removed ports) one import makes.
	MaxEntries = 65536
	// MaxNotes is the longest notes an entry gets; longer notes are cut,
	// and say so.
	MaxNotes = 1024
	// MaxOutput is the largest registry an import writes: that of a
	// registry file policy.Load reads.
	MaxOutput = policy.MaxFileSize
)

// Registry is the imported registry in the shape of a registry file.
type Registry struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Metadata   Metadata `yaml:"metadata"`
	Entries    []Entry  `yaml:"entries,omitempty"`
	Removed    []Entry  `yaml:"removed,omitempty"`
}

// Metadata is a registry's metadata block.
type Metadata struct {
	Name   string `yaml:"name"`
	Source string `yaml:"source,omitempty"`
}

// Entry is one imported port entry (or removed port).
type Entry struct {
	// Port is an int for one port or a "lo-hi" string for a range.
	Port any `yaml:"port"`
	// Protocol is "tcp", "udp" or []string{"tcp", "udp"}.
	Protocol     any               `yaml:"protocol,flow"`
	Process      string            `yaml:"process"`
	NodeSelector map[string]string `yaml:"nodeSelector,omitempty,flow"`
	Bind         string            `yaml:"bind,omitempty"`
	Team         string            `yaml:"team,omitempty"`
	Since        string            `yaml:"since,omitempty"`
	RemovedIn    string            `yaml:"removed,omitempty"`
	Notes        string            `yaml:"notes,omitempty"`

	// Line is the markdown line the entry came from.
	Line int `yaml:"-"`
}

// Result is the outcome of an import.
type Result struct {
	Registry Registry
	// Warnings are the rows and tables that could not be imported, for
	// stderr.
	Warnings []Warning

	// comments are written into the YAML next to the entries they precede.
	comments []comment
}

// Warning is a problem at a line of the markdown input.
type Warning struct {
	Line int
	Msg  string
}

// String returns "line N: msg".
func (w Warning) String() string { return fmt.Sprintf("line %d: %s", w.Line, w.Msg) }

// comment is a not-imported row, placed before the first entry of its list
// that comes from a later line.
type comment struct {
	line    int
	removed bool // belongs with the removed list
	toplvl  bool // belongs with neither list (a table without a Port column)
	text    string
}

// The node selector given to control-plane-only rows: {role: control-plane}.
const (
	ControlPlaneLabel = "role"
	ControlPlaneValue = "control-plane"
)

// Markdown reads a markdown document and converts its port tables into a
// registry named name. metadata.source is the document's title (front matter
// "title:" or its first "# " heading); callers may overwrite it. Rows that
// cannot be imported are reported in Result.Warnings, not as an error; the
// error is for unreadable input and for a document without any port table.
func Markdown(name string, r io.Reader) (*Result, error) {
	if strings.TrimSpace(name) == "" {
		return nil, errors.New("import markdown: registry name is empty")
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxInput+1))
	if err != nil {
		return nil, fmt.Errorf("import markdown: %w", err)
	}
	if len(data) > MaxInput {
		return nil, fmt.Errorf("import markdown: input is larger than %d bytes", MaxInput)
	}
	c := &converter{res: &Result{Registry: Registry{
		APIVersion: "bindguard.io/v1",
		Kind:       "PortRegistry",
		Metadata:   Metadata{Name: strings.TrimSpace(name)},
	}}}
	c.run(splitLines(data))
	if c.tooMany != 0 {
		return nil, fmt.Errorf("import markdown: line %d: the document lists more than %d ports, the most one import makes", c.tooMany, MaxEntries)
	}
	if c.tables == 0 {
		return nil, errors.New("import markdown: no pipe table with a Port column found")
	}
	if c.res.Registry.Metadata.Source == "" {
		c.res.Registry.Metadata.Source = c.title
	}
	if size := c.res.size(); size > MaxOutput {
		return nil, fmt.Errorf("import markdown: the registry would be about %d bytes, over the %d bytes a registry file may hold; split the document", size, MaxOutput)
	}
	return c.res, nil
}

// size estimates the registry's YAML: each entry's fields and some syntax.
func (r *Result) size() int {
	n := 0
	for _, list := range [][]Entry{r.Registry.Entries, r.Registry.Removed} {
		for _, e := range list {
			n += 96 + len(e.Process) + len(e.Team) + len(e.Since) + len(e.RemovedIn) + len(e.Notes)
		}
	}
	return n
}

// splitLines splits the input into lines, making it valid UTF-8 and dropping
// a byte order mark and carriage returns.
func splitLines(data []byte) []string {
	s := strings.ToValidUTF8(string(data), "\uFFFD")
	s = strings.TrimPrefix(s, "\uFEFF")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	s = strings.ReplaceAll(s, "\r", "\n")
	return strings.Split(s, "\n")
}

type heading struct {
	level int
	text  string
}

type converter struct {
	res      *Result
	title    string
	headings []heading
	tables   int // tables with a Port column
	// tooMany is the line at which the entries went over MaxEntries.
	tooMany int
}

var (
	atxRE        = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	setextH1RE   = regexp.MustCompile(`^ {0,3}=+[ \t]*$`)
	setextH2RE   = regexp.MustCompile(`^ {0,3}-+[ \t]*$`)
	fenceRE      = regexp.MustCompile("^ {0,3}(```+|~~~+)")
	delimCellRE  = regexp.MustCompile(`^:?-+:?$`)
	frontTitleRE = regexp.MustCompile(`^title:\s*(.*?)\s*$`)
)

func (c *converter) run(lines []string) {
	i := 0
	// YAML front matter: only its title is used.
	if len(lines) > 0 && strings.TrimSpace(lines[0]) == "---" {
		for j := 1; j < len(lines); j++ {
			t := strings.TrimSpace(lines[j])
			if t == "---" || t == "..." {
				i = j + 1
				break
			}
			if m := frontTitleRE.FindStringSubmatch(lines[j]); m != nil && c.title == "" {
				c.title = strings.Trim(m[1], `"'`)
			}
		}
	}
	var fence string
	for ; i < len(lines); i++ {
		line := lines[i]
		if fence != "" {
			if strings.HasPrefix(strings.TrimSpace(line), fence) {
				fence = ""
			}
			continue
		}
		if m := fenceRE.FindStringSubmatch(line); m != nil {
			fence = m[1][:3]
			continue
		}
		if m := atxRE.FindStringSubmatch(line); m != nil {
			c.heading(len(m[1]), m[2])
			continue
		}
		if i+1 < len(lines) && strings.TrimSpace(line) != "" && !strings.Contains(line, "|") {
			if setextH1RE.MatchString(lines[i+1]) {
				c.heading(1, line)
				i++
				continue
			}
			if setextH2RE.MatchString(lines[i+1]) {
				c.heading(2, line)
				i++
				continue
			}
		}
		if strings.Contains(line, "|") && i+1 < len(lines) && isDelimiterRow(lines[i+1]) {
			end := i + 2
			for end < len(lines) && isTableRow(lines[end]) {
				end++
			}
			c.table(i+1, lines[i], lines[i+2:end])
			i = end - 1
		}
	}
}

func (c *converter) heading(level int, text string) {
	text = cleanInline(text)
	for len(c.headings) > 0 && c.headings[len(c.headings)-1].level >= level {
		c.headings = c.headings[:len(c.headings)-1]
	}
	c.headings = append(c.headings, heading{level, text})
	if level == 1 && c.title == "" {
		c.title = text
	}
}

// isDelimiterRow reports whether line is a table delimiter row: |---|:-:|.
func isDelimiterRow(line string) bool {
	t := strings.TrimSpace(line)
	if !strings.Contains(t, "-") {
		return false
	}
	cells := splitRow(t)
	if len(cells) == 0 {
		return false
	}
	if len(cells) == 1 && !strings.Contains(t, "|") {
		return false
	}
	for _, cell := range cells {
		if !delimCellRE.MatchString(strings.TrimSpace(cell)) {
			return false
		}
	}
	return true
}

func isTableRow(line string) bool {
	t := strings.TrimSpace(line)
	return t != "" && strings.Contains(t, "|") && !atxRE.MatchString(line) && !fenceRE.MatchString(line)
}

// splitRow splits a table row into raw cells. A leading and a trailing pipe
// are optional; "\|" is a literal pipe.
func splitRow(line string) []string {
	t := strings.TrimSpace(line)
	t = strings.TrimPrefix(t, "|")
	if strings.HasSuffix(t, "|") && !strings.HasSuffix(t, `\|`) {
		t = t[:len(t)-1]
	}
	var cells []string
	var b strings.Builder
	for i := 0; i < len(t); i++ {
		switch {
		case t[i] == '\\' && i+1 < len(t) && t[i+1] == '|':
			b.WriteByte('|')
			i++
		case t[i] == '|':
			cells = append(cells, b.String())
			b.Reset()
		default:
			b.WriteByte(t[i])
		}
	}
	return append(cells, b.String())
}

// column is what a table column maps to.
type column int

const (
	colUnknown column = iota
	colPort
	colProtocol
	colProcess
	colDescription
	colTeam
	colSince
	colRemoved
	colNotes
	colControlPlane
	colLocalhost
	colBind
)

var headerColumns = map[string]column{
	"port": colPort, "ports": colPort, "port s": colPort, "port number": colPort,
	"port numbers": colPort, "port range": colPort, "port ranges": colPort,
	"host port": colPort, "host ports": colPort, "ports used": colPort,

	"protocol": colProtocol, "protocols": colProtocol, "proto": colProtocol,
	"transport": colProtocol, "l4 protocol": colProtocol,

	"process": colProcess, "service": colProcess, "component": colProcess,
	"service name": colProcess, "process name": colProcess, "program": colProcess,
	"daemon": colProcess, "name": colProcess,

	"description": colDescription, "purpose": colDescription, "usage": colDescription,
	"used for": colDescription,

	"owning team": colTeam, "team": colTeam, "owner": colTeam, "owned by": colTeam,

	"since": colSince, "added": colSince, "added in": colSince, "introduced": colSince,
	"introduced in": colSince,

	"removed": colRemoved, "removed in": colRemoved,

	"notes": colNotes, "note": colNotes, "comments": colNotes, "comment": colNotes,
	"remarks": colNotes,

	"control plane only": colControlPlane, "control plane": colControlPlane,
	"masters only": colControlPlane, "master only": colControlPlane,
	"cp only": colControlPlane,

	"localhost": colLocalhost, "localhost only": colLocalhost,
	"loopback": colLocalhost, "loopback only": colLocalhost,

	"bind": colBind, "bind address": colBind, "listen address": colBind,
}

var nonAlnumRE = regexp.MustCompile(`[^a-z0-9]+`)

// normHeader lowercases a header and reduces punctuation to single spaces:
// "Control-plane only" becomes "control plane only".
func normHeader(h string) string {
	return strings.TrimSpace(nonAlnumRE.ReplaceAllString(strings.ToLower(h), " "))
}

// mapColumns maps each header to a column. The first column of each kind
// wins; later ones are treated as unknown (their cells go to notes).
func mapColumns(headers []string) []column {
	cols := make([]column, len(headers))
	seen := map[column]bool{}
	for i, h := range headers {
		col := headerColumns[normHeader(h)]
		if col != colUnknown && seen[col] {
			col = colUnknown
		}
		cols[i] = col
		seen[col] = true
	}
	if !seen[colPort] {
		// A header such as "Ports To Allow" or "TCP port".
		for i, h := range headers {
			if cols[i] == colUnknown && slicesContains(strings.Fields(normHeader(h)), "port", "ports") {
				cols[i] = colPort
				break
			}
		}
	}
	return cols
}

func slicesContains(words []string, want ...string) bool {
	for _, w := range words {
		for _, x := range want {
			if w == x {
				return true
			}
		}
	}
	return false
}

// context is what the headings above a table say about its rows.
type context struct {
	protocols []string // nil: tcp
	localhost bool
	removed   bool
	cpOnly    bool
}

var (
	tcpWordRE     = regexp.MustCompile(`(?i)\btcp\b`)
	udpWordRE     = regexp.MustCompile(`(?i)\budp\b`)
	localhostRE   = regexp.MustCompile(`(?i)\b(localhost|loopback)\b`)
	removedHeadRE = regexp.MustCompile(`(?i)previously[ -]allocated|\bremoved\b|\bdeprecated\b|\bretired\b|\bformerly\b`)
	cpOnlyRE      = regexp.MustCompile(`(?i)\bcontrol[ -]?plane[ -](nodes? )?only\b|\bmasters? only\b`)
	localOnlyRE   = regexp.MustCompile(`(?i)\b(localhost|loopback)[ -]only\b`)
)

func (c *converter) context() context {
	var ctx context
	for i := len(c.headings) - 1; i >= 0; i-- {
		h := c.headings[i].text
		if ctx.protocols == nil {
			tcp, udp := tcpWordRE.MatchString(h), udpWordRE.MatchString(h)
			switch {
			case tcp && udp:
				ctx.protocols = []string{"tcp", "udp"}
			case tcp:
				ctx.protocols = []string{"tcp"}
			case udp:
				ctx.protocols = []string{"udp"}
			}
		}
		ctx.localhost = ctx.localhost || localhostRE.MatchString(h)
		ctx.removed = ctx.removed || removedHeadRE.MatchString(h)
		ctx.cpOnly = ctx.cpOnly || cpOnlyRE.MatchString(h)
	}
	return ctx
}

func (c *converter) warnf(line int, format string, args ...any) {
	c.res.Warnings = append(c.res.Warnings, Warning{Line: line, Msg: fmt.Sprintf(format, args...)})
}

// table converts one table. headerLine is the 1-based line of its header.
func (c *converter) table(headerLine int, header string, rows []string) {
	headers := splitRow(header)
	for i := range headers {
		headers[i] = cleanInline(headers[i])
	}
	cols := mapColumns(headers)
	hasPort := false
	for _, col := range cols {
		hasPort = hasPort || col == colPort
	}
	ctx := c.context()
	if !hasPort {
		c.warnf(headerLine, "table has no Port column (headers: %s); its %d rows are not imported", strings.Join(headers, ", "), len(rows))
		c.res.comments = append(c.res.comments, comment{
			line: headerLine, toplvl: true,
			text: fmt.Sprintf("line %d: table without a Port column not imported: %s", headerLine, strings.TrimSpace(header)),
		})
		return
	}
	c.tables++
	for k, raw := range rows {
		line := headerLine + 2 + k
		if c.tooMany != 0 {
			return
		}
		cells := splitRow(raw)
		empty := true
		for _, cell := range cells {
			empty = empty && strings.TrimSpace(cell) == ""
		}
		if empty {
			continue
		}
		ents, removed, why := convertRow(ctx, headers, cols, cells)
		if why != "" {
			c.warnf(line, "row not imported: %s: %s", why, excerpt(raw))
			c.res.comments = append(c.res.comments, comment{
				line: line, removed: removed,
				text: fmt.Sprintf("line %d: not imported (%s): %s", line, why, excerpt(raw)),
			})
			continue
		}
		for i := range ents {
			ents[i].Line = line
		}
		if len(c.res.Registry.Entries)+len(c.res.Registry.Removed)+len(ents) > MaxEntries {
			c.tooMany = line
			return
		}
		if removed {
			c.res.Registry.Removed = append(c.res.Registry.Removed, ents...)
		} else {
			c.res.Registry.Entries = append(c.res.Registry.Entries, ents...)
		}
	}
}

// notes collects the parts of an entry's notes in order.
type notes []string

func (n *notes) add(s string) {
	if s = strings.TrimSpace(s); s != "" {
		*n = append(*n, s)
	}
}

func (n *notes) addf(format string, args ...any) { n.add(fmt.Sprintf(format, args...)) }

func (n notes) String() string { return strings.Join(n, "; ") }

// rowCells are the cells of one row, by meaning.
type rowCells struct {
	port, proto, process, description string
	team, since, removedIn, notes     string
	cpOnly, localhost, removed        bool
	// extra holds cells that have no field, as notes.
	extra notes
}

// readCells sorts a row's cells by column; the context gives the defaults.
func readCells(ctx context, headers []string, cols []column, raw []string) rowCells {
	r := rowCells{cpOnly: ctx.cpOnly, localhost: ctx.localhost, removed: ctx.removed}
	for i, rawCell := range raw {
		cell := cleanCell(rawCell)
		if i >= len(cols) || cols[i] != colPort {
			// Only a port cell keeps <br> line breaks: they separate ports.
			cell = strings.ReplaceAll(cell, "\n", "; ")
		}
		if i >= len(cols) {
			if cell != "" {
				r.extra.addf("extra cell: %s", cell)
			}
			continue
		}
		r.set(cols[i], strings.ToLower(headers[i]), cell)
	}
	if cpOnlyRE.MatchString(r.notes) {
		r.cpOnly = true
	}
	if localOnlyRE.MatchString(r.notes) {
		r.localhost = true
	}
	if r.process == "" {
		r.process, r.description = r.description, ""
	}
	return r
}

// set files one cell under its column; header is the column's name.
func (r *rowCells) set(col column, header, cell string) {
	if f := r.textField(col); f != nil {
		*f = cell
		if col == colRemoved && cell != "" && !isNo(cell) {
			r.removed = true
		}
		return
	}
	switch col {
	case colControlPlane:
		r.yesNo(&r.cpOnly, header, cell)
	case colLocalhost:
		r.yesNo(&r.localhost, header, cell)
	case colBind:
		switch strings.ToLower(cell) {
		case "localhost", "loopback", "127.0.0.1", "::1", "[::1]", "lo":
			r.localhost = true
		case "", "any", "all", "*", "0.0.0.0", "::", "[::]", "-":
		default:
			r.extra.addf("%s: %s", header, cell)
		}
	default:
		if cell != "" {
			r.extra.addf("%s: %s", header, cell)
		}
	}
}

// textField is the field that keeps a column's cell as written, or nil for
// a column whose cell is read otherwise.
func (r *rowCells) textField(col column) *string {
	return map[column]*string{
		colPort: &r.port, colProtocol: &r.proto, colProcess: &r.process, colDescription: &r.description,
		colTeam: &r.team, colSince: &r.since, colRemoved: &r.removedIn, colNotes: &r.notes,
	}[col]
}

// yesNo sets *flag for a yes cell, leaves it for a no, and keeps anything
// else in the notes.
func (r *rowCells) yesNo(flag *bool, header, cell string) {
	switch {
	case isYes(cell):
		*flag = true
	case isNo(cell):
	default:
		r.extra.addf("unparsed %s cell: %s", header, cell)
	}
}

// convertRow turns one row into entries. removed says which list the row
// belongs to; why is non-empty when the row cannot become an entry.
func convertRow(ctx context, headers []string, cols []column, raw []string) (ents []Entry, removed bool, why string) {
	r := readCells(ctx, headers, cols, raw)
	if r.process == "" {
		return nil, r.removed, "no process, service or description"
	}
	var tail notes
	// The protocol column may name a transport (TCP, UDP, TCP/UDP) or an
	// application protocol (HTTPS, IPsec) that is kept in notes.
	protos := ctx.protocols
	if r.proto != "" {
		p, rest, unsupported := parseProtocolCell(r.proto)
		if unsupported != "" {
			return nil, r.removed, fmt.Sprintf("protocol %s is not tcp or udp", unsupported)
		}
		if p != nil {
			protos = p
		}
		if rest {
			tail.addf("protocol: %s", r.proto)
		}
	}
	if protos == nil {
		protos = []string{"tcp"}
	}
	if len(splitPieces(r.port, MaxEntries+1)) > MaxEntries {
		return nil, r.removed, fmt.Sprintf("the port cell lists more than %d ports", MaxEntries)
	}
	ports, unparsed := parsePortCell(r.port)
	if len(ports) == 0 {
		if r.port == "" {
			return nil, r.removed, "no port"
		}
		return nil, r.removed, "unparsed port cell: " + r.port
	}
	if unparsed != "" {
		tail.addf("unparsed port cell: %s", unparsed)
	}
	return r.entries(ports, protos, tail), r.removed, ""
}

// entries makes one entry per port of the row.
func (r *rowCells) entries(ports []portSpec, protos []string, tail notes) []Entry {
	var base notes
	base.add(r.notes)
	if r.description != "" {
		base.addf("description: %s", r.description)
	}
	base = append(base, r.extra...)
	base = append(base, tail...)
	localhost := r.localhost
	if r.removed && localhost {
		// Removed entries have no bind field; keep the fact.
		if !localOnlyRE.MatchString(r.notes) {
			base.add("localhost-only")
		}
		localhost = false
	}
	baseNotes := cutNotes(base.String())
	ents := make([]Entry, 0, len(ports))
	for _, p := range ports {
		e := Entry{Port: p.port, Protocol: protocolValue(protos), Process: r.process, Team: r.team, Since: r.since}
		if r.removed {
			e.RemovedIn = r.removedIn
		}
		if p.protos != nil {
			e.Protocol = protocolValue(p.protos)
		}
		if r.cpOnly {
			e.NodeSelector = map[string]string{ControlPlaneLabel: ControlPlaneValue}
		}
		if localhost {
			e.Bind = "localhost"
		}
		// One string for every port of the row, unless a port has a remark.
		e.Notes = baseNotes
		if p.remark != "" {
			n := append(notes(nil), base...)
			n.addf("port %v: %s", p.port, p.remark)
			e.Notes = cutNotes(n.String())
		}
		ents = append(ents, e)
	}
	return ents
}

// excerpt is a row as quoted in a warning: at most 200 bytes of it.
func excerpt(raw string) string {
	raw = strings.TrimSpace(raw)
	if len(raw) <= 200 {
		return raw
	}
	end := 200
	for end > 0 && !utf8.RuneStart(raw[end]) {
		end--
	}
	return fmt.Sprintf("%s … (%d more bytes)", raw[:end], len(raw)-end)
}

// cutNotes cuts notes longer than MaxNotes at a rune boundary, and says so.
func cutNotes(s string) string {
	if len(s) <= MaxNotes {
		return s
	}
	const mark = " … (cut by bindguard import)"
	end := MaxNotes - len(mark)
	for end > 0 && !utf8.RuneStart(s[end]) {
		end--
	}
	return strings.Clone(s[:end]) + mark
}

func protocolValue(ps []string) any {
	if len(ps) == 1 {
		return ps[0]
	}
	return append([]string(nil), ps...)
}

var (
	yesWords = map[string]bool{"yes": true, "y": true, "true": true, "x": true, "✓": true, "✔": true, "✔️": true, "☑": true, "✅": true, "only": true}
	noWords  = map[string]bool{"": true, "no": true, "n": true, "false": true, "-": true, "–": true, "—": true, "✗": true, "✘": true, "❌": true, "n/a": true}
)

func isYes(s string) bool { return yesWords[strings.ToLower(strings.TrimSpace(s))] }
func isNo(s string) bool  { return noWords[strings.ToLower(strings.TrimSpace(s))] }

var (
	protoWordRE = regexp.MustCompile(`[\pL\pN]+`)
	// unsupportedTransports are protocols that are not TCP or UDP ports at all.
	unsupportedTransports = map[string]bool{
		"sctp": true, "icmp": true, "icmpv6": true, "dccp": true, "udplite": true,
		"gre": true, "esp": true, "ah": true, "ipip": true, "ipencap": true, "raw": true,
	}
	protoFillers = map[string]bool{"or": true, "and": true, "both": true}
)

// parseProtocolCell reads a protocol cell. protos is nil when it names no
// transport; rest reports words other than tcp/udp (kept in notes);
// unsupported names a transport bindguard cannot declare.
func parseProtocolCell(cell string) (protos []string, rest bool, unsupported string) {
	var tcp, udp bool
	for _, w := range protoWordRE.FindAllString(strings.ToLower(cell), -1) {
		switch {
		case w == "tcp":
			tcp = true
		case w == "udp":
			udp = true
		case protoFillers[w]:
		case unsupportedTransports[w]:
			unsupported = w
		default:
			rest = true
		}
	}
	if tcp {
		protos = append(protos, "tcp")
	}
	if udp {
		protos = append(protos, "udp")
	}
	if protos != nil {
		unsupported = ""
	}
	return protos, rest, unsupported
}

// portSpec is one port or range read from a port cell.
type portSpec struct {
	port   any      // int or "lo-hi"
	protos []string // from a "TCP 22" or "53/udp" form; nil: the row's
	remark string   // a parenthesised remark after the port
}

var portPieceRE = regexp.MustCompile(`(?i)^(?:(tcp|udp)(?:\s*(?:/|or|and|&)\s*(tcp|udp))?\s*)?(\d{1,6})(?:\s*(?:-|to|\.\.)\s*(\d{1,6}))?(?:\s*/\s*(tcp|udp))?\s*(?:\((.*)\))?$`)

// parsePortCell reads "9100", "9200-9219", "9200–9219", "10250, 10251",
// "TCP 22 (SSH)" or "53/udp". unparsed holds the pieces it could not read.
func parsePortCell(cell string) (ports []portSpec, unparsed string) {
	cell = strings.NewReplacer("–", "-", "—", "-", "‒", "-", "−", "-").Replace(cell)
	var bad []string
	for _, piece := range splitPieces(cell, MaxEntries) {
		// Most pieces are a bare port: no regular expression for those.
		if n, err := strconv.Atoi(piece); err == nil && piece[0] != '+' && piece[0] != '-' && n >= 1 && n <= 65535 {
			ports = append(ports, portSpec{port: n})
			continue
		}
		m := portPieceRE.FindStringSubmatch(piece)
		if m == nil {
			bad = append(bad, piece)
			continue
		}
		lo, err1 := strconv.Atoi(m[3])
		hi := lo
		var err2 error
		if m[4] != "" {
			hi, err2 = strconv.Atoi(m[4])
		}
		if err1 != nil || err2 != nil || lo < 1 || hi > 65535 || lo > hi {
			bad = append(bad, piece)
			continue
		}
		ps := portSpec{port: lo, remark: strings.TrimSpace(m[6])}
		if hi != lo {
			ps.port = fmt.Sprintf("%d-%d", lo, hi)
		}
		for _, p := range []string{m[1], m[2], m[5]} {
			p = strings.ToLower(p)
			if p != "" && !slicesContains(ps.protos, p) {
				ps.protos = append(ps.protos, p)
			}
		}
		ports = append(ports, ps)
	}
	return ports, strings.Join(bad, ", ")
}

// splitPieces splits a port cell on commas, semicolons, line breaks and the
// word "and", outside parentheses. It stops after limit pieces.
func splitPieces(cell string, limit int) []string {
	var out []string
	var b strings.Builder
	depth := 0
	flush := func() {
		if s := strings.TrimSpace(b.String()); s != "" {
			out = append(out, s)
		}
		b.Reset()
	}
	for _, r := range cell {
		if len(out) >= limit {
			return out
		}
		switch {
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
		case depth == 0 && (r == ',' || r == ';' || r == '\n'):
			flush()
			continue
		}
		b.WriteRune(r)
	}
	flush()
	var pieces []string
	for _, p := range out {
		if strings.Contains(p, "(") {
			pieces = append(pieces, p)
			continue
		}
		for _, q := range andRE.Split(p, -1) {
			if q = strings.TrimSpace(q); q != "" {
				pieces = append(pieces, q)
			}
		}
	}
	return pieces
}

var andRE = regexp.MustCompile(`(?i)\s+and\s+`)

var (
	brRE     = regexp.MustCompile(`(?i)<br\s*/?>`)
	tagRE    = regexp.MustCompile(`<[^>]*>`)
	linkRE   = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)
	spacesRE = regexp.MustCompile(`[ \t]+`)
)

// cleanCell strips inline markdown from a cell; a <br> becomes a newline.
func cleanCell(s string) string {
	s = brRE.ReplaceAllString(s, "\n")
	lines := strings.Split(s, "\n")
	var out []string
	for _, l := range lines {
		if l = cleanInline(l); l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// cleanInline strips code spans, emphasis markers, links and HTML tags.
func cleanInline(s string) string {
	s = linkRE.ReplaceAllString(s, "$1")
	s = tagRE.ReplaceAllString(s, "")
	s = strings.NewReplacer("`", "", "**", "", "__", "", "&nbsp;", " ", "&amp;", "&", "&lt;", "<", "&gt;", ">").Replace(s)
	return strings.TrimSpace(spacesRE.ReplaceAllString(s, " "))
}

// YAML renders the registry. Rows that could not be imported are written as
// comments where they stood in the document.
func (r *Result) YAML() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Imported from markdown by bindguard import. Review before enforcing:\n")
	b.WriteString("# notes hold what had no field; commented rows could not be imported.\n")
	head, err := marshal(struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Metadata   Metadata `yaml:"metadata"`
	}{r.Registry.APIVersion, r.Registry.Kind, r.Registry.Metadata})
	if err != nil {
		return nil, fmt.Errorf("import markdown: %w", err)
	}
	b.Write(head)
	if err := r.writeList(&b, "entries", r.Registry.Entries, false); err != nil {
		return nil, err
	}
	if err := r.writeList(&b, "removed", r.Registry.Removed, true); err != nil {
		return nil, err
	}
	for _, c := range r.comments {
		if c.toplvl {
			writeComment(&b, "", c.text)
		}
	}
	return b.Bytes(), nil
}

func (r *Result) writeList(b *bytes.Buffer, key string, ents []Entry, removed bool) error {
	var cs []comment
	for _, c := range r.comments {
		if !c.toplvl && c.removed == removed {
			cs = append(cs, c)
		}
	}
	if len(ents) == 0 && len(cs) == 0 {
		return nil
	}
	b.WriteString(key + ":\n")
	for _, e := range ents {
		for len(cs) > 0 && cs[0].line <= e.Line {
			writeComment(b, "  ", cs[0].text)
			cs = cs[1:]
		}
		out, err := marshal(e)
		if err != nil {
			return fmt.Errorf("import markdown: line %d: %w", e.Line, err)
		}
		for i, l := range strings.Split(strings.TrimSuffix(string(out), "\n"), "\n") {
			if i == 0 {
				b.WriteString("  - " + l + "\n")
			} else {
				b.WriteString("    " + l + "\n")
			}
		}
	}
	for _, c := range cs {
		writeComment(b, "  ", c.text)
	}
	return nil
}

// marshal encodes v as YAML indented by two spaces.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// writeComment writes text as one YAML comment line, with anything YAML could
// read as a line break or that is not printable replaced by a space.
func writeComment(b *bytes.Buffer, indent, text string) {
	clean := strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) || r == '\u0085' || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, text)
	b.WriteString(indent + "# " + strings.TrimRight(clean, " ") + "\n")
}
