package flows

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// TestIngestOverHTTPS: simulated agents (BHFS_AGENTS, default 4) post
// batches of 4,096 flows to a real manager on loopback over their mutual
// TLS for BHFS_SECONDS (default 5; 30 with BULKHEAD_BENCH=1), each batch
// after the previous one's answer, as a collector does; every flow sent
// must be stored. It reports flows per second stored.
func TestIngestOverHTTPS(t *testing.T) {
	seconds := 5
	if os.Getenv("BULKHEAD_BENCH") != "" {
		seconds = 30
	}
	if v, err := strconv.Atoi(os.Getenv("BHFS_SECONDS")); err == nil && v > 0 {
		seconds = v
	}
	agents := 4
	if v, err := strconv.Atoi(os.Getenv("BHFS_AGENTS")); err == nil && v > 0 {
		agents = v
	}
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: filepath.Join(dir, "m"), Listen: "127.0.0.1:0",
		Limits: manager.Limits{Rate: 10000, Burst: 10000}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	clients := make([]*client.Client, agents)
	for i := range clients {
		host := "node-" + strconv.Itoa(i)
		jt, err := m.CreateJoinToken(ctx, host, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		creds, err := client.Join(ctx, m.URL(), m.CAPEM(), jt.CAHash, jt.Secret, host)
		if err != nil {
			t.Fatal(err)
		}
		if clients[i], err = creds.Client(m.URL()); err != nil {
			t.Fatal(err)
		}
	}
	const per = 4096
	var sent atomic.Uint64
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sink := client.FlowSink{Client: c}
			for seq := uint64(1); time.Now().Before(end); seq++ {
				b := storeBatch(seq, per, time.Now(), 80*time.Millisecond, 1000)
				b.Stream = "agent-" + strconv.Itoa(i)
				if err := sink.Send(ctx, b); err != nil {
					errs <- err
					return
				}
				sent.Add(per)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	admin, err := client.New(client.Config{URL: m.URL(), CA: m.CAPEM(), Token: m.AdminToken()})
	if err != nil {
		t.Fatal(err)
	}
	mc, err := admin.FlowCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if mc.Stored != sent.Load() {
		t.Errorf("stored %d flows, sent %d", mc.Stored, sent.Load())
	}
	t.Logf("%d agents, %s: %d flows stored, %.0f flows/s, %d batches", agents, elapsed.Round(time.Millisecond),
		mc.Stored, float64(mc.Stored)/elapsed.Seconds(), mc.Batches)
}
