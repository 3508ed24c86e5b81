package bounds_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bounds"
	"github.com/bulkhead-dev/bulkhead/internal/manager/inventory"
	"github.com/bulkhead-dev/bulkhead/internal/manager/mirror"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
)

// rig is a store whose hosts/ an Index follows through a mirror, as the
// manager's does, and an inventory of reported workloads.
type rig struct {
	st   store.Store
	ctx  context.Context
	mi   *mirror.Mirror
	ix   bounds.Index
	inv  inventory.Inventory
	live map[string]bool
	c    bounds.Checker
}

func newRig(t *testing.T) *rig {
	t.Helper()
	st, err := boltstore.Open(filepath.Join(t.TempDir(), "bhm2.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	r := &rig{st: st, ctx: ctx, live: map[string]bool{}}
	r.mi = mirror.New(st, bounds.Prefix, slog.New(slog.NewTextHandler(io.Discard, nil)))
	sub := func(want string) func(string) bool {
		return func(key string) bool { _, s := bounds.KeyParts(key); return strings.HasPrefix(s, want) && want != "" }
	}
	recs := mirror.Add(r.mi, sub("bounds"), decode[bounds.Record])
	held := mirror.Add(r.mi, sub("held/"), decode[bounds.Held])
	r.mi.OnReset, recs.OnChange, held.OnChange = r.ix.Reset, r.ix.ChangeBounds, r.ix.ChangeHeld
	r.c = bounds.Checker{Index: &r.ix, Workloads: &r.inv, Live: func(h string) bool { return r.live[h] }}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.mi.Run(rctx) }()
	t.Cleanup(func() { stop(); <-done })
	return r
}

func decode[T any](kv store.KV) (*T, error) {
	v := new(T)
	return v, json.Unmarshal(kv.Value, v)
}

// put stores ops and waits until the Index has them.
func (r *rig) put(t *testing.T, ops ...store.Op) {
	t.Helper()
	rev, _, err := r.st.Txn(r.ctx, nil, ops)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.mi.WaitRev(r.ctx, rev); err != nil {
		t.Fatal(err)
	}
}

func setBounds(host string, rec bounds.Record) store.Op {
	v, _ := json.Marshal(rec)
	return store.Put(bounds.Key(host), v)
}

func hold(host, addr, workload string) store.Op {
	v, _ := json.Marshal(bounds.Held{Workload: workload})
	return store.Put(bounds.HeldKey(host, netip.MustParseAddr(addr)), v)
}

func (r *rig) report(w api.HostWorkload) {
	r.inv.Change("feed/workloads/"+w.Host+"/"+w.Namespace+"/"+w.Name, nil, &w)
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

// TestClaimsAreBounded: a host's report is refused, naming the field and
// why, for each thing it may not claim, and passes when it claims only
// its own.
func TestClaimsAreBounded(t *testing.T) {
	r := newRig(t)
	r.put(t, setBounds("h1", bounds.Record{Ranges: pfx("10.1.0.0/24"), HostIPs: pfx("192.0.2.0/28"), Namespaces: []string{"bhm2"}}),
		setBounds("h2", bounds.Record{Ranges: pfx("10.2.0.0/24")}))
	r.report(api.HostWorkload{Host: "h3", Namespace: "bhm2", Name: "web", IPs: []string{"10.1.0.9"}, HostIP: "192.0.2.3"})

	for _, c := range []struct {
		name string
		wl   api.HostWorkload
		want string // in the only problem; "" none
	}{
		{"its own", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"10.1.0.1"}, HostIP: "192.0.2.1"}, ""},
		{"loopback", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"127.0.0.1"}}, "workloads[0].ips[0]: 127.0.0.1: a loopback address"},
		{"gateway", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"169.254.1.1"}}, "a link-local address"},
		{"outside its ranges", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"10.9.0.1"}}, "outside host h1's ranges 10.1.0.0/24"},
		{"another's workload's", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"10.1.0.9"}}, "already belongs to bhm2/web on host h3"},
		{"another's name", api.HostWorkload{Namespace: "bhm2", Name: "web", IPs: []string{"10.1.0.2"}}, "workloads[0].name: workload bhm2/web is host h3's"},
		{"a namespace not allowed", api.HostWorkload{Namespace: "other", Name: "a", IPs: []string{"10.1.0.2"}}, "may not run workloads in namespace \"other\""},
		{"another's underlay", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"10.1.0.2"}, HostIP: "192.0.2.3"}, "hostIP: 192.0.2.3: host h3's underlay address"},
		{"an underlay outside its prefixes", api.HostWorkload{Namespace: "bhm2", Name: "a", IPs: []string{"10.1.0.2"}, HostIP: "198.51.100.1"}, "outside host h1's underlay prefixes"},
	} {
		got := r.c.Claims("h1", []api.HostWorkload{c.wl}, nil, false)
		if c.want == "" && len(got) != 0 || c.want != "" && (len(got) != 1 || !strings.Contains(got[0], c.want)) {
			t.Errorf("%s: %q; want %q", c.name, got, c.want)
		}
	}
	// Without bounds of its own, a host still may not reach into another's ranges.
	if got := r.c.Claims("h4", []api.HostWorkload{{Namespace: "x", Name: "a", IPs: []string{"10.2.0.7"}}}, nil, false); len(got) != 1 ||
		!strings.Contains(got[0], "inside host h2's ranges") {
		t.Errorf("h4 in h2's ranges: %q", got)
	}
}

