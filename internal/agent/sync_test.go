package agent

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

const remoteWorkload = `apiVersion: bulkhead.dev/v1
kind: Workload
metadata: {name: sell-db, namespace: trading, labels: {role: database, side: sell}}
spec: {ips: [10.20.2.20], host: h2, ports: [{name: postgres, port: 5432}]}
`

// A managed agent takes its objects only through Sync: each Sync is one
// validated change and one dataplane Apply, a refused one changes
// nothing, and a restarted agent enforces the last synced set at once.
func TestSync(t *testing.T) {
	ctx := context.Background()
	dir := shortDir(t)
	dp := newTestDP()
	opts := Options{StateDir: filepath.Join(dir, "state"), Host: "h1", Dataplane: dp, Manager: "https://127.0.0.1:1"}
	a, err := Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { a.Close() }()

	var e *Error
	if _, err := a.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); !errors.As(err, &e) || !errors.Is(err, fault.Conflict) {
		t.Fatalf("apply on a managed agent: %v, want 409", err)
	}
	changed := a.Changed()
	full := append(docs(t, examples), doc("remote", remoteWorkload))
	res, err := a.Sync(ctx, SyncRequest{Documents: full, Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("Changed did not fire after a sync")
	}
	n := len(a.Objects().Items)
	if len(res.Created) != n || n < 10 {
		t.Fatalf("replace created %d of %d objects", len(res.Created), n)
	}
	for _, r := range inventory[:3] { // buy-signal, sell-signal, buy-db: sell-db is remote
		if _, err := a.RegisterWorkload(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if id := a.State().Identity(netip.MustParseAddr("10.20.2.20")); id == 0 {
		t.Error("the remote workload's address has no identity")
	}

	// Puts and deletes of one feed revision: one Apply.
	before, _ := dp.snapshot()
	wall := api.ObjectRef{Kind: "Wall", Name: "buy-sell"}
	if _, err := a.Sync(ctx, SyncRequest{Deleted: []api.ObjectRef{wall, {Kind: "Wall", Name: "gone"}}}); err != nil {
		t.Fatal(err)
	}
	if after, _ := dp.snapshot(); after != before+1 {
		t.Errorf("a sync took %d dataplane applies, want 1", after-before)
	}
	// Refused: a policy naming a segment that does not exist.
	bad := doc("bad", `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: bad, namespace: trading}
spec:
  appliesTo: {segment: nowhere}
  ingress: [{name: x, action: allow}]
`)
	rev := a.Revision()
	if _, err := a.Sync(ctx, SyncRequest{Documents: []api.Document{bad}, Replace: true}); err == nil {
		t.Fatal("a sync naming a missing segment was accepted")
	}
	if a.Revision() != rev || len(a.Objects().Items) != n-1 {
		t.Errorf("a refused sync changed the state: revision %d → %d, %d objects", rev, a.Revision(), len(a.Objects().Items))
	}
	// Replace with fewer objects removes the rest in the same change.
	res, err = a.Sync(ctx, SyncRequest{Documents: docs(t, filepath.Join(examples, "00-baseline.yaml")), Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Deleted) != n-2 || len(res.Unchanged) != 1 {
		t.Errorf("replace: %d deleted, %d unchanged; want %d and 1", len(res.Deleted), len(res.Unchanged), n-2)
	}
	a.Close()
	dp2 := newTestDP()
	opts.Dataplane = dp2
	if a, err = Start(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if got := len(a.Objects().Items); got != 1 || len(a.Workloads()) != 3 {
		t.Errorf("restarted: %d objects and %d workloads, want 1 and 3", got, len(a.Workloads()))
	}
	if applies, _ := dp2.snapshot(); applies != 1 {
		t.Errorf("restarted: %d applies before serving, want 1", applies)
	}
}
