package flows

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func testBatch(n int) *Batch {
	b := &Batch{Sealed: time.Unix(1, 0), Lost: map[Cause]uint64{}}
	for i := range n {
		b.Records = append(b.Records, Record{Src: Endpoint{Addr: netip.MustParseAddr("10.0.0.1"), Port: uint16(i)},
			Dst: Endpoint{Addr: netip.MustParseAddr("10.0.0.2"), Port: 80}, Proto: 6, Verdict: Allow, Source: FromConntrack})
	}
	return b
}

// The spool gives batches back oldest first, keeps them across a reopen,
// and never gives a sequence number twice, even after a restart.
func TestSpoolOrderAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for range 3 {
		b := testBatch(2)
		if b.Seq, err = s.nextSeq(); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, b.Seq)
		if _, err := s.put(b); err != nil {
			t.Fatal(err)
		}
	}
	stream := s.stream
	s, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if s.stream != stream {
		t.Fatalf("stream changed across a reopen: %q, then %q", stream, s.stream)
	}
	next, _ := s.nextSeq()
	if next <= seqs[2] {
		t.Fatalf("seq %d after a reopen, not above %d", next, seqs[2])
	}
	for _, want := range seqs {
		b, err := s.oldest()
		if err != nil || b == nil || b.Seq != want || len(b.Records) != 2 || b.Stream != stream {
			t.Fatalf("oldest = %+v, %v; want seq %d with 2 records", b, err, want)
		}
		if err := s.done(b.Seq); err != nil {
			t.Fatal(err)
		}
	}
	if b, _ := s.oldest(); b != nil || !s.empty() {
		t.Fatalf("spool not empty after delivering everything: %+v", b)
	}
}

// A full spool refuses the newest batch's records and keeps their count,
// and the counts of every refused batch, in one small batch at its tail.
func TestSpoolFullRefusesNewestAndCounts(t *testing.T) {
	s, err := openSpool(t.TempDir(), 4000)
	if err != nil {
		t.Fatal(err)
	}
	var kept, refused uint64
	for range 20 {
		b := testBatch(10)
		b.Seq, _ = s.nextSeq()
		b.Lost[LostNFLOGGap] = 1
		n, err := s.put(b)
		if err != nil {
			t.Fatal(err)
		}
		refused += uint64(n)
		kept += uint64(10 - n)
	}
	if refused == 0 || kept == 0 {
		t.Fatalf("kept %d, refused %d: the bound did not bite", kept, refused)
	}
	var got, lostFull, gaps uint64
	for {
		b, err := s.oldest()
		if err != nil {
			t.Fatal(err)
		}
		if b == nil {
			break
		}
		got += uint64(len(b.Records))
		lostFull += b.Lost[LostSpoolFull]
		gaps += b.Lost[LostNFLOGGap]
		s.done(b.Seq)
	}
	if got != kept || lostFull != refused || gaps != 20 {
		t.Fatalf("records %d (want %d), spool-full %d (want %d), gaps %d (want 20)", got, kept, lostFull, refused, gaps)
	}
	if len(s.files) != 0 {
		t.Fatal(fmt.Sprint("files left: ", s.files))
	}
}
