// Package source says where things were written: positions in files, and
// errors that carry a position, a field path and what would be valid.
package source

import (
	"fmt"
	"sort"
	"strings"
)

// Pos is a place in a file. The zero Pos is unknown.
type Pos struct {
	File   string
	Line   int
	Column int
}

func (p Pos) String() string {
	switch {
	case p.File == "" && p.Line == 0:
		return ""
	case p.Line == 0:
		return p.File
	case p.File == "":
		return fmt.Sprintf("%d:%d", p.Line, p.Column)
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
}

// Error is one problem with the input: where, which field, and what is wrong
// (ideally with what would be valid).
type Error struct {
	Pos  Pos
	Path string // field path, e.g. spec.ingress[0].from[1].cidr
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if s := e.Pos.String(); s != "" {
		b.WriteString(s)
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors collects every problem of a run, so that a user sees them all at once.
type Errors []*Error

// Add records a problem.
func (l *Errors) Add(pos Pos, path, format string, args ...any) {
	*l = append(*l, &Error{Pos: pos, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// Err returns l sorted by position as an error, or nil when l is empty.
func (l Errors) Err() error {
	if len(l) == 0 {
		return nil
	}
	sort.SliceStable(l, func(i, j int) bool {
		a, b := l[i].Pos, l[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return l
}

func (l Errors) Error() string {
	lines := make([]string, len(l))
	for i, e := range l {
		lines[i] = e.Error()
	}
	if len(l) > 1 {
		return fmt.Sprintf("%d errors:\n  %s", len(l), strings.Join(lines, "\n  "))
	}
	return lines[0]
}
