package benchmanager

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// BenchmarkHistoryPage times a page of history (GET /v1/audit?limit=1,
// GET /v1/revisions?limit=1 and ?limit=100) after 100 and after 10,000
// revisions, in one run: the ratio of the two is the cost of history's
// length.
//
//	go test ./bench/manager -run '^$' -bench HistoryPage -benchtime 2000x -timeout 30m
func BenchmarkHistoryPage(b *testing.B) {
	dir := b.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := m.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	admin, err := client.New(client.Config{URL: m.URL(), CA: m.CAPEM(), Token: m.AdminToken()})
	if err != nil {
		b.Fatal(err)
	}
	revs := 0
	grow := func(to int) {
		for ; revs < to; revs++ {
			data := fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Namespace\nmetadata:\n  name: ns\n  labels:\n    n: \"%d\"\n", revs)
			if _, err := admin.Apply(ctx, api.ManagerApplyRequest{Documents: []api.Document{{Name: "ns.yaml", Data: data}}}); err != nil {
				b.Fatal(err)
			}
		}
	}
	for _, history := range []int{100, 10_000} {
		grow(history)
		for _, path := range []string{"/v1/audit?limit=1", "/v1/revisions?limit=1", "/v1/revisions?limit=100"} {
			b.Run(fmt.Sprintf("history=%d/%s", history, path), func(b *testing.B) {
				for b.Loop() {
					if err := admin.Do(ctx, "GET", path, nil, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
