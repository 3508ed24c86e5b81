package flows

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// spool keeps batches on disk, one file per batch named by its sequence
// number, while the Sink fails. It is bounded in bytes; when a batch does
// not fit, its records are refused (counted as LostSpoolFull) and what it
// counts is kept in a small counts-only batch at the tail. The newest are
// refused rather than the oldest dropped: the start of an outage is what
// explains it, and a flood of new flows must not push the evidence of
// what came before out of the spool (docs/flows.md).
//
// The spool also owns the stream id and the sequence numbers, which must
// never repeat within a stream, also across restarts: they are reserved
// on disk in blocks.
type spool struct {
	dir string
	max int64

	mu       sync.Mutex
	files    []spoolFile // by seq
	bytes    int64
	stream   string
	seq      uint64 // last given
	reserved uint64 // seqs up to here are reserved on disk
}

type spoolFile struct {
	seq        uint64
	size       int64
	countsOnly bool
	attempted  bool // given to the Sink at least once: never rewritten
}

const (
	seqBlock   = 1024
	spoolExt   = ".batch"
	streamFile = "stream"
	seqFile    = "seq"
)

func openSpool(dir string, limit int64) (*spool, error) {
	if err := os.MkdirAll(filepath.Join(dir, "spool"), 0o700); err != nil {
		return nil, fmt.Errorf("flows: spool: create %s: %w", dir, err)
	}
	s := &spool{dir: dir, max: limit}
	if err := s.loadStream(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(filepath.Join(dir, "spool"))
	if err != nil {
		return nil, fmt.Errorf("flows: spool: list %s: %w", dir, err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), spoolExt)
		seq, err := strconv.ParseUint(name, 10, 64)
		if !ok || err != nil {
			continue // a temporary file of an interrupted write, or not ours
		}
		info, err := e.Info()
		if err != nil {
			return nil, fmt.Errorf("flows: spool: %s: %w", e.Name(), err)
		}
		// After a restart every file may have reached the Sink once.
		s.files = append(s.files, spoolFile{seq: seq, size: info.Size(), attempted: true})
		s.bytes += info.Size()
		s.seq = max(s.seq, seq)
	}
	slices.SortFunc(s.files, func(a, b spoolFile) int { return cmpU64(a.seq, b.seq) })
	data, err := os.ReadFile(filepath.Join(dir, seqFile))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("flows: spool: read %s: %w", seqFile, err)
	}
	if len(data) > 0 {
		r, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("flows: spool: %s in %s: %w", seqFile, dir, err)
		}
		s.seq = max(s.seq, r) // everything reserved may have been given
	}
	s.reserved = s.seq
	return s, nil
}

func (s *spool) loadStream() error {
	p := filepath.Join(s.dir, streamFile)
	data, err := os.ReadFile(p)
	if err == nil && len(strings.TrimSpace(string(data))) > 0 {
		s.stream = strings.TrimSpace(string(data))
		return nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("flows: spool: read %s: %w", p, err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	s.stream = hex.EncodeToString(b)
	return writeAtomic(p, []byte(s.stream+"\n"))
}

// nextSeq gives the next sequence number of the stream.
func (s *spool) nextSeq() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seq >= s.reserved {
		r := s.seq + seqBlock
		if err := writeAtomic(filepath.Join(s.dir, seqFile), []byte(strconv.FormatUint(r, 10)+"\n")); err != nil {
			return 0, err
		}
		s.reserved = r
	}
	s.seq++
	return s.seq, nil
}

// put writes b to the spool. When it does not fit, its records are
// refused and counted in what is written instead: its counts, merged
// into the tail's counts-only batch when that one was never given to the
// Sink. It returns the number of records refused; an error means nothing
// was written.
func (s *spool) put(b *Batch) (int, error) {
	b.Stream = s.stream
	data, err := json.Marshal(b)
	if err != nil {
		return 0, fmt.Errorf("flows: spool: encode batch %d: %w", b.Seq, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bytes+int64(len(data)) <= s.max {
		return 0, s.write(b.Seq, data, len(b.Records) == 0)
	}
	counts := &Batch{Stream: b.Stream, Seq: b.Seq, Host: b.Host, Sealed: b.Sealed,
		Lost: maps.Clone(b.Lost), Suppressed: maps.Clone(b.Suppressed)}
	if counts.Lost == nil {
		counts.Lost = map[Cause]uint64{}
	}
	counts.Lost[LostSpoolFull] += uint64(len(b.Records))
	if n := len(s.files); n > 0 && s.files[n-1].countsOnly && !s.files[n-1].attempted {
		tail, err := s.read(s.files[n-1].seq)
		if err != nil {
			return 0, err
		}
		mergeCounts(tail, counts)
		counts = tail
	}
	data, err = json.Marshal(counts)
	if err != nil {
		return 0, fmt.Errorf("flows: spool: encode batch %d: %w", counts.Seq, err)
	}
	return len(b.Records), s.write(counts.Seq, data, true)
}

// mergeCounts adds what b counts to into.
func mergeCounts(into, b *Batch) {
	if into.Lost == nil {
		into.Lost = map[Cause]uint64{}
	}
	for c, n := range b.Lost {
		into.Lost[c] += n
	}
	if len(b.Suppressed) > 0 && into.Suppressed == nil {
		into.Suppressed = map[string]uint64{}
	}
	for k, n := range b.Suppressed {
		into.Suppressed[k] += n
	}
}

// write stores a batch's file (replacing one of the same seq) under s.mu.
func (s *spool) write(seq uint64, data []byte, countsOnly bool) error {
	if err := writeAtomic(s.path(seq), data); err != nil {
		return err
	}
	f := spoolFile{seq: seq, size: int64(len(data)), countsOnly: countsOnly}
	i, found := slices.BinarySearchFunc(s.files, seq, func(f spoolFile, seq uint64) int { return cmpU64(f.seq, seq) })
	if found {
		s.bytes -= s.files[i].size
		s.files[i] = f
	} else {
		s.files = slices.Insert(s.files, i, f)
	}
	s.bytes += f.size
	return nil
}

// oldest returns the oldest batch (nil: the spool is empty) and marks it
// given to the Sink.
func (s *spool) oldest() (*Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.files) == 0 {
		return nil, nil
	}
	s.files[0].attempted = true
	return s.read(s.files[0].seq)
}

func (s *spool) read(seq uint64) (*Batch, error) {
	data, err := os.ReadFile(s.path(seq))
	if err != nil {
		return nil, fmt.Errorf("flows: spool: read batch %d: %w", seq, err)
	}
	b := &Batch{}
	if err := json.Unmarshal(data, b); err != nil {
		return nil, fmt.Errorf("flows: spool: decode %s: %w", s.path(seq), err)
	}
	return b, nil
}

// done removes a delivered batch.
func (s *spool) done(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.files, seq, func(f spoolFile, seq uint64) int { return cmpU64(f.seq, seq) })
	if !found {
		return nil
	}
	if err := os.Remove(s.path(seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("flows: spool: remove batch %d: %w", seq, err)
	}
	s.bytes -= s.files[i].size
	s.files = slices.Delete(s.files, i, i+1)
	return nil
}

func (s *spool) empty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files) == 0
}

func (s *spool) usage() (files int, bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.files), s.bytes
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, "spool", fmt.Sprintf("%020d%s", seq, spoolExt))
}

// writeAtomic replaces path with data: a crash leaves the old file or the
// new one, never half of one.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("flows: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("flows: rename %s: %w", tmp, err)
	}
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
