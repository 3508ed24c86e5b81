package manager_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Every handler's error is answered by the HTTP edge with the status of
// its kind and its message in an APIError body. These are the errors of
// the handlers outside the apply path that no other test holds.
func TestHandlerErrorsAnswerTheirStatus(t *testing.T) {
	e := start(t)
	hc := e.rawClient(false)
	admin := "Bearer " + e.m.AdminToken()
	for _, c := range []struct {
		method, path, auth, contentType, body string
		status                                int
		msg                                   string
	}{
		{"POST", "/v1/tokens", admin, "text/plain", `{}`, http.StatusUnsupportedMediaType, `request body: Content-Type "text/plain"; send application/json`},
		{"GET", "/v1/objects", "Basic abc", "", "", http.StatusUnauthorized, `Authorization: want "Bearer TOKEN"`},
		{"GET", "/v1/audit?from=x", admin, "", "", http.StatusBadRequest, `from: "x": want an entry number`},
		{"GET", "/v1/audit?limit=0", admin, "", "", http.StatusBadRequest, `limit: "0": want 1 to 10000`},
		{"GET", "/v1/audit/verify?anchor=1", admin, "", "", http.StatusBadRequest, `anchor: "1": want SEQ:HASH`},
		{"GET", "/v1/watch?from=-1", admin, "", "", http.StatusBadRequest, `from: "-1": want a revision`},
		{"GET", "/v1/revisions/x", admin, "", "", http.StatusBadRequest, `rev: "x": want a revision number`},
		{"GET", "/v1/revisions/99", admin, "", "", http.StatusNotFound, `revision 99 is not a policy revision`},
		{"DELETE", "/v1/tokens/nobody", admin, "", "", http.StatusNotFound, `no token named "nobody"`},
		{"DELETE", "/v1/jointokens/nothing", admin, "", "", http.StatusNotFound, `no join token with id "nothing"`},
		{"POST", "/v1/certificates/00ff/revoke", admin, "", "", http.StatusNotFound, `no certificate with serial "00ff"`},
		{"POST", "/v1/hosts/nowhere/revoke", admin, "", "", http.StatusNotFound, `host "nowhere" has no certificates or join tokens`},
		{"POST", "/v1/join", "", "", `{"csr":"x"}`, http.StatusBadRequest, `token: required`},
		{"POST", "/v1/join", "", "", `{"token":"x"}`, http.StatusBadRequest, `csr: required`},
		{"POST", "/v1/jointokens", admin, "", `{"host":"Bad Host"}`, http.StatusBadRequest, `host: `},
		{"POST", "/v1/jointokens", admin, "", `{"host":"h1","ttl":"forever"}`, http.StatusBadRequest, `ttl: "forever": want a Go duration`},
		{"POST", "/v1/tokens", admin, "", `{"name":"-x","role":"admin"}`, http.StatusBadRequest, `name: "-x": want lowercase letters`},
		{"GET", "/v1/revisions?limit=0", admin, "", "", http.StatusBadRequest, `limit: "0": want 1 to`},
	} {
		req, err := http.NewRequestWithContext(ctx(t), c.method, e.m.URL()+c.path, strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		if c.auth != "" {
			req.Header.Set("Authorization", c.auth)
		}
		if c.contentType != "" {
			req.Header.Set("Content-Type", c.contentType)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var body api.APIError
		if err := json.NewDecoder(bytes.NewReader(data)).Decode(&body); err != nil {
			t.Errorf("%s %s: %d, body %q is not an APIError: %v", c.method, c.path, resp.StatusCode, data, err)
			continue
		}
		if resp.StatusCode != c.status || !strings.Contains(body.Error, c.msg) {
			t.Errorf("%s %s: %d %q, want %d with %q", c.method, c.path, resp.StatusCode, body.Error, c.status, c.msg)
		}
	}
}
