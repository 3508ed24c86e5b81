package manager_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager"
	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/boltstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore"
	"github.com/bulkhead-dev/bulkhead/internal/store/etcdstore/etcdtest"
)

// stallingStore holds the first Txn that would move the head (the commit
// of a change) until released: a store that stalls under a change.
type stallingStore struct {
	store.Store
	once             sync.Once
	entered, release chan struct{}
}

func (s *stallingStore) Txn(ctx context.Context, conds []store.Cond, ops []store.Op) (int64, bool, error) {
	for _, op := range ops {
		if op.Key == "feed/head" {
			s.once.Do(func() {
				close(s.entered)
				<-s.release
			})
			break
		}
	}
	return s.Store.Txn(ctx, conds, ops)
}

// A change whose commit waited on the store for longer than the change
// deadline, and then lost one compare-and-set to another manager, tries
// again and lands: the deadline counts contention, not waiting.
func TestAStallIsNotContention(t *testing.T) {
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clock := newTestClock()
	stall := &stallingStore{Store: st, entered: make(chan struct{}), release: make(chan struct{})}
	e1 := startOn(t, stall, filepath.Join(dir, "m1"), func(c *manager.Config) { c.Now = clock.Now })
	e2 := startOn(t, st, filepath.Join(dir, "m2"))
	e2.admin = e2.client(e1.m.AdminToken())

	done := make(chan error, 1)
	go func() {
		_, err := e1.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: seg(1)})
		done <- err
	}()
	select {
	case <-stall.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the first change did not reach its commit within 10 s")
	}
	// While it waits: 31 s pass on its clock, and the other manager
	// commits, so that the stalled commit loses its compare-and-set.
	if _, err := e2.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: seg(2)}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(31 * time.Second)
	close(stall.release)
	if err := <-done; err != nil {
		t.Fatalf("a change that waited and then lost once: %v", err)
	}
	segs, err := e1.admin.Objects(ctx(t), "segments")
	if err != nil || len(segs.Items) != 2 {
		t.Fatalf("segments after both changes: %+v %v", segs, err)
	}
}

// readyz asks the manager's /readyz, as a load balancer would.
func readyz(t *testing.T, e *env) (int, string) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.m.CAPEM())
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(e.m.URL() + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// With two of three etcd members down, the manager answers within
// seconds: a change with 503 and the cause, reads with what they have or
// 503, and /readyz says not ready, until the quorum is back.
func TestQuorumLossAnswers503(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.Options{Members: 3})
	const timeout = 2 * time.Second
	e := startOn(t, boundedEtcdStore(t, c, timeout), t.TempDir())
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: seg(1)}); err != nil {
		t.Fatal(err)
	}
	if code, body := readyz(t, e); code != http.StatusOK {
		t.Fatalf("readyz with a quorum: %d %s", code, body)
	}

	c.Kill(1)
	c.Kill(2)
	lost := time.Now()
	// The probe alone, before any request finds out, makes it not ready.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, body := readyz(t, e)
		if code == http.StatusServiceUnavailable && strings.Contains(body, "store unavailable") {
			t.Logf("readyz not ready %s after the quorum was lost: %s", time.Since(lost).Round(time.Millisecond), strings.Join(strings.Fields(body), " "))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("readyz 10 s after the quorum was lost: %d %s", code, body)
		}
	}

	const answerWithin = timeout + 3*time.Second // the bound, and a leader election
	start := time.Now()
	_, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: seg(2)})
	took := time.Since(start)
	wantStatus(t, err, http.StatusServiceUnavailable, "store unavailable")
	if took > answerWithin {
		t.Errorf("an apply without a quorum took %s to answer, want at most %s", took, answerWithin)
	}
	t.Logf("apply without a quorum: %s: %v", took.Round(time.Millisecond), err)
	for _, r := range []struct {
		name string
		call func() error
	}{
		{"objects", func() error { _, err := e.admin.Objects(ctx(t), ""); return err }},
		{"revisions", func() error { _, err := e.admin.Revisions(ctx(t), 0); return err }},
		{"audit verify", func() error { _, err := e.admin.VerifyAudit(ctx(t)); return err }},
	} {
		start := time.Now()
		err := r.call()
		took := time.Since(start)
		if err != nil && (status(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), "store unavailable")) {
			t.Errorf("%s without a quorum: %v, want an answer or 503 store unavailable", r.name, err)
		}
		if took > answerWithin {
			t.Errorf("%s without a quorum took %s, want at most %s", r.name, took, answerWithin)
		}
		t.Logf("%s without a quorum: %s: %v", r.name, took.Round(time.Millisecond), err)
	}
	c.Restart(1)
	if err := c.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := readyz(t, e); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("readyz not ready 30 s after the quorum was back")
		}
	}
	if _, err := e.admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: seg(2)}); err != nil {
		t.Fatalf("apply with the quorum back: %v", err)
	}
}

