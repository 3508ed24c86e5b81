package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/source"
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
	var he *httpError
	if !errors.As(err, &he) {
		m.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		he = &httpError{status: http.StatusInternalServerError, msg: "manager: " + err.Error()}
	}
	writeJSON(w, he.status, api.APIError{Error: he.msg, Details: he.details})
}

// decode reads a JSON body into v strictly: at most the manager's body
// limit, no unknown fields, one value. Errors name the field.
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
	body := http.MaxBytesReader(w, r.Body, m.cfg.MaxBodyBytes)
	data, err := io.ReadAll(body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errorf(http.StatusRequestEntityTooLarge, "request body: larger than the limit of %d bytes", tooBig.Limit)
		}
		return errorf(http.StatusBadRequest, "request body: %v", err)
	}
	if optional && len(bytes.TrimSpace(data)) == 0 {
		return nil
	}
	return decodeStrict(data, v)
}

// decodeStrict decodes one JSON value, refusing unknown fields and
// trailing data, with errors that name the field and the offset.
func decodeStrict(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errorf(http.StatusBadRequest, "request body: empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		var syntaxErr *json.SyntaxError
		switch {
		case errors.As(err, &typeErr):
			return errorf(http.StatusBadRequest, "request body: field %q: got JSON %s, want %s (at byte %d)", typeErr.Field, typeErr.Value, typeErr.Type, typeErr.Offset)
		case errors.As(err, &syntaxErr):
			return errorf(http.StatusBadRequest, "request body: malformed JSON at byte %d: %v", syntaxErr.Offset, err)
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.TrimPrefix(err.Error(), "json: unknown field ")
			return errorf(http.StatusBadRequest, "request body: unknown field %s", field)
		}
		return errorf(http.StatusBadRequest, "request body: %v", err)
	}
	if dec.More() {
		return errorf(http.StatusBadRequest, "request body: data after the JSON value at byte %d", dec.InputOffset())
	}
	return nil
}
