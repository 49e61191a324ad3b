package policy

import (
	"cmp"
	"slices"
	"strings"
)

// Error is one problem in registry input, at the place it was found.
type Error struct {
	Pos Pos
	Msg string
}

// Error returns "FILE:LINE:COL: msg", or "FILE: msg" when the position in
// the file is unknown (line 0).
func (e *Error) Error() string {
	if e.Pos.Line == 0 {
		return e.Pos.File + ": " + e.Msg
	}
	return e.Pos.String() + ": " + e.Msg
}

// ErrorList is every problem found in registry input. As an error it prints
// one problem per line, sorted by file, line and column.
type ErrorList []*Error

func (l ErrorList) Error() string {
	switch len(l) {
	case 0:
		return "no errors"
	case 1:
		return l[0].Error()
	}
	s := slices.Clone(l)
	s.Sort()
	lines := make([]string, len(s))
	for i, e := range s {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Sort orders the list by file, line, column and message, in place.
func (l ErrorList) Sort() {
	slices.SortStableFunc(l, func(a, b *Error) int {
		return cmp.Or(
			strings.Compare(a.Pos.File, b.Pos.File),
			cmp.Compare(a.Pos.Line, b.Pos.Line),
			cmp.Compare(a.Pos.Col, b.Pos.Col),
			strings.Compare(a.Msg, b.Msg),
		)
	})
}

// Err returns the list as an error, or nil when it is empty, so that an empty
// list never becomes a non-nil error interface.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}

// sortedUnique sorts the list and drops exact repeats (the same message at
// the same place, as an anchor used by several aliases produces).
func (l ErrorList) sortedUnique() ErrorList {
	l.Sort()
	return slices.CompactFunc(l, func(a, b *Error) bool { return a.Pos == b.Pos && a.Msg == b.Msg })
}

// add appends a positioned error.
func (l *ErrorList) add(pos Pos, msg string) {
	*l = append(*l, &Error{Pos: pos, Msg: msg})
}
