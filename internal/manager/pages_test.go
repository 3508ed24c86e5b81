package manager_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
	"go.yaml.in/yaml/v3"
)

// countingStore counts the keys a store answers under a prefix: what a
// request costs, whatever the machine's speed.
type countingStore struct {
	store.Store
	keys atomic.Int64
}

func (c *countingStore) Get(ctx context.Context, key string) (store.KV, error) {
	kv, err := c.Store.Get(ctx, key)
	if err == nil {
		c.keys.Add(1)
	}
	return kv, err
}

func (c *countingStore) List(ctx context.Context, prefix string) ([]store.KV, int64, error) {
	kvs, rev, err := c.Store.List(ctx, prefix)
	c.keys.Add(int64(len(kvs)))
	return kvs, rev, err
}

func namespaceDoc(i int) []api.Document {
	return doc("ns.yaml", fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata:\n  name: ns\n  labels:\n    n: \"%d\"\n", i))
}

// History is answered in pages (limit and cursor), and a page reads as
// many keys from the store however long the history is.
func TestHistoryPages(t *testing.T) {
	dir := t.TempDir()
	bolt, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { bolt.Close() })
	cs := &countingStore{Store: bolt}
	e := startOn(t, cs, dir)
	cost := func(path string) int64 {
		before := cs.keys.Load()
		if err := e.admin.Do(ctx(t), "GET", path, nil, nil); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return cs.keys.Load() - before
	}
	apply := func(from, to int) {
		for i := from; i < to; i++ {
			if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: namespaceDoc(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(0, 5)
	shortAudit, shortRevs := cost("/v1/audit?limit=1"), cost("/v1/revisions?limit=1")
	apply(5, 60)
	if long := cost("/v1/audit?limit=1"); long != shortAudit {
		t.Errorf("GET /v1/audit?limit=1 read %d keys after 5 applies, %d after 60", shortAudit, long)
	}
	if long := cost("/v1/revisions?limit=1"); long != shortRevs {
		t.Errorf("GET /v1/revisions?limit=1 read %d keys after 5 applies, %d after 60", shortRevs, long)
	}

	// Revisions, newest first, page by page.
	var all api.RevisionList
	if err := e.admin.Do(ctx(t), "GET", "/v1/revisions?limit=1000", nil, &all); err != nil || len(all.Items) != 60 || all.Next != "" {
		t.Fatalf("all revisions: %d items, next %q, %v", len(all.Items), all.Next, err)
	}
	var paged []api.Revision
	path := "/v1/revisions?limit=7"
	for range 20 {
		var page api.RevisionList
		if err := e.admin.Do(ctx(t), "GET", path, nil, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Items) > 7 || page.Head != all.Head {
			t.Fatalf("%s: %d items, head %d", path, len(page.Items), page.Head)
		}
		paged = append(paged, page.Items...)
		if page.Next == "" {
			break
		}
		path = "/v1/revisions?limit=7&cursor=" + page.Next
	}
	if len(paged) != len(all.Items) {
		t.Fatalf("the pages hold %d revisions, the list %d", len(paged), len(all.Items))
	}
	for i := range paged {
		if paged[i] != all.Items[i] {
			t.Fatalf("revision %d: %+v in the pages, %+v in the list", i, paged[i], all.Items[i])
		}
	}
	pager, err := client.New(client.Config{URL: e.m.URL(), CA: e.m.CAPEM(), Token: e.m.AdminToken(), PageSize: 7})
	if err != nil {
		t.Fatal(err)
	}
	if revs, err := pager.Revisions(ctx(t), 0); err != nil || len(revs.Items) != 60 || revs.Items[59] != all.Items[59] || revs.Next != "" {
		t.Fatalf("the client's Revisions follows the pages: %d items, next %q, %v", len(revs.Items), revs.Next, err)
	}
	if revs, err := pager.Revisions(ctx(t), 10); err != nil || len(revs.Items) != 10 || revs.Next == "" {
		t.Fatalf("the client's Revisions stops at max: %d items, next %q, %v", len(revs.Items), revs.Next, err)
	}

	// The audit log, oldest first, page by page.
	var seqs []uint64
	from := uint64(1)
	for range 100 {
		page, err := e.admin.Audit(ctx(t), from, 9)
		if err != nil {
			t.Fatal(err)
		}
		for _, en := range page.Items {
			seqs = append(seqs, en.Seq)
		}
		if page.Next == 0 {
			break
		}
		from = page.Next
	}
	for i, s := range seqs {
		if s != uint64(i+1) {
			t.Fatalf("entry %d of the pages has seq %d", i, s)
		}
	}
	if len(seqs) < 61 {
		t.Fatalf("the pages hold %d entries", len(seqs))
	}

	for _, bad := range []string{"/v1/revisions?limit=0", "/v1/revisions?limit=1001", "/v1/revisions?cursor=x", "/v1/revisions?cursor=999", "/v1/audit?limit=0"} {
		err := e.admin.Do(ctx(t), "GET", bad, nil, nil)
		wantStatus(t, err, http.StatusBadRequest, strings.SplitN(strings.SplitN(bad, "?", 2)[1], "=", 2)[0])
	}
}

// Every history route documents its page parameters.
func TestOpenAPIDocumentsPages(t *testing.T) {
	data, err := os.ReadFile("../../api/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Paths map[string]map[string]struct {
			Parameters []struct{ Name string } `yaml:"parameters"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(data, &d); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string][]string{"/v1/revisions": {"limit", "cursor"}, "/v1/audit": {"limit", "from"}} {
		var got []string
		for _, p := range d.Paths[path]["get"].Parameters {
			got = append(got, p.Name)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("GET %s documents %v, not %s", path, got, w)
			}
		}
	}
}
