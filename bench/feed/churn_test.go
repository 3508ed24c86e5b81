package benchfeed

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/feed"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// syncCounter counts the agent's Syncs by the follower's log line.
type syncCounter struct{ n atomic.Int64 }

func (c *syncCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *syncCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "revision enforced" {
		c.n.Add(1)
	}
	return nil
}
func (c *syncCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *syncCounter) WithGroup(string) slog.Handler      { return c }

const policy = `apiVersion: bulkhead.dev/v1
kind: Policy
metadata: {name: churn, namespace: trading}
spec:
  appliesTo: {selector: {matchLabels: {role: app}}}
  egress:
    - {name: out, action: allow, services: [{protocol: tcp, port: %d}]}
`

func TestChurn(t *testing.T) {
	if os.Getenv("BULKHEAD_LONG") == "" {
		t.Skip("set BULKHEAD_LONG=1 for the churn benchmark")
	}
	n := 2000
	if v, err := strconv.Atoi(os.Getenv("BULKHEAD_CHURN")); err == nil && v > 0 {
		n = v
	}
	ctx := context.Background()
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	admin, err := client.New(client.Config{URL: m.URL(), CA: m.CAPEM(), Token: m.AdminToken()})
	if err != nil {
		t.Fatal(err)
	}
	jt, err := m.CreateJoinToken(ctx, "node-1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "creds")
	if _, err := feed.Join(ctx, creds, m.URL(), nil, jt.CAHash, jt.Secret, "node-1"); err != nil {
		t.Fatal(err)
	}
	var dp dataplane.Dataplane = dataplane.NewUserspace()
	if os.Getenv("BULKHEAD_NFT") != "" {
		ns := nstest.NS(t, "bhhb")
		if dp, err = nft.New(nft.Options{NetNS: ns.Path()}); err != nil {
			t.Fatal(err)
		}
	}
	a, err := agent.Start(ctx, agent.Options{StateDir: filepath.Join(dir, "state"), Host: "node-1",
		Dataplane: dp, Manager: m.URL(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	count := &syncCounter{}
	f, err := feed.Start(ctx, feed.Options{Agent: a, URL: m.URL(), Dir: creds, Logger: slog.New(count)})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	apply := func(port int) int64 {
		res, err := admin.Apply(ctx, api.ManagerApplyRequest{Documents: []api.Document{{Name: "churn.yaml", Data: fmt.Sprintf(policy, port)}}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Revision
	}
	wait := func(rev int64) {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := f.WaitRealized(wctx, rev); err != nil {
			t.Fatal(err)
		}
	}
	// The example policies with their walls, so that each Sync validates,
	// proves and compiles a real set.
	files, _ := filepath.Glob("../../examples/policies/*.yaml")
	var docs []api.Document
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, api.Document{Name: name, Data: string(data)})
	}
	if _, err := admin.Apply(ctx, api.ManagerApplyRequest{Documents: docs}); err != nil {
		t.Fatal(err)
	}
	wait(apply(1))
	before := count.n.Load()
	var maxBehind int64
	t0 := time.Now()
	var last int64
	for i := range n {
		last = apply(1000 + i%30000)
		maxBehind = max(maxBehind, last-f.Status().Realized)
	}
	burst := time.Since(t0)
	t1 := time.Now()
	wait(last)
	lastLag := time.Since(t1)
	t2 := time.Now()
	urgent := apply(9)
	wait(urgent)
	urgentLag := time.Since(t2)
	t.Logf("%d applies in %s (%.1f ms each); the agent made %d Syncs for them; at most %d revisions behind the head; "+
		"the last realized %s after it was committed; an urgent change after the burst realized in %s",
		n, burst.Round(time.Millisecond), float64(burst.Microseconds())/float64(n)/1000, count.n.Load()-before, maxBehind,
		lastLag.Round(time.Millisecond), urgentLag.Round(time.Millisecond))
}
