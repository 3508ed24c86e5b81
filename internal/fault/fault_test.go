package fault_test

import (
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// A refined kind has its own status and still matches the kind it
// refines, so that a caller asking the broader question gets the same
// answer as before the refinement.
func TestRefinedKinds(t *testing.T) {
	for _, c := range []struct {
		kind, parent error
		status       int
	}{
		{fault.Unauthenticated, fault.Forbidden, http.StatusUnauthorized},
		{fault.TooMany, fault.Unavailable, http.StatusTooManyRequests},
		{fault.Unsupported, fault.BadRequest, http.StatusUnsupportedMediaType},
		{fault.Timeout, fault.BadRequest, http.StatusRequestTimeout},
	} {
		err := fmt.Errorf("wrapped: %w", fault.New(c.kind, nil, "some %s", "thing"))
		if !errors.Is(err, c.kind) || !errors.Is(err, c.parent) {
			t.Errorf("%v: errors.Is the kind %v, its parent %v: want both", c.kind, errors.Is(err, c.kind), errors.Is(err, c.parent))
		}
		if got := fault.HTTPStatus(err); got != c.status {
			t.Errorf("%v: HTTPStatus %d, want %d", c.kind, got, c.status)
		}
		if got := fault.HTTPStatus(c.parent); got == c.status {
			t.Errorf("%v: the parent answers %d too", c.kind, got)
		}
	}
	if !errors.Is(fault.FromHTTPStatus(http.StatusUnauthorized), fault.Forbidden) ||
		!errors.Is(fault.FromHTTPStatus(http.StatusTooManyRequests), fault.Unavailable) {
		t.Error("a client reading 401 or 429 back no longer gets the kinds it got before")
	}
}

// The kind an Error was made with decides its status, not a cause of
// another kind wrapped inside it.
func TestStatusOfKindNotCause(t *testing.T) {
	cause := fault.New(fault.NotFound, nil, "no such thing")
	err := fault.New(fault.Conflict, nil, "changed meanwhile: %w", cause)
	if !errors.Is(err, fault.NotFound) {
		t.Fatal("the cause is not reachable")
	}
	if got := fault.StatusOf(err); got != http.StatusConflict {
		t.Errorf("StatusOf = %d, want 409", got)
	}
	if got := fault.StatusOf(errors.New("plain")); got != http.StatusInternalServerError {
		t.Errorf("StatusOf(plain) = %d, want 500", got)
	}
}

func TestKindOf(t *testing.T) {
	err := fmt.Errorf("op: %w", fault.New(fault.Unauthenticated, nil, "who?"))
	if k := fault.KindOf(err); !errors.Is(k, fault.Forbidden) || k != fault.Unauthenticated {
		t.Errorf("KindOf = %v, want unauthenticated", k)
	}
	if k := fault.KindOf(errors.New("plain")); k != nil {
		t.Errorf("KindOf(plain) = %v, want nil", k)
	}
}
