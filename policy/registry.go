package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Registry is one or more registry files merged: their entries and removed
// ports concatenated in input order.
type Registry struct {
	// Sources describes each input document, in input order.
	Sources []Source
	// Entries are the ports components may bind.
	Entries []Entry
	// Removed are ports freed by removed features: binding them is a violation.
	Removed []Entry
	// Digest is a hex SHA-256 over the input files (see Load).
	Digest string

	// errs are the problems found while parsing. A registry that has them
	// still holds its well-formed entries, so that Validate can report
	// conflicts among those too, but it never compiles.
	errs ErrorList
}

// Source is the metadata of one registry document.
type Source struct {
	// File is the input name: a path as given to Load, or "builtin:…".
	File string
	// Name and Source are metadata.name and metadata.source.
	Name   string
	Source string
	// Pos is where the document starts.
	Pos Pos
}

// Bind says which local addresses an entry's ports may be bound to.
type Bind string

const (
	// BindAny allows any address. The zero Bind means BindAny.
	BindAny Bind = "any"
	// BindLocalhost allows only loopback addresses (see IsLoopback).
	BindLocalhost Bind = "localhost"
)

// PortRange is an inclusive range of ports; a single port has Lo == Hi.
type PortRange struct {
	Lo, Hi uint16
}

func (r PortRange) String() string {
	if r.Lo == r.Hi {
		return fmt.Sprint(r.Lo)
	}
	return fmt.Sprintf("%d-%d", r.Lo, r.Hi)
}

// Len is the number of ports in the range.
func (r PortRange) Len() int { return int(r.Hi) - int(r.Lo) + 1 }

// Entry is one item of a registry's entries or removed list.
type Entry struct {
	// Pos is where the entry's mapping starts; compiled rules point here.
	Pos   Pos
	Ports PortRange
	// Protocols lists each protocol once. Empty means TCP, the default.
	Protocols []Protocol
	Process   string
	// Owners may bind the ports; none means any process may.
	Owners Owners
	// NodeSelector must match the node's labels; empty matches every node.
	NodeSelector Selector
	Bind         Bind
	// Mode is ModeAudit, ModeEnforce or "" (the node's mode applies).
	Mode  Mode
	Team  string
	Since string
	Notes string
	// Removed is set for entries of the removed list; RemovedIn is their
	// "removed" field (a release).
	Removed   bool
	RemovedIn string
}

// protocols returns the entry's protocols, defaulting to TCP.
func (e *Entry) protocols() []Protocol {
	if len(e.Protocols) == 0 {
		return []Protocol{TCP}
	}
	return e.Protocols
}

// Matches reports whether the entry's node selector matches a node's labels.
func (e *Entry) Matches(nodeLabels map[string]string) bool {
	return e.NodeSelector.Matches(nodeLabels)
}

// processKey is how processes are compared: trimmed and case-insensitive.
func processKey(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// all returns the active entries followed by the removed ones.
func (r *Registry) all() []*Entry {
	out := make([]*Entry, 0, len(r.Entries)+len(r.Removed))
	for i := range r.Entries {
		out = append(out, &r.Entries[i])
	}
	for i := range r.Removed {
		out = append(out, &r.Removed[i])
	}
	return out
}

// FormatLabels prints labels as "[k=v,k2=v2]" with keys sorted.
func FormatLabels(labels map[string]string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, k := range slices.Sorted(maps.Keys(labels)) {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k + "=" + labels[k])
	}
	b.WriteByte(']')
	return b.String()
}
