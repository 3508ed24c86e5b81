package manager

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"
)

// A seal proves a record was written by a manager, not that it is the
// latest the manager wrote: a writer of the store could put back a
// certificate record as it was before its revocation, or a join token's
// as it was before its use. Revocation and use are one-way, so each
// manager remembers, outside the store (FinalFile in its data
// directory), every serial it has seen revoked and every join token it
// has seen used; a record that comes back without them is held to them
// and raises an alert.
const FinalFile = "final.json"

type finalStates struct {
	mu      sync.Mutex
	revoked map[string]bool // certificate serials
	used    map[string]bool // join token store keys
	dirty   bool
}

type finalFile struct {
	Revoked []string `json:"revoked"`
	Used    []string `json:"used"`
}

func (f *finalStates) load(path string) error {
	f.revoked, f.used = map[string]bool{}, map[string]bool{}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("manager: read %s: %w", path, err)
	}
	var v finalFile
	if err := json.Unmarshal(data, &v); err != nil {
		return fmt.Errorf("manager: %s: %w", path, err)
	}
	for _, s := range v.Revoked {
		f.revoked[s] = true
	}
	for _, k := range v.Used {
		f.used[k] = true
	}
	return nil
}

// hold records what rec says is final, and holds rec to what was seen
// before; it reports whether rec had to be held (a rollback).
func (f *finalStates) hold(key string, rec sealed, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	const by = "this manager's record: the store's copy was rolled back"
	switch r := rec.(type) {
	case *certRecord:
		if r.Revoked != nil {
			f.dirty = f.dirty || !f.revoked[r.Serial]
			f.revoked[r.Serial] = true
		} else if f.revoked[r.Serial] {
			r.Revoked, r.RevokedBy = &now, by
			return true
		}
	case *joinRecord:
		if r.Used != nil {
			f.dirty = f.dirty || !f.used[key]
			f.used[key] = true
		} else if f.used[key] {
			r.Used = &now
			return true
		}
	}
	return false
}

// save writes the final states to path if they grew.
func (f *finalStates) save(path string) error {
	f.mu.Lock()
	if !f.dirty {
		f.mu.Unlock()
		return nil
	}
	v := finalFile{Revoked: []string{}, Used: []string{}}
	for s := range f.revoked {
		v.Revoked = append(v.Revoked, s)
	}
	for k := range f.used {
		v.Used = append(v.Used, k)
	}
	f.dirty = false
	f.mu.Unlock()
	sort.Strings(v.Revoked)
	sort.Strings(v.Used)
	data, _ := json.MarshalIndent(v, "", "  ")
	if err := writeFile(path, append(data, '\n'), 0o600); err != nil {
		f.mu.Lock()
		f.dirty = true
		f.mu.Unlock()
		return err
	}
	return nil
}

// holdFinal applies finalStates to an access record read from key.
func (m *Manager) holdFinal(key string, rec sealed) {
	if m.final.hold(key, rec, m.now().UTC()) {
		m.raise("record-rollback", key, "the access record was put back as it was before a revocation or a use: the manager holds it revoked or used")
	}
}

func (m *Manager) finalPath() string { return filepath.Join(m.cfg.DataDir, FinalFile) }
