package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// retryLater is an error that a client may retry after a number of
// seconds: writeError answers it with Retry-After.
type retryLater struct {
	after int
	err   error
}

func (e *retryLater) Error() string { return e.err.Error() }
func (e *retryLater) Unwrap() error { return e.err }

// writeError is the one place a handler's error becomes a status code.
// Errors are typed where they arise (internal/fault) and wrapped with %w
// on their way here; the kind of the outermost fault.Error gives the
// status, its message and details the body. An untyped error is the
// manager's own fault: a 500, logged.
func (m *Manager) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if m.storeUnavailable(w, err) {
		return
	}
	if rl := (*retryLater)(nil); errors.As(err, &rl) {
		w.Header().Set("Retry-After", strconv.Itoa(rl.after))
	}
	var fe *fault.Error
	if !errors.As(err, &fe) {
		m.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeJSON(w, http.StatusInternalServerError, api.APIError{Error: "manager: " + err.Error()})
		return
	}
	status := fault.StatusOf(fe)
	if status == http.StatusInternalServerError {
		m.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, api.APIError{Error: fe.Msg, Details: fe.Details})
}

// decode reads a JSON body into v strictly (decodeStrict), within the
// route's body limit and deadline. Errors name the field.
func (m *Manager) decode(w http.ResponseWriter, r *http.Request, v any) error {
	return m.decodeBody(w, r, v, false)
}

// decodeOptional is decode for a body that may be empty.
func (m *Manager) decodeOptional(w http.ResponseWriter, r *http.Request, v any) error {
	return m.decodeBody(w, r, v, true)
}

func (m *Manager) decodeBody(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fault.New(fault.Unsupported, nil, "request body: Content-Type %q; send application/json", ct)
	}
	// admit bounds the body (http.MaxBytesReader) and the time to read it.
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return fault.New(fault.TooLarge, nil, "request body: larger than the limit of %d bytes", tooBig.Limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fault.New(fault.Timeout, nil, "request body: not received in time (the limits are in docs/manager.md)")
		}
		return fault.New(fault.BadRequest, nil, "request body: %w", err)
	}
	bodyRead(w)
	if optional && len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeStrict(data, v)
}

// decodeStrict decodes one JSON value as strict.JSON does (exact keys,
// each once, valid UTF-8, nothing after the value). Every request body
// goes through it but a flow batch's (decodeBatch, flows.go says why).
func decodeStrict(data []byte, v any) error {
	if err := strict.JSON(data, v); err != nil {
		return fault.New(fault.BadRequest, nil, "request body: %w", err)
	}
	return nil
}
