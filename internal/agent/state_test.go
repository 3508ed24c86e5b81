package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func TestRestartConvergesFromTheStateDir(t *testing.T) {
	dir := shortDir(t)
	a := startAgent(t, dir)
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	for _, w := range inventory {
		if _, err := a.c.RegisterWorkload(ctx, w); err != nil {
			t.Fatal(err)
		}
	}
	// Update one object from another file: the first file keeps the rest.
	changed := strings.Replace(docs(t, examples+"/20-trading.yaml")[0].Data, "priority: 100", "priority: 90", 1)
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("later.yaml", changed)}}); err != nil {
		t.Fatal(err)
	}
	if err := a.c.UnregisterWorkload(ctx, "trading", "sell-db"); err != nil {
		t.Fatal(err)
	}
	before := a.Objects()
	rev := a.Revision()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if !a.dp.closed {
		t.Fatal("Close did not close the dataplane")
	}
	if _, err := os.Stat(a.socket); !os.IsNotExist(err) {
		t.Fatalf("the socket is left behind: %v", err)
	}

	b := startAgent(t, dir)
	if b.Revision() != rev {
		t.Fatalf("revision %d after restart, want %d", b.Revision(), rev)
	}
	if after := b.Objects(); !reflect.DeepEqual(before, after) {
		t.Fatalf("objects differ after restart")
	}
	if l := b.Workloads(); len(l) != 3 {
		t.Fatalf("%d workloads after restart", len(l))
	}
	// The restarted agent enforced its state before serving.
	if n, _ := b.dp.snapshot(); n != 1 {
		t.Fatalf("%d applies at start", n)
	}
	if got := b.dp.enforced(t, "trading/buy-signal", "trading/buy-db", policy.TCP, 5432); got != policy.Allow {
		t.Fatalf("after restart: %s", got)
	}
	if got := b.dp.enforced(t, "trading/sell-signal", "trading/buy-db", policy.TCP, 5432); got != policy.Deny {
		t.Fatalf("after restart: %s", got)
	}
	// Positions survive the restart: an error about a stored object cites
	// the file it was applied from.
	seg := doc("seg.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: buy-side}\nspec: {selector: {}}\n")
	_, err := b.c.Delete(ctx, api.ApplyRequest{Documents: []api.Document{seg}})
	if e := apiError(t, err); !strings.Contains(e.Error(), "examples/policies/10-segments.yaml:31:1: spec.segments[0]") {
		t.Fatalf("%v", e)
	}
	// The state file holds only documents that still define something.
	var st objectsState
	if _, err := b.state.read(objectsFile, &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Documents) != 5 || st.Documents[4].Name != "later.yaml" || len(st.Documents[4].Objects) != 1 {
		t.Fatalf("%d documents: %+v", len(st.Documents), st.Documents[len(st.Documents)-1].Objects)
	}
}

func TestCorruptStateRefusesToStart(t *testing.T) {
	for name, content := range map[string]string{
		objectsFile:   `{"format": 1, "revision": 3, "documents": [{"name": "x.yaml", "data": "kind: Nonsense", "objects": []}]}`,
		workloadsFile: `{"format": 1, "revision": 3, "workloads": [{"namespace": "a"`,
	} {
		dir := shortDir(t)
		state := filepath.Join(dir, "state")
		os.MkdirAll(state, 0o700)
		os.WriteFile(filepath.Join(state, name), []byte(content), 0o600)
		dp := newTestDP()
		_, err := Start(ctx, Options{StateDir: state, Socket: filepath.Join(dir, "s.sock"), Dataplane: dp})
		if err == nil || !strings.Contains(err.Error(), filepath.Join(state, name)+" is corrupt") {
			t.Fatalf("%s: %v", name, err)
		}
		if n, _ := dp.snapshot(); n != 0 || !dp.closed {
			t.Fatalf("%s: a corrupt state reached the dataplane, or it was left open", name)
		}
	}
}

func TestStateDirIsLocked(t *testing.T) {
	dir := shortDir(t)
	startAgent(t, dir)
	_, err := Start(ctx, Options{StateDir: filepath.Join(dir, "state"), Dataplane: newTestDP()})
	if err == nil || !strings.Contains(err.Error(), "in use by another agent") {
		t.Fatal(err)
	}
}

func TestTheDataplaneRefusingTheStateStopsStart(t *testing.T) {
	dir := shortDir(t)
	a := startAgent(t, dir)
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	_, err := Start(ctx, Options{StateDir: filepath.Join(dir, "state"), Dataplane: &testDP{Userspace: dataplane.NewUserspace(), fail: errBoom}})
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatal(err)
	}
}
