package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sort"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/api"
)

// The objects journal records each change to the objects after the
// revision objects.json holds, so that a change costs what it changes
// rather than a rewrite of every document. One record is one line:
//
//	<crc32c of the JSON, 8 hex digits> <JSON of a journalRecord>\n
//
// A record is appended and fsynced before the change is answered. On
// load, records at or below the snapshot's revision are skipped (they
// were folded in by a compaction that crashed before truncating the
// journal); a last line without its newline is a write that a crash cut
// short, never answered, and is dropped; any other record that does not
// read makes the state corrupt. When the journal outgrows the snapshot,
// the loop compacts: it writes objects.json whole (atomically, at the
// current revision) and then truncates the journal.
const (
	journalFile = "objects.journal"
	// minCompact is the journal size below which it is never compacted.
	minCompact = 1 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// journalRecord is one change to the objects: Delete first, then Upsert,
// each stored document listing the objects it now defines.
type journalRecord struct {
	Revision int64            `json:"revision"`
	Delete   []api.ObjectRef  `json:"delete,omitempty"`
	Upsert   []storedDocument `json:"upsert,omitempty"`
}

// changeRecord is the record of a planned change.
func changeRecord(rev int64, next *objectsAfter, res api.ApplyResult) journalRecord {
	rec := journalRecord{Revision: rev, Delete: res.Deleted}
	byDoc := map[*document][]api.ObjectRef{}
	var docs []*document
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			o, _ := next.get(ref)
			d := o.doc
			if _, ok := byDoc[d]; !ok {
				docs = append(docs, d)
			}
			byDoc[d] = append(byDoc[d], ref)
		}
	}
	sort.Slice(docs, func(i, j int) bool { return docs[i].seq < docs[j].seq })
	for _, d := range docs {
		refs := byDoc[d]
		sortRefs(refs)
		rec.Upsert = append(rec.Upsert, storedDocument{Name: d.name, Data: d.text(), Objects: refs})
	}
	return rec
}

func encodeRecord(rec journalRecord) ([]byte, error) {
	data, err := json.Marshal(rec)
	if err != nil {
		return nil, fmt.Errorf("agent: encode journal record %d: %w", rec.Revision, err)
	}
	line := fmt.Appendf(nil, "%08x ", crc32.Checksum(data, castagnoli))
	return append(append(line, data...), '\n'), nil
}

// appendRecord appends one record and fsyncs it. After a failed append
// the journal may end in a partial record, so it is truncated back; if
// even that fails, the next write compacts instead of appending.
func (s *stateDir) appendRecord(rec journalRecord, snap func() objectsState) error {
	line, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	if s.journalBroken {
		return s.compact(snap())
	}
	if err := s.openJournal(); err != nil {
		return err
	}
	_, err = s.journal.Write(line)
	if err == nil {
		err = s.journal.Sync()
	}
	if err != nil {
		if terr := s.journal.Truncate(s.journalSize); terr != nil {
			s.journalBroken = true
		}
		return fmt.Errorf("agent: append to state file %s: %w", s.path(journalFile), err)
	}
	s.journalSize += int64(len(line))
	return nil
}

func (s *stateDir) openJournal() error {
	if s.journal != nil {
		return nil
	}
	p := s.path(journalFile)
	_, statErr := os.Stat(p)
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("agent: open state file %s: %w", p, err)
	}
	if errors.Is(statErr, os.ErrNotExist) {
		if err := syncDir(s.dir); err != nil {
			f.Close()
			return fmt.Errorf("agent: create state file %s: %w", p, err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("agent: open state file %s: %w", p, err)
	}
	s.journal, s.journalSize = f, st.Size()
	return nil
}

// compactDue says whether the journal has outgrown the snapshot.
func (s *stateDir) compactDue() bool {
	return s.journalBroken || s.journalSize > max(minCompact, s.snapshotSize)
}

// compact writes the snapshot whole, then empties the journal. A crash
// in between leaves records the snapshot's revision covers: skipped.
func (s *stateDir) compact(st objectsState) error {
	if err := s.write(objectsFile, st); err != nil {
		return err
	}
	p := s.path(journalFile)
	if s.journal == nil {
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			s.journalBroken = false
			return nil
		}
		if err := s.openJournal(); err != nil {
			return err
		}
	}
	err := s.journal.Truncate(0)
	if err == nil {
		err = s.journal.Sync()
	}
	if err != nil {
		s.journalBroken = true
		return fmt.Errorf("agent: empty state file %s: %w", p, err)
	}
	s.journalSize, s.journalBroken = 0, false
	return nil
}

// readJournal reads the records of the journal, in order, and says how
// long it is; a missing journal has none.
func (s *stateDir) readJournal() ([]journalRecord, int, error) {
	p := s.path(journalFile)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("agent: read state file %s: %w", p, err)
	}
	size := len(data)
	var recs []journalRecord
	for n := 1; len(data) > 0; n++ {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // cut short by a crash before it was answered
		}
		line := data[:i]
		data = data[i+1:]
		rec, err := decodeRecord(line)
		if err != nil {
			return nil, 0, corrupt(p, fmt.Errorf("record %d: %w", n, err))
		}
		if len(recs) > 0 && rec.Revision <= recs[len(recs)-1].Revision {
			return nil, 0, corrupt(p, fmt.Errorf("record %d: revision %d does not follow %d", n, rec.Revision, recs[len(recs)-1].Revision))
		}
		recs = append(recs, rec)
	}
	return recs, size, nil
}

func decodeRecord(line []byte) (journalRecord, error) {
	var rec journalRecord
	if len(line) < 9 || line[8] != ' ' {
		return rec, errors.New("no checksum")
	}
	sum, err := strconv.ParseUint(string(line[:8]), 16, 32)
	if err != nil {
		return rec, errors.New("no checksum")
	}
	body := line[9:]
	if crc32.Checksum(body, castagnoli) != uint32(sum) {
		return rec, errors.New("checksum mismatch")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rec); err != nil {
		return rec, err
	}
	return rec, nil
}

// replay applies the records after revision rev to objs; seq numbers the
// documents read, in order. It returns the last revision.
func replay(path string, objs map[api.ObjectRef]*object, recs []journalRecord, rev int64, seq *int64) (int64, error) {
	for n, rec := range recs {
		if rec.Revision <= rev {
			continue
		}
		for _, ref := range rec.Delete {
			if _, ok := objs[ref]; !ok {
				return 0, corrupt(path, fmt.Errorf("record %d (revision %d) deletes %s, which is not there", n+1, rec.Revision, refString(ref)))
			}
			delete(objs, ref)
		}
		for _, sd := range rec.Upsert {
			*seq++
			d := &document{name: sd.Name, data: sd.Data, seq: *seq}
			if err := keepObjects(objs, d, sd.Objects, true); err != nil {
				return 0, corrupt(path, fmt.Errorf("record %d (revision %d): %w", n+1, rec.Revision, err))
			}
		}
		rev = rec.Revision
	}
	return rev, nil
}
