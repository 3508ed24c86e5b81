// Package fault names the kinds of failure Bulkhead's components report —
// invalid input, not found, conflict, unavailable, forbidden, too large —
// so that errors are typed where they arise, travel wrapped with %w
// through every layer, and are turned into status codes only at the
// edges (the manager's HTTP API, the agent's socket). A caller asks
// errors.Is(err, fault.Conflict); a cause wrapped inside stays reachable
// (errors.Is(err, dataplane.ErrClosed) holds across the agent's loop).
package fault

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// The kinds. Each is a sentinel that an Error of that kind matches.
var (
	BadRequest  = errors.New("bad request")    // the request is malformed
	Invalid     = errors.New("invalid")        // it reads, but what it says is not valid
	NotFound    = errors.New("not found")      // it names what does not exist
	Conflict    = errors.New("conflict")       // it contradicts the state (a wall breach, a lost race)
	Forbidden   = errors.New("forbidden")      // the caller may not do it
	TooLarge    = errors.New("too large")      // it is over a bound
	Unavailable = errors.New("unavailable")    // not now: shutting down, a dependency is away
	Internal    = errors.New("internal error") // a fault of Bulkhead's own
)

// Refined kinds: each has a status of its own at the HTTP edge and also
// matches the kind it refines (errors.Is(err, Forbidden) holds for an
// Unauthenticated err), so that a caller asking the broader question gets
// the same answer.
var (
	Unauthenticated = refine(Forbidden, "unauthenticated")     // the caller is not known
	TooMany         = refine(Unavailable, "too many requests") // over a rate or a count of requests; come back later
	Unsupported     = refine(BadRequest, "unsupported media")  // the body is not in a form the edge takes
	Timeout         = refine(BadRequest, "request timeout")    // the request did not arrive in time
)

// kind is a refined kind: its own sentinel, which unwraps to its parent.
type kind struct {
	name   string
	parent error
}

func refine(parent error, name string) error { return &kind{name: name, parent: parent} }

func (k *kind) Error() string { return k.name }
func (k *kind) Unwrap() error { return k.parent }

// Error is a failure of one kind: a message for people, the details that
// list every problem (each with its place), and the cause.
type Error struct {
	Kind    error
	Msg     string
	Details []string
	Err     error // the cause, or nil
}

func (e *Error) Error() string {
	if len(e.Details) == 0 {
		return e.Msg
	}
	return e.Msg + ":\n  " + strings.Join(e.Details, "\n  ")
}

// Unwrap makes both the kind and the cause reachable by errors.Is and As.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// New makes an Error of a kind. Like fmt.Errorf, a %w verb in format
// wraps its argument as the cause.
func New(kind error, details []string, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	e := &Error{Kind: kind, Msg: err.Error(), Details: details}
	if u := errors.Unwrap(err); u != nil {
		e.Err = u
	} else if w, ok := err.(interface{ Unwrap() []error }); ok && len(w.Unwrap()) > 0 {
		e.Err = errors.Join(w.Unwrap()...)
	}
	return e
}

// Details lists the problems an error carries: an Error's details, each
// error of source.Errors, or the error itself.
func Details(err error) []string {
	var e *Error
	if errors.As(err, &e) && len(e.Details) > 0 {
		return e.Details
	}
	var errs source.Errors
	if errors.As(err, &errs) {
		out := make([]string, len(errs))
		for i, e := range errs {
			out[i] = e.Error()
		}
		return out
	}
	return []string{err.Error()}
}

// Message is an error's message without its details.
func Message(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Msg
	}
	return err.Error()
}

// StatusOf is the status an edge answers err with: that of the kind of
// the outermost Error in its chain (a cause of another kind wrapped
// inside does not change it), else HTTPStatus.
func StatusOf(err error) int {
	if k := KindOf(err); k != nil {
		return HTTPStatus(k)
	}
	return HTTPStatus(err)
}

// KindOf is the kind of the outermost Error in err's chain, or nil if
// there is none: what err says it is, whatever its causes are.
func KindOf(err error) error {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return nil
}

// HTTPStatus is the status an edge answers an error with, by the first
// kind it matches; refined kinds come before the kinds they refine.
func HTTPStatus(err error) int {
	for _, m := range []struct {
		kind   error
		status int
	}{
		{Unauthenticated, http.StatusUnauthorized},
		{TooMany, http.StatusTooManyRequests},
		{Unsupported, http.StatusUnsupportedMediaType},
		{Timeout, http.StatusRequestTimeout},
		{BadRequest, http.StatusBadRequest},
		{Invalid, http.StatusUnprocessableEntity},
		{NotFound, http.StatusNotFound},
		{Conflict, http.StatusConflict},
		{Forbidden, http.StatusForbidden},
		{TooLarge, http.StatusRequestEntityTooLarge},
		{Unavailable, http.StatusServiceUnavailable},
	} {
		if errors.Is(err, m.kind) {
			return m.status
		}
	}
	return http.StatusInternalServerError
}

// FromHTTPStatus is the kind a client reads back from a status.
func FromHTTPStatus(status int) error {
	switch status {
	case http.StatusBadRequest:
		return BadRequest
	case http.StatusUnprocessableEntity:
		return Invalid
	case http.StatusNotFound:
		return NotFound
	case http.StatusConflict:
		return Conflict
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return Forbidden
	case http.StatusRequestEntityTooLarge:
		return TooLarge
	case http.StatusTooManyRequests:
		return TooMany
	case http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Unavailable
	}
	return Internal
}
