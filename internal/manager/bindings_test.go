package manager_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// The bindings are listed to any role, ended (sessions) by operators
// and cleared by admins only, each audited.
func TestBindingsRoutes(t *testing.T) {
	e := start(t)
	c := context.Background()
	sess := &policy.ConflictClass{Name: "bhbn-tx", Scope: "session", Datasets: []policy.Dataset{{Name: "a", Segment: "sa"}, {Name: "b", Segment: "sb"}}}
	perm := &policy.ConflictClass{Name: "bhbn-perm", Scope: "permanent", Datasets: sess.Datasets}
	in := bindings.Instance{Host: "bhbn-h", Namespace: "bhbn-ns", Name: "bhbn-w", ContainerID: "bhbn-c1"}
	for _, cc := range []*policy.ConflictClass{sess, perm} {
		if _, err := e.m.Bindings().Bind(c, in, cc, "a"); err != nil {
			t.Fatal(err)
		}
	}
	auditor, operator := e.token("bhbn-aud", api.RoleAuditor), e.token("bhbn-op", api.RoleOperator)
	var list api.BindingList
	if err := auditor.Do(ctx(t), "GET", "/v1/bindings", nil, &list); err != nil || len(list.Items) != 2 {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if b := list.Items[0]; b.Class != "bhbn-perm" || b.Dataset != "a" || b.Host != "bhbn-h" || b.ContainerID != "bhbn-c1" || b.Revision == 0 {
		t.Fatalf("first binding: %+v", b)
	}
	err := operator.Do(ctx(t), "DELETE", "/v1/bindings/bhbn-ns/bhbn-w/bhbn-perm", nil, nil)
	wantStatus(t, err, http.StatusForbidden, "")
	err = operator.Do(ctx(t), "POST", "/v1/bindings/bhbn-ns/bhbn-w/bhbn-perm/end", nil, nil)
	wantStatus(t, err, http.StatusConflict, "an admin clears it")
	if ended, err := operator.EndBinding(ctx(t), "bhbn-ns", "bhbn-w", "bhbn-tx"); err != nil || ended.Class != "bhbn-tx" {
		t.Fatalf("end the session: %+v, %v", ended, err)
	}
	if cleared, err := e.admin.ClearBinding(ctx(t), "bhbn-ns", "bhbn-w", "bhbn-perm"); err != nil || cleared.Class != "bhbn-perm" {
		t.Fatalf("clear: %+v, %v", cleared, err)
	}
	err = e.admin.Do(ctx(t), "DELETE", "/v1/bindings/bhbn-ns/bhbn-w/bhbn-perm", nil, nil)
	wantStatus(t, err, http.StatusNotFound, "bound to no dataset")
	if list, err := auditor.Bindings(ctx(t)); err != nil || len(list.Items) != 0 {
		t.Fatalf("list after: %+v, %v", list, err)
	}
	audit, err := e.admin.Audit(ctx(t), 1, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, en := range audit.Items {
		seen[en.Action] = en.Actor.Name
	}
	if seen["binding.end"] != "bhbn-op" || seen["binding.clear"] == "" || seen["binding.bind"] != "manager" {
		t.Fatalf("audited: %v", seen)
	}
}
