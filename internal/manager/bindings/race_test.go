package bindings_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
)

// Many goroutines of two managers bind the same workloads, each to a
// dataset of its own choosing, at once: exactly one binding wins per
// workload, every caller gets that one, and one is audited.
func TestRaceOnBolt(t *testing.T) {
	path := boltPath(t)
	// Two handles on one file, one per manager.
	race(t, openBolt(t, path), openBolt(t, path))
}

// TestRaceOnEtcd is TestRaceOnBolt over a separately started etcd
// (Debian's etcd-server), each manager with a client of its own.
func TestRaceOnEtcd(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.Options{Members: 1})
	race(t, etcdStore(t, c.Endpoints()), etcdStore(t, c.Endpoints()))
}

func etcdStore(t testing.TB, endpoints []string) store.Store {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	st, err := etcdstore.New(cli, etcdstore.Options{Prefix: "/bhbn/test/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close(); cli.Close() })
	return st
}

func race(t *testing.T, a, b store.Store) {
	const workloads, perManager = 6, 12
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	managers := []*bindings.Bindings{newBindings(t, a, nil), newBindings(t, b, nil)}
	cc := class("lifecycle", 0)
	type result struct {
		workload int
		got      bindings.Binding
		err      error
	}
	results := make(chan result, workloads*perManager*len(managers))
	start := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workloads {
		for m, mgr := range managers {
			for g := range perManager {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					// Hosts race too: each caller speaks for the instance
					// as one of two hosts would report it.
					in := instance(fmt.Sprintf("bhbn-w%d", w))
					if g%2 == 1 {
						in.Host = "bhbn-host-b"
					}
					ds := cc.Datasets[(g+m)%len(cc.Datasets)].Name
					got, err := mgr.Bind(ctx, in, cc, ds)
					results <- result{w, got, err}
				}()
			}
		}
	}
	close(start)
	wg.Wait()
	close(results)
	winner := map[int]bindings.Binding{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("workload %d: %v", r.workload, r.err)
		}
		if w, ok := winner[r.workload]; !ok {
			winner[r.workload] = r.got
		} else if w != r.got {
			t.Fatalf("workload %d: one caller got %+v, another %+v", r.workload, w, r.got)
		}
	}
	for w, won := range winner {
		in := bindings.Instance{Host: won.Instance.Host, Namespace: "bhbn-pay", Name: fmt.Sprintf("bhbn-w%d", w)}
		for _, mgr := range managers {
			for _, d := range cc.Datasets {
				v, err := mgr.Check(ctx, in, cc, d.Name)
				want := bindings.Denied
				if d.Name == won.Dataset {
					want = bindings.Allowed
				}
				if err != nil || v.Outcome != want || *v.Binding != won {
					t.Fatalf("workload %d, %s: %s %+v, %v; want %s by %+v", w, d.Name, v.Outcome, v.Binding, err, want, won)
				}
			}
		}
	}
	list, err := managers[1].List(ctx)
	if err != nil || len(list) != workloads {
		t.Fatalf("list: %d bindings, %v; want %d", len(list), err, workloads)
	}
	if n := len(entries(t, a, "binding.bind")); n != workloads {
		t.Fatalf("%d binding.bind entries, want %d", n, workloads)
	}
}
