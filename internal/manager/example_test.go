package manager_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// An in-process manager, an agent that joins it, reports its workloads
// and follows its feed, as `bulkhead up` and the agents do.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	dir, _ := os.MkdirTemp("", "bhmg-example")
	defer os.RemoveAll(dir)

	st, _ := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	defer st.Close()
	m, err := manager.Start(ctx, manager.Config{Store: st, DataDir: dir, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	// An admin (here the manager itself) makes a join token for node-1;
	// the agent joins with it and from then on speaks mTLS.
	jt, _ := m.CreateJoinToken(ctx, "node-1", time.Hour)
	creds, err := client.Join(ctx, m.URL(), nil, jt.CAHash, jt.Secret, "node-1")
	if err != nil {
		fmt.Println(err)
		return
	}
	agent, _ := creds.Client(m.URL())
	rep, _ := agent.ReportWorkloads(ctx, "node-1", []api.HostWorkload{
		{Namespace: "shop", Name: "web", Labels: map[string]string{"app": "web"}, IPs: []string{"10.0.0.10"}},
	}, nil, true)
	fmt.Println("identity of shop/web:", rep.Workloads[0].Identity)

	// Follow the feed from the start: a snapshot, then a "rev" line.
	// Watch returns the revision to resume from: the last "rev" line's
	// plus one, counting only the lines fn accepted.
	_, err = agent.Watch(ctx, 0, func(ev api.FeedEvent) error {
		fmt.Println(strings.TrimSpace(ev.Type + " " + ev.Op))
		if ev.Type == api.FeedRev {
			_ = agent.ReportStatus(ctx, "node-1", api.HostStatus{Realized: ev.Rev, Health: "ok"})
			return errStop
		}
		return nil
	})
	fmt.Println(errors.Is(err, errStop))
	// Output:
	// identity of shop/web: 256
	// snapshot
	// identity put
	// workload put
	// rev
	// true
}

var errStop = errors.New("stop")
