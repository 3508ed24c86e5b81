package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
)

// httpError is an error with the status it answers with and, when the
// input had several problems, each of them.
type httpError struct {
	status  int
	msg     string
	details []string
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, args ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// invalid turns input errors into a 422 that lists each with its place.
func invalid(msg string, err error) *httpError {
	e := &httpError{status: http.StatusUnprocessableEntity, msg: msg}
	var list source.Errors
	if errors.As(err, &list) {
		for _, le := range list {
			e.details = append(e.details, le.Error())
		}
	} else {
		e.details = []string{err.Error()}
	}
	return e
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func (m *Manager) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if m.storeUnavailable(w, err) {
		return
	}
	var (
		he *httpError
		fe *fault.Error
	)
	switch {
	case errors.As(err, &he):
	case errors.As(err, &fe):
		// Typed where it arose (internal/fault); this edge gives it its status.
		he = &httpError{status: fault.HTTPStatus(fe), msg: fe.Msg, details: fe.Details}
	default:
		m.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		he = &httpError{status: http.StatusInternalServerError, msg: "manager: " + err.Error()}
	}
	if he.status == http.StatusInternalServerError && fe != nil {
		m.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, he.status, api.APIError{Error: he.msg, Details: he.details})
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
		return errorf(http.StatusUnsupportedMediaType, "request body: Content-Type %q; send application/json", ct)
	}
	// admit bounds the body (http.MaxBytesReader) and the time to read it.
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errorf(http.StatusRequestEntityTooLarge, "request body: larger than the limit of %d bytes", tooBig.Limit)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return errorf(http.StatusRequestTimeout, "request body: not received in time (the limits are in docs/manager.md)")
		}
		return errorf(http.StatusBadRequest, "request body: %v", err)
	}
	bodyRead(w)
	if optional && len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeStrict(data, v)
}

// decodeStrict decodes one JSON value as strict.JSON does (exact keys,
// each once, valid UTF-8, nothing after the value). Every request body
// goes through it.
func decodeStrict(data []byte, v any) error {
	if err := strict.JSON(data, v); err != nil {
		return errorf(http.StatusBadRequest, "request body: %v", err)
	}
	return nil
}