// TestHeldAddresses: an address held for a live host is not another's to
// take, one held for a host gone quiet is; the host's own report
// releases it, and the index follows the store's deletes.
func TestHeldAddresses(t *testing.T) {
	r := newRig(t)
	r.put(t, hold("h2", "10.0.0.7", "bhm2/db"), hold("h2", "10.0.0.8", "bhm2/log"))
	claim := []api.HostWorkload{{Namespace: "bhm2", Name: "db2", IPs: []string{"10.0.0.7"}}}

	r.live["h2"] = true
	if got := r.c.Claims("h1", claim, nil, false); len(got) != 1 || !strings.Contains(got[0], "held for host h2 (its workload bhm2/db's record") {
		t.Errorf("a live host's held address: %q", got)
	}
	r.live["h2"] = false
	if got := r.c.Claims("h1", claim, nil, false); len(got) != 0 {
		t.Errorf("a quiet host's held address: %q", got)
	}

	keys := func(ops []store.Op) []string {
		var out []string
		for _, op := range ops {
			if !op.Delete {
				t.Errorf("a release puts %s", op.Key)
			}
			out = append(out, op.Key)
		}
		return out
	}
	k7, k8 := bounds.HeldKey("h2", netip.MustParseAddr("10.0.0.7")), bounds.HeldKey("h2", netip.MustParseAddr("10.0.0.8"))
	if got := keys(r.ix.Release("h2", claim, nil, false)); !slices.Equal(got, []string{k7}) {
		t.Errorf("claimed again: releases %v, want %s", got, k7)
	}
	if got := keys(r.ix.Release("h2", nil, []string{"bhm2/log"}, false)); !slices.Equal(got, []string{k8}) {
		t.Errorf("deleted: releases %v, want %s", got, k8)
	}
	if got := keys(r.ix.Release("h2", nil, nil, true)); !slices.Equal(got, []string{k7, k8}) {
		t.Errorf("a full report releases %v, want both", got)
	}
	if got := r.ix.Release("h1", nil, nil, true); len(got) != 0 {
		t.Errorf("h1 releases h2's holds: %v", got)
	}
	r.put(t, store.Delete(k7))
	if _, ok := r.ix.HeldBy(netip.MustParseAddr("10.0.0.7")); ok || len(r.ix.HeldOf("h2")) != 1 {
		t.Errorf("after the delete the index still holds 10.0.0.7: %v", r.ix.HeldOf("h2"))
	}
}

// TestParseAndBroken: bounds an admin sets are read whole, every problem
// named; ranges may not overlap another host's, and bounds the stored
// workloads already break are listed.
func TestParseAndBroken(t *testing.T) {
	r := newRig(t)
	r.put(t, setBounds("h2", bounds.Record{Ranges: pfx("10.2.0.0/16")}))
	_, details := r.ix.Parse("h1", api.HostBounds{Ranges: []string{"10.2.1.0/24", "10.3.0.1/24", "0.0.0.0/0", "nope"},
		Namespaces: []string{"Bad"}, Held: []string{"10.0.0.1"}})
	for _, want := range []string{"held: read only", "ranges[0]: 10.2.1.0/24 overlaps host h2's range 10.2.0.0/16",
		`ranges[1]: "10.3.0.1/24" has host bits set; write 10.3.0.0/24`,
		"ranges[2]: 0.0.0.0/0 is every address",
		`ranges[3]: "nope": want a CIDR`, `namespaces[0]: "Bad"`} {
		if !slices.ContainsFunc(details, func(d string) bool { return strings.Contains(d, want) }) {
			t.Errorf("no %q in %q", want, details)
		}
	}
	rec, details := r.ix.Parse("h1", api.HostBounds{Ranges: []string{"10.1.0.0/24"}, Namespaces: []string{"bhm2"}})
	if len(details) != 0 || len(rec.Ranges) != 1 {
		t.Fatalf("good bounds: %+v %q", rec, details)
	}
	stored := slices.Values([]*api.HostWorkload{
		{Host: "h1", Namespace: "bhm2", Name: "in", IPs: []string{"10.1.0.1"}},
		{Host: "h1", Namespace: "other", Name: "out", IPs: []string{"10.9.0.1"}},
		{Host: "h3", Namespace: "bhm2", Name: "theirs", IPs: []string{"10.1.0.2"}},
	})
	want := []string{
		"namespaces: workload other/out of host h1 runs in namespace other",
		"ranges: hold 10.1.0.2, the address of workload bhm2/theirs on host h3",
		"ranges: workload other/out of host h1 has 10.9.0.1, outside them",
	}
	if got := bounds.Broken("h1", rec, stored); !slices.Equal(got, want) {
		t.Errorf("broken:\n%q\nwant\n%q", got, want)
	}
}
