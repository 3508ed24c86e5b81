package agent

import (
	"errors"
	"fmt"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// Errors keep their kind and their cause through the agent's loop: a
// caller in the same process (the feed, `bulkhead up`) can tell a closed
// dataplane from a refused change without reading status codes.
func TestErrorsKeepKindAndCause(t *testing.T) {
	a := startAgent(t, shortDir(t))
	good := doc("good.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: dbs}\nspec: {selector: {matchLabels: {role: database}}}\n")
	a.dp.setFail(fmt.Errorf("nft: flush: %w", dataplane.ErrClosed))
	_, err := a.Agent.Apply(ctx, api.ApplyRequest{Documents: []api.Document{good}})
	if !errors.Is(err, dataplane.ErrClosed) || !errors.Is(err, fault.Unavailable) {
		t.Fatalf("the dataplane's error is lost: %v", err)
	}
	a.dp.setFail(nil)
	bad := doc("bad.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: x}\nspec: {cidrs: [{cidr: 10.0.0.0/33}]}\n")
	_, err = a.Agent.Apply(ctx, api.ApplyRequest{Documents: []api.Document{bad}})
	if !errors.Is(err, fault.Invalid) || fault.HTTPStatus(err) != 422 {
		t.Fatalf("an invalid document: %v (status %d)", err, fault.HTTPStatus(err))
	}
}
