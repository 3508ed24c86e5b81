package manager_test

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"go.yaml.in/yaml/v3"
)

// schemaTypes maps the document's schemas to the Go types they describe.
var schemaTypes = map[string]any{
	"APIError": api.APIError{}, "Health": api.Health{}, "Document": api.Document{}, "ObjectRef": api.ObjectRef{},
	"TokenRequest": api.TokenRequest{}, "Token": api.Token{}, "TokenList": []api.Token{},
	"JoinTokenRequest": api.JoinTokenRequest{}, "JoinToken": api.JoinToken{}, "JoinRequest": api.JoinRequest{},
	"JoinResult": api.JoinResult{}, "Certificate": api.Certificate{}, "CertificateList": []api.Certificate{},
	"ManagerApplyRequest": api.ManagerApplyRequest{}, "ManagerApplyResult": api.ManagerApplyResult{},
	"ObjectList": api.ObjectList{}, "Revision": api.Revision{}, "RevisionList": api.RevisionList{},
	"ObjectChange": api.ObjectChange{}, "RevisionDiff": api.RevisionDiff{}, "RollbackRequest": api.RollbackRequest{},
	"NamedPort": api.NamedPort{}, "HostWorkload": api.HostWorkload{}, "WorkloadReport": api.WorkloadReport{},
	"ReportResult": api.ReportResult{}, "WorkloadList": api.WorkloadList{}, "HostStatus": api.HostStatus{}, "HostBounds": api.HostBounds{},
	"Host": api.Host{}, "HostList": api.HostList{}, "Identity": api.Identity{}, "IdentityList": api.IdentityList{},
	"AuditActor": api.AuditActor{}, "AuditEntry": api.AuditEntry{}, "AuditList": api.AuditList{},
	"AuditVerify": api.AuditVerify{}, "FeedEvent": api.FeedEvent{},
	"Binding": api.Binding{}, "BindingList": api.BindingList{},
}

type openapiDoc struct {
	OpenAPI    string                          `yaml:"openapi"`
	Paths      map[string]map[string]openapiOp `yaml:"paths"`
	Components struct {
		Schemas   map[string]any             `yaml:"schemas"`
		Responses map[string]openapiResponse `yaml:"responses"`
	} `yaml:"components"`
}

type openapiOp struct {
	Security    *[]map[string][]string     `yaml:"security"`
	RequestBody *openapiResponse           `yaml:"requestBody"`
	Responses   map[string]openapiResponse `yaml:"responses"`
}

type openapiResponse struct {
	Ref     string                    `yaml:"$ref"`
	Content map[string]openapiContent `yaml:"content"`
}

type openapiContent struct {
	Schema  map[string]any `yaml:"schema"`
	Example any            `yaml:"example"`
}

func readOpenAPI(t *testing.T) openapiDoc {
	t.Helper()
	data, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d openapiDoc
	if err := yaml.Unmarshal(data, &d); err != nil {
		t.Fatalf("api/openapi.yaml: %v", err)
	}
	if d.OpenAPI != "3.1.0" {
		t.Fatalf("openapi: %q, want 3.1.0", d.OpenAPI)
	}
	return d
}

// TestOpenAPICoversTheRoutes: every route the server registers is in the
// document, and every operation in the document is a route.
func TestOpenAPICoversTheRoutes(t *testing.T) {
	e := start(t)
	d := readOpenAPI(t)
	var documented []string
	for path, ops := range d.Paths {
		for method, op := range ops {
			if method == "parameters" {
				continue
			}
			documented = append(documented, strings.ToUpper(method)+" "+path)
			public := op.Security != nil && len(*op.Security) == 0
			if public != (path == "/healthz" || path == "/readyz" || path == "/v1/join") {
				t.Errorf("%s %s: security says public=%v", method, path, public)
			}
		}
	}
	served := e.m.Routes()
	sort.Strings(documented)
	sort.Strings(served)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is served but not in api/openapi.yaml", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("api/openapi.yaml documents %s, which the server does not serve", r)
		}
	}
}

// TestOpenAPIExamplesDecode: every example decodes strictly into the Go
// type of its schema, and every schema names a Go type.
func TestOpenAPIExamplesDecode(t *testing.T) {
	d := readOpenAPI(t)
	for name := range d.Components.Schemas {
		if _, ok := schemaTypes[name]; !ok {
			t.Errorf("schema %s has no Go type in the test's table", name)
		}
	}
	check := func(where string, c openapiContent) {
		ref, _ := c.Schema["$ref"].(string)
		name := strings.TrimPrefix(ref, "#/components/schemas/")
		typ, ok := schemaTypes[name]
		if !ok {
			t.Errorf("%s: schema %q is not a known type", where, ref)
			return
		}
		if c.Example == nil {
			t.Errorf("%s: no example", where)
			return
		}
		data, err := json.Marshal(c.Example)
		if err != nil {
			t.Errorf("%s: example: %v", where, err)
			return
		}
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(reflect.New(reflect.TypeOf(typ)).Interface()); err != nil {
			t.Errorf("%s: the example does not decode into api.%s: %v\n%s", where, name, err, data)
		}
	}
	n := 0
	for path, ops := range d.Paths {
		for method, op := range ops {
			if op.RequestBody != nil {
				for ct, c := range op.RequestBody.Content {
					check(method+" "+path+" request "+ct, c)
					n++
				}
			}
			for code, resp := range op.Responses {
				if resp.Ref != "" {
					resp = d.Components.Responses[strings.TrimPrefix(resp.Ref, "#/components/responses/")]
				}
				for ct, c := range resp.Content {
					check(method+" "+path+" "+code+" "+ct, c)
					n++
				}
			}
		}
	}
	if n < 40 {
		t.Fatalf("only %d examples checked", n)
	}
}
