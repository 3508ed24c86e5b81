package agent

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/bulkhead-dev/bulkhead/api"
	"golang.org/x/sys/unix"
)

// The state dir holds these files and a lock:
//
//	objects.json     the applied documents, each with the objects it still
//	                 defines, as of its revision (the snapshot)
//	objects.journal  the changes to the objects since, one record each
//	                 (see journal.go), folded into objects.json now and then
//	workloads.json   the registered local workloads
//	lock             flock(2)ed while an agent uses the dir
//
// objects.json and workloads.json are replaced whole and atomically
// (write a temporary file, fsync, rename, fsync the directory); the
// journal is appended to and fsynced. Objects and workloads are separate
// so that a workload registration rewrites only the list of workloads.
const (
	objectsFile   = "objects.json"
	workloadsFile = "workloads.json"
	lockFile      = "lock"
	stateFormat   = 1
)

type objectsState struct {
	Format    int              `json:"format"`
	Revision  int64            `json:"revision"`
	Documents []storedDocument `json:"documents"`
}

type storedDocument struct {
	Name string `json:"name"`
	Data string `json:"data"`
	// Objects lists the objects of Data that are in force; the others
	// were updated from another document or deleted since.
	Objects []api.ObjectRef `json:"objects"`
}

type workloadsState struct {
	Format    int                        `json:"format"`
	Revision  int64                      `json:"revision"`
	Workloads []api.WorkloadRegistration `json:"workloads"`
}

// stateDir is an agent's state directory, locked for as long as it is open.
type stateDir struct {
	dir  string
	lock *os.File

	journal       *os.File // objects.journal, opened at the first append
	journalSize   int64    // its length: records end there
	journalBroken bool     // a failed append could not be undone: compact
	snapshotSize  int64    // the length of objects.json when last written
}

func openStateDir(dir string) (*stateDir, error) {
	if dir == "" {
		return nil, errors.New("agent: no state dir given (--state-dir)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: create state dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: lock state dir: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("agent: state dir %s is in use by another agent", dir)
		}
		return nil, fmt.Errorf("agent: lock state dir %s: %w", dir, err)
	}
	return &stateDir{dir: dir, lock: f}, nil
}

func (s *stateDir) close() error {
	var err error
	if s.journal != nil {
		err = s.journal.Close()
	}
	return errors.Join(err, s.lock.Close()) // releases the flock
}

func (s *stateDir) path(name string) string { return filepath.Join(s.dir, name) }

// read decodes one state file; a missing file is an empty state (ok false).
func (s *stateDir) read(name string, v any) (bool, error) {
	p := s.path(name)
	data, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("agent: read state file %s: %w", p, err)
	}
	if name == objectsFile {
		s.snapshotSize = int64(len(data))
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return false, corrupt(p, err)
	}
	return true, nil
}

func corrupt(path string, err error) error {
	return fmt.Errorf("agent: state file %s is corrupt: %w; the agent does not start without its state: restore the file, or move it away to start empty (the objects it held will be gone)", path, err)
}

// write replaces one state file atomically.
func (s *stateDir) write(name string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("agent: encode %s: %w", name, err)
	}
	p := s.path(name)
	tmp, err := os.CreateTemp(s.dir, "."+name+".*")
	if err != nil {
		return fmt.Errorf("agent: write state file %s: %w", p, err)
	}
	defer os.Remove(tmp.Name()) // after the rename, a no-op
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), p)
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		return fmt.Errorf("agent: write state file %s: %w", p, err)
	}
	if name == objectsFile {
		s.snapshotSize = int64(len(data))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// encodeObjects lists each document that still defines an object in force,
// in the order documents were first applied; objs is sorted by name.
func encodeObjects(rev int64, objs []*object) objectsState {
	byDoc := map[*document][]api.ObjectRef{}
	var docs []*document
	for _, o := range objs {
		if _, ok := byDoc[o.doc]; !ok {
			docs = append(docs, o.doc)
		}
		byDoc[o.doc] = append(byDoc[o.doc], o.ref)
	}
	sort.Slice(docs, func(i, j int) bool { return docs[i].seq < docs[j].seq })
	st := objectsState{Format: stateFormat, Revision: rev, Documents: make([]storedDocument, 0, len(docs))}
	for _, d := range docs {
		st.Documents = append(st.Documents, storedDocument{Name: d.name, Data: d.text(), Objects: byDoc[d]})
	}
	return st
}

// decodeObjects reads the documents back with the same reader apply uses
// and keeps the objects each still defines; the documents are numbered
// from seq on.
func decodeObjects(path string, st objectsState, seq *int64) (map[api.ObjectRef]*object, error) {
	if st.Format != stateFormat {
		return nil, corrupt(path, fmt.Errorf("format %d, this agent reads format %d", st.Format, stateFormat))
	}
	objs := map[api.ObjectRef]*object{}
	for i, sd := range st.Documents {
		*seq++
		d := &document{name: sd.Name, data: sd.Data, seq: *seq}
		if err := keepObjects(objs, d, sd.Objects, false); err != nil {
			return nil, corrupt(path, fmt.Errorf("document %d: %w", i, err))
		}
	}
	return objs, nil
}

// keepObjects reads document d and puts the objects refs names into objs;
// unless replace, an object already there is an error.
func keepObjects(objs map[api.ObjectRef]*object, d *document, refs []api.ObjectRef, replace bool) error {
	parsed, errs := parseDocument(d)
	if len(errs) > 0 {
		return fmt.Errorf("%s no longer reads: %w", d.name, errs.Err())
	}
	byRef := map[api.ObjectRef]*object{}
	for _, o := range parsed {
		byRef[o.ref] = o
	}
	for _, ref := range refs {
		o, ok := byRef[ref]
		if !ok {
			return fmt.Errorf("%s does not define %s", d.name, refString(ref))
		}
		if _, dup := objs[ref]; dup && !replace {
			return fmt.Errorf("%s is listed twice", refString(ref))
		}
		objs[ref] = o
	}
	return nil
}
