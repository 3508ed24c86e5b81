package boltstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/bulkhead-dev/bulkhead/internal/store"
	"github.com/bulkhead-dev/bulkhead/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (store.Store, func() store.Store) {
		path := filepath.Join(t.TempDir(), "bulkhead.db")
		open := func() store.Store {
			s, err := Open(path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}

func TestReopenKeepsStateAndHistory(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "bulkhead.db")
	s := mustOpen(t, path, Options{})
	var revs []int64
	for i := range 5 {
		r, _, err := s.Txn(ctx, nil, []store.Op{store.Put(fmt.Sprintf("k/%d", i), []byte("v"))})
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, r)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, path, Options{})
	if r, _ := s.Rev(ctx); r != revs[4] {
		t.Fatalf("reopened at revision %d, want %d", r, revs[4])
	}
	w := s.Watch(ctx, "k/", revs[2])
	var got []string
	for len(got) < 3 {
		batch := <-w.C
		for _, ev := range batch {
			got = append(got, ev.KV.Key)
		}
	}
	if fmt.Sprint(got) != "[k/2 k/3 k/4]" {
		t.Fatalf("resumed after reopening: %v", got)
	}
}

func TestHistoryIsBounded(t *testing.T) {
	ctx := t.Context()
	const keep = 10
	s := mustOpen(t, filepath.Join(t.TempDir(), "bulkhead.db"), Options{KeepRevs: keep})
	var last int64
	for i := range 3 * keep {
		var err error
		if last, _, err = s.Txn(ctx, nil, []store.Op{store.Put("k", []byte(strconv.Itoa(i)))}); err != nil {
			t.Fatal(err)
		}
	}
	s.b.db.View(func(tx *bbolt.Tx) error {
		if n := tx.Bucket(bucketHistory).Stats().KeyN; n != keep {
			t.Errorf("history holds %d revisions, want %d", n, keep)
		}
		return nil
	})
	w := s.Watch(ctx, "", 1)
	<-w.C
	var ce *store.CompactedError
	if !errors.As(w.Err(), &ce) || ce.Oldest != last-keep+1 {
		t.Fatalf("watch from 1 after automatic compaction: %v, want oldest %d", w.Err(), last-keep+1)
	}
}

// TestSlowWatcherFallsOffTheHistory: a watcher that does not read holds no
// events, so nothing cuts it off until the history it has yet to read is
// compacted away; then it ends with ErrCompacted, after what it had.
func TestSlowWatcherFallsOffTheHistory(t *testing.T) {
	ctx := t.Context()
	s := mustOpen(t, filepath.Join(t.TempDir(), "bulkhead.db"), Options{KeepRevs: 20, WatchBuffer: 2})
	w := s.Watch(ctx, "", 1)
	for i := range 100 {
		if _, _, err := s.Txn(ctx, nil, []store.Op{store.Put("k", []byte(strconv.Itoa(i)))}); err != nil {
			t.Fatal(err)
		}
	}
	next := int64(1)
	for batch := range w.C {
		for _, ev := range batch {
			if ev.KV.ModRev != next {
				t.Fatalf("revision %d after %d", ev.KV.ModRev, next-1)
			}
			next++
		}
	}
	var ce *store.CompactedError
	if !errors.As(w.Err(), &ce) || ce.From != next {
		t.Fatalf("slow watcher ended at revision %d with %v, want ErrCompacted from there", next, w.Err())
	}
}

func TestSecondProcessIsRefused(t *testing.T) {
	if os.Getenv("BOLTSTORE_OPEN") != "" {
		_, err := Open(os.Getenv("BOLTSTORE_OPEN"), Options{})
		fmt.Println(err)
		return
	}
	path := filepath.Join(t.TempDir(), "bulkhead.db")
	mustOpen(t, path, Options{})
	cmd := exec.Command(os.Args[0], "-test.run=^TestSecondProcessIsRefused$")
	cmd.Env = append(os.Environ(), "BOLTSTORE_OPEN="+path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if want := "in use by another process"; !strings.Contains(string(out), want) {
		t.Fatalf("second process opening the file: %s, want %q", out, want)
	}
}

// TestCrashMidWrite kills a process that is writing, at random moments,
// and checks after each kill that the file opens at a whole revision: the
// keys of one Txn all agree, every revision the writer saw committed is
// there, and the history replays to the same state.
func TestCrashMidWrite(t *testing.T) {
	if path := os.Getenv("BOLTSTORE_CRASH_WRITER"); path != "" {
		crashWriter(path)
		return
	}
	path := filepath.Join(t.TempDir(), "bulkhead.db")
	rnd := rand.New(rand.NewPCG(1, 2))
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMidWrite$")
		cmd.Env = append(os.Environ(), "BOLTSTORE_CRASH_WRITER="+path)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		var committed int64
		for n := 20 + rnd.IntN(60); n > 0 && lines.Scan(); n-- {
			if committed, err = strconv.ParseInt(lines.Text(), 10, 64); err != nil {
				t.Fatalf("writer said %q", lines.Text())
			}
		}
		// The writer is in its next Txn, or about to be: kill it there.
		time.Sleep(time.Duration(rnd.IntN(3000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		if committed == 0 {
			t.Fatalf("round %d: the writer committed nothing", round)
		}
		checkCrashed(t, path, committed)
	}
}

const crashKeys = 8

// crashWriter writes, forever, Txns that set every crash key to the same
// counter with values of random size, and prints each committed revision.
func crashWriter(path string) {
	ctx := context.Background()
	s, err := Open(path, Options{KeepRevs: 100})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	rnd := rand.New(rand.NewPCG(uint64(os.Getpid()), 3))
	for {
		rev, err := s.Rev(ctx)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		ops := make([]store.Op, crashKeys)
		for i := range ops {
			v := make([]byte, 8+rnd.IntN(16<<10))
			copy(v, fmt.Sprintf("%08d", rev+1))
			ops[i] = store.Put(fmt.Sprintf("crash/%d", i), v)
		}
		r, _, err := s.Txn(ctx, nil, ops)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		fmt.Println(r)
	}
}

func checkCrashed(t *testing.T, path string, committed int64) {
	t.Helper()
	ctx := t.Context()
	s := mustOpen(t, path, Options{KeepRevs: 100})
	defer s.Close()
	rev, err := s.Rev(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if rev < committed {
		t.Fatalf("reopened at revision %d; the writer had committed %d", rev, committed)
	}
	kvs, _, err := s.List(ctx, "crash/")
	if err != nil {
		t.Fatal(err)
	}
	if len(kvs) != crashKeys {
		t.Fatalf("%d keys after the crash, want %d", len(kvs), crashKeys)
	}
	for _, kv := range kvs {
		if kv.ModRev != rev || string(kv.Value[:8]) != fmt.Sprintf("%08d", rev) {
			t.Fatalf("revision %d, but %s holds %q at revision %d: a Txn was half applied", rev, kv.Key, kv.Value[:8], kv.ModRev)
		}
	}
	// The newest history entry is the revision the keys are at.
	w := s.Watch(ctx, "crash/", rev)
	batch := <-w.C
	if len(batch) != crashKeys || batch[0].KV.ModRev != rev {
		t.Fatalf("history at revision %d: %d events (%v)", rev, len(batch), w.Err())
	}
	for i, ev := range batch {
		if string(ev.KV.Value) != string(kvs[i].Value) {
			t.Fatalf("history of %s differs from its value", ev.KV.Key)
		}
	}
}

func mustOpen(t *testing.T, path string, opts Options) *Store {
	t.Helper()
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
