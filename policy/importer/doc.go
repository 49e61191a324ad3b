// Package importer turns vendor port documents into bindguard registries.
//
// Markdown reads the pipe tables of a markdown document (the form most
// vendor port lists are written in) and writes a PortRegistry as YAML. Column
// headers are matched by name, in any order; section headings set defaults
// (a "TCP"/"UDP" heading sets the protocol, a "Localhost-only" section sets
// bind: localhost, a "Previously allocated"/"removed"/"deprecated" section
// fills removed: instead of entries:). Nothing is dropped silently: cells it
// cannot map go into the entry's notes, and rows it cannot turn into an entry
// at all become YAML comments and warnings.
//
// The package owns only the conversion. It does not validate the result
// beyond producing well-formed entries: conflicts between entries are for
// package policy to find (bindguard check), and the output is meant to be
// reviewed by a person before it is enforced.
package importer