// seg is a document of one segment, s<i>.
func seg(i int) []api.Document {
	return doc(fmt.Sprintf("s%d.yaml", i), fmt.Sprintf("apiVersion: bulkhead.dev/v1\nkind: Segment\nmetadata: {name: s%d}\nspec: {cidrs: [{cidr: 10.%d.%d.0/24}]}\n", i, i/256, i%256))
}

// boundedEtcdStore is a store over every member of c, with a client of
// its own, each call bounded by timeout.
func boundedEtcdStore(t *testing.T, c *etcdtest.Cluster, timeout time.Duration) store.Store {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st, err := etcdstore.New(cli, etcdstore.Options{Prefix: "/bulkhead/faults/", Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// Back-to-back applies through two managers while etcd's leader, and
// later a follower, are killed and restarted: every apply lands, once,
// in contiguous revisions. An apply that finds the store unavailable
// meanwhile answers 503 at once, and is sent again, as a client would.
func TestKillingMembersUnderApplies(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.Options{Members: 3})
	dir := t.TempDir()
	e1 := startOn(t, boundedEtcdStore(t, c, 2*time.Second), filepath.Join(dir, "m1"))
	e2 := startOn(t, boundedEtcdStore(t, c, 2*time.Second), filepath.Join(dir, "m2"))
	e2.admin = e2.client(e1.m.AdminToken())
	const n = 30
	unavailable := 0
	victim := -1
	for i := range n {
		switch i {
		case 10, 20: // the leader, then a follower
			leader, err := c.Leader(10 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			victim = leader
			if i == 20 {
				victim = (leader + 1) % 3
			}
			c.Kill(victim)
		case 15, 25:
			c.Restart(victim)
			if err := c.WaitHealthy(30 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		admin := []*env{e1, e2}[i%2].admin
		for attempt := 0; ; attempt++ {
			start := time.Now()
			_, err := admin.Apply(ctx(t), api.ManagerApplyRequest{Documents: seg(i)})
			if err == nil {
				break
			}
			if status(err) != http.StatusServiceUnavailable || attempt == 20 {
				t.Fatalf("apply %d (attempt %d): %v", i, attempt+1, err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("apply %d answered 503 after %s", i, took)
			}
			unavailable++
			time.Sleep(100 * time.Millisecond) // a client's backoff
		}
	}
	segs, err := e2.admin.Objects(ctx(t), "segments")
	if err != nil || len(segs.Items) != n {
		t.Fatalf("%d segments after %d applies: %v", len(segs.Items), n, err)
	}
	revs, err := e1.admin.Revisions(ctx(t), 0)
	if err != nil || len(revs.Items) != n {
		t.Fatalf("%d applies made %d revisions: %v", n, len(revs.Items), err)
	}
	t.Logf("%d applies over two managers, the leader and a follower killed: %d answered 503 first", n, unavailable)
}

// downStore is a store that cannot answer Rev while down is set.
type downStore struct {
	store.Store
	down atomic.Bool
}

func (s *downStore) Rev(ctx context.Context) (int64, error) {
	if s.down.Load() {
		return 0, fmt.Errorf("store: rev: %w: injected", store.ErrUnavailable)
	}
	return s.Store.Rev(ctx)
}

// /readyz follows the store's probe: not ready within a probe or two of
// the store becoming unavailable, ready again once it answers.
func TestReadyzFollowsTheStore(t *testing.T) {
	dir := t.TempDir()
	st, err := boltstore.Open(filepath.Join(dir, "bulkhead.db"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ds := &downStore{Store: st}
	e := startOn(t, ds, dir)
	waitReadyz := func(want int, says string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			code, body := readyz(t, e)
			if code == want && strings.Contains(body, says) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("readyz after 5 s: %d %s, want %d %q", code, body, want, says)
			}
		}
	}
	waitReadyz(http.StatusOK, "ok")
	ds.down.Store(true)
	waitReadyz(http.StatusServiceUnavailable, "not ready: store: rev: store unavailable: injected")
	ds.down.Store(false)
	waitReadyz(http.StatusOK, "ok")
}
