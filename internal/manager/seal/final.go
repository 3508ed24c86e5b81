package seal

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"

	"github.com/bulkhead-dev/bulkhead/internal/manager/datadir"
)

// A seal proves a record was written by a manager, not that it is the
// latest the manager wrote: a writer of the store could put back a
// certificate record as it was before its revocation, or a join token's
// as it was before its use. Revocation and use are one-way, so each
// manager remembers, outside the store (FinalFile in its data
// directory), every serial it has seen revoked and every join token it
// has seen used; a record that comes back without them is held to them
// (and the manager raises an alert).
const FinalFile = "final.json"

// Final is the set of one-way states a manager has seen. Its methods are
// safe for concurrent use.
type Final struct {
	mu      sync.Mutex
	revoked map[string]bool // certificate serials
	used    map[string]bool // join token store keys
	dirty   bool
}

type finalFile struct {
	Revoked []string `json:"revoked"`
	Used    []string `json:"used"`
}

// Load reads the states kept at path; a missing file is an empty set.
func (f *Final) Load(path string) error {
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

// Revoked records that the certificate serial is revoked if revoked, and
// otherwise reports whether it was seen revoked before: a record that
// says it is not was rolled back, and must be held revoked.
func (f *Final) Revoked(serial string, revoked bool) (rolledBack bool) {
	return f.hold(&f.revoked, serial, revoked)
}

// Used is Revoked for the join token at store key key, and its use.
func (f *Final) Used(key string, used bool) (rolledBack bool) {
	return f.hold(&f.used, key, used)
}

func (f *Final) hold(seen *map[string]bool, id string, reached bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if reached {
		if *seen == nil {
			*seen = map[string]bool{}
		}
		f.dirty = f.dirty || !(*seen)[id]
		(*seen)[id] = true
		return false
	}
	return (*seen)[id]
}

// Save writes the states to path if they grew.
func (f *Final) Save(path string) error {
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
	if err := datadir.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		f.mu.Lock()
		f.dirty = true
		f.mu.Unlock()
		return err
	}
	return nil
}
