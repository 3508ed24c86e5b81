package bindings_test

import (
	"fmt"
	"testing"

	"github.com/bulkhead-dev/bulkhead/internal/manager/bindings"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
)

// BenchmarkBindings measures what the escalation path pays: a Check of a
// bound workload (one store read) and a first access (a read and an
// audited compare-and-set), on bolt and on a separately started etcd.
// docs/benchmarks.md has the figures.
func BenchmarkBindings(b *testing.B) {
	for _, kind := range []string{"bolt", "etcd"} {
		b.Run(kind, func(b *testing.B) {
			var st store.Store
			if kind == "bolt" {
				st = openBoltTB(b)
			} else {
				st = etcdStore(b, etcdtest.StartCluster(b, etcdtest.Options{Members: 1}).Endpoints())
			}
			bs := bindings.New(bindings.Config{Store: st, Audit: newLogTB(b, st), Now: newClock().Now})
			cc := class("lifecycle", 0)
			bound := instance("bhbn-bound")
			if _, err := bs.Bind(ctx, bound, cc, "cards"); err != nil {
				b.Fatal(err)
			}
			b.Run("check", func(b *testing.B) {
				for b.Loop() {
					if v, err := bs.Check(ctx, bound, cc, "ledger"); err != nil || v.Outcome != bindings.Denied {
						b.Fatal(v, err)
					}
				}
			})
			b.Run("first-bind", func(b *testing.B) {
				n := 0
				for b.Loop() {
					n++
					if _, err := bs.Bind(ctx, instance(fmt.Sprintf("bhbn-w%d", n)), cc, "cards"); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
