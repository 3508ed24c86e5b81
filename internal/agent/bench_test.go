package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/netns/nstest"
)

// nullDP enforces nothing: the benchmarks measure the agent alone.
type nullDP struct{}

func (nullDP) Apply(context.Context, dataplane.Desired) error { return nil }
func (nullDP) Counters(context.Context) (dataplane.Counters, error) {
	return dataplane.Counters{}, nil
}
func (nullDP) Close() error { return nil }

// floor is n policies of one rule each, in n/10 namespaces, with a
// registered workload per policy.
func floor(b *testing.B, n int, dp dataplane.Dataplane) (*Agent, []api.Document) {
	dir := b.TempDir()
	a, err := Start(context.Background(), Options{StateDir: filepath.Join(dir, "state"), Host: "h1", Dataplane: dp})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { a.Close() })
	var sb strings.Builder
	for i := range n {
		fmt.Fprintf(&sb, "---\napiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p%d, namespace: ns%d}\nspec:\n  appliesTo: {selector: {matchLabels: {app: a%d}}}\n  ingress:\n    - action: allow\n      from: [{selector: {matchLabels: {app: a%d}}}]\n      services: [{protocol: tcp, port: %d}]\n", i, i%(n/10+1), i, (i+1)%n, 1000+i%5000)
	}
	if _, err := a.Apply(context.Background(), api.ApplyRequest{Documents: []api.Document{{Name: "floor.yaml", Data: sb.String()}}}); err != nil {
		b.Fatal(err)
	}
	// Concurrently, so that registrations share writes of the state file.
	errs := make(chan error, n)
	sem := make(chan struct{}, maxBatch)
	for i := range n {
		w := api.WorkloadRegistration{Namespace: fmt.Sprintf("ns%d", i%(n/10+1)), Name: fmt.Sprintf("w%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("a%d", i)}, IPs: []string{fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)}, Interface: fmt.Sprintf("bh%d", i)}
		sem <- struct{}{}
		go func() {
			_, err := a.RegisterWorkload(context.Background(), w)
			<-sem
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	change := func(port int) api.Document {
		return api.Document{Name: "change.yaml", Data: fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Policy\nmetadata: {name: p0, namespace: ns0}\nspec:\n  appliesTo: {selector: {matchLabels: {app: a0}}}\n  ingress:\n    - action: allow\n      from: [{selector: {matchLabels: {app: a1}}}]\n      services: [{protocol: tcp, port: %d}]\n", port)}
	}
	return a, []api.Document{change(7000), change(7001)}
}

// BenchmarkApplyOneChange measures apply to enforced (without the
// dataplane's share) for one changed policy among n.
func BenchmarkApplyOneChange(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) { benchApply(b, n, nullDP{}) })
	}
}

// BenchmarkApplyOneChangeKernel is BenchmarkApplyOneChange with the
// nftables dataplane in a throwaway namespace.
func BenchmarkApplyOneChangeKernel(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			host := nstest.NS(b, "bhag")
			b.Cleanup(func() { nft.Cleanup(host.Path()) })
			dp, err := nft.New(nft.Options{NetNS: host.Path()})
			if err != nil {
				b.Fatal(err)
			}
			benchApply(b, n, dp)
		})
	}
}

func benchApply(b *testing.B, n int, dp dataplane.Dataplane) {
	a, changes := floor(b, n, dp)
	var enforced int64
	i := 0
	for b.Loop() {
		res, err := a.Apply(context.Background(), api.ApplyRequest{Documents: changes[i%2 : i%2+1]})
		if err != nil || len(res.Updated) != 1 {
			b.Fatal(res, err)
		}
		enforced += res.EnforcedMicros
		i++
	}
	b.ReportMetric(float64(enforced)/float64(i), "µs-to-enforced/op")
}

// BenchmarkRegisterWorkload measures one registration among n workloads.
func BenchmarkRegisterWorkload(b *testing.B) {
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			a, _ := floor(b, n, nullDP{})
			for i := 0; b.Loop(); i++ {
				w := api.WorkloadRegistration{Namespace: "ns0", Name: "extra", Labels: map[string]string{"app": fmt.Sprintf("a%d", i%n)},
					IPs: []string{"10.200.0.1"}, Interface: "bhextra"}
				if _, err := a.RegisterWorkload(context.Background(), w); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
