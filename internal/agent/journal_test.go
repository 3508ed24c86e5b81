package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
)

// journaled applies the examples and then changes that the journal
// records (an update from another file, a delete), closes the agent, and
// returns what it held and the state dir.
func journaled(t *testing.T) (dir string, objects api.ObjectList, rev int64) {
	t.Helper()
	dir = shortDir(t)
	a := startAgent(t, dir)
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(docs(t, examples+"/20-trading.yaml")[0].Data, "priority: 100", "priority: 90", 1)
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{doc("later.yaml", changed)}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.RegisterWorkload(ctx, inventory[0]); err != nil {
		t.Fatal(err)
	}
	seg := doc("seg.yaml", "apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: extra}\nspec: {selector: {matchLabels: {role: extra}}}\n")
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{seg}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.c.Delete(ctx, api.ApplyRequest{Documents: []api.Document{seg}}); err != nil {
		t.Fatal(err)
	}
	objects, rev = a.Objects(), a.Revision()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if recs, _, err := a.state.readJournal(); err != nil || len(recs) != 4 {
		t.Fatalf("%d journal records, want 4: %v", len(recs), err)
	}
	return filepath.Join(dir, "state"), objects, rev
}

func restartSame(t *testing.T, state string, objects api.ObjectList, rev int64) {
	t.Helper()
	b := startAgent(t, filepath.Dir(state))
	if b.Revision() != rev {
		t.Fatalf("revision %d after restart, want %d", b.Revision(), rev)
	}
	if after := b.Objects(); !reflect.DeepEqual(objects, after) {
		t.Fatal("objects differ after restart")
	}
	// Restoring folds the journal into objects.json.
	if fi, err := os.Stat(filepath.Join(state, journalFile)); err != nil || fi.Size() != 0 {
		t.Fatalf("journal not emptied at start: %v", err)
	}
	b.Close()
}

func TestJournalReplaysOnRestart(t *testing.T) {
	state, objects, rev := journaled(t)
	restartSame(t, state, objects, rev)
	// And again, from objects.json alone.
	restartSame(t, state, objects, rev)
}

// A crash after a compaction wrote objects.json, before it emptied the
// journal: the journal's records are older than the snapshot, skipped.
func TestJournalOlderThanSnapshotIsSkipped(t *testing.T) {
	state, objects, rev := journaled(t)
	journal, err := os.ReadFile(filepath.Join(state, journalFile))
	if err != nil {
		t.Fatal(err)
	}
	restartSame(t, state, objects, rev) // compacts
	if err := os.WriteFile(filepath.Join(state, journalFile), journal, 0o600); err != nil {
		t.Fatal(err)
	}
	restartSame(t, state, objects, rev)
}

// A crash in the middle of an append leaves a last line without its
// newline: that change was never answered, and is dropped.
func TestJournalCutShortIsDropped(t *testing.T) {
	state, objects, rev := journaled(t)
	p := filepath.Join(state, journalFile)
	line, err := encodeRecord(journalRecord{Revision: rev + 1, Delete: []api.ObjectRef{{Kind: "Segment", Name: "buy-side"}}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(line[:len(line)/2])
	f.Close()
	restartSame(t, state, objects, rev)
}

func TestCorruptJournalRefusesToStart(t *testing.T) {
	state, _, _ := journaled(t)
	p := filepath.Join(state, journalFile)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string][]byte{
		"flipped byte":   append([]byte(strings.Replace(string(data), "later.yaml", "laser.yaml", 1)), nil...),
		"not a record":   []byte("hello\n"),
		"revision order": append(append([]byte{}, data...), data...),
	} {
		if err := os.WriteFile(p, content, 0o600); err != nil {
			t.Fatal(err)
		}
		dp := newTestDP()
		_, err := Start(ctx, Options{StateDir: state, Dataplane: dp})
		if err == nil || !strings.Contains(err.Error(), p+" is corrupt") {
			t.Fatalf("%s: %v", name, err)
		}
		if n, _ := dp.snapshot(); n != 0 {
			t.Fatalf("%s: a corrupt state reached the dataplane", name)
		}
	}
}

// The journal is folded into objects.json once it outgrows it.
func TestJournalIsCompacted(t *testing.T) {
	a := startAgent(t, shortDir(t))
	if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: docs(t, examples)}); err != nil {
		t.Fatal(err)
	}
	a.state.snapshotSize = 0
	padding := "# " + strings.Repeat("x", 64<<10) + "\n"
	for i := range 20 {
		seg := doc("seg.yaml", padding+"apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: extra}\nspec: {selector: {matchLabels: {role: r"+strings.Repeat("x", i)+"}}}\n")
		if _, err := a.c.Apply(ctx, api.ApplyRequest{Documents: []api.Document{seg}}); err != nil {
			t.Fatal(err)
		}
	}
	objects, rev := a.Objects(), a.Revision()
	a.Close()
	if a.state.snapshotSize == 0 || a.state.journalSize >= 20*(64<<10) {
		t.Fatalf("not compacted: snapshot %d bytes, journal %d", a.state.snapshotSize, a.state.journalSize)
	}
	restartSame(t, filepath.Join(a.dir, "state"), objects, rev)
}
