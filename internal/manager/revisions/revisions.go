// Package revisions holds the manager's policy revisions: the records
// that name them (Record, under Prefix, the newest also at HeadKey), the
// objects in force at each (State), and the content-addressed blobs that
// hold the objects and each revision's manifest (Blobs). Every record
// carries a seal under the manager key (internal/manager/seal) and every
// blob is named by its SHA-256, so that what was changed in the store is
// never served: History checks both as it reads a state.
//
// Objects and manifest chunks are written before the revision that
// names them, so that a revision of any size commits in one small Txn:
// the head (under feed/, so that agents see it), the revision record and
// the audit entry, which the manager makes (revisions.go, apply.go). A
// manager killed while writing blobs leaves the head as it was; the
// blobs no revision names are garbage.
package revisions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Keys of the revisions and their blobs.
const (
	HeadKey       = "feed/head"
	Prefix        = "revisions/"
	BlobPrefix    = "blobs/"
	ManifestChunk = 256 << 10 // bytes of manifest per blob
	StageOps      = 64        // blobs per staging Txn
	stageBytes    = 768 << 10 // bytes per staging Txn
	// SealKey stands for the store key in a revision record's seal: one
	// record is stored twice, as Prefix+SEQ and as the head.
	SealKey = "revisions"
)

// Object is one stored policy object: its name and its canonical form
// (internal/objects), which is what the store keeps, the feed sends and
// GET returns. Hash is the SHA-256 of JSON.
type Object struct {
	Ref  api.ObjectRef
	JSON []byte
	Hash string
	Pos  source.Pos // where a request wrote it; not stored
}

// Blob names a blob by its SHA-256.
func Blob(data []byte) Object {
	sum := sha256.Sum256(data)
	return Object{JSON: data, Hash: hex.EncodeToString(sum[:])}
}

// Record is one policy revision: where its manifest is and who made
// it. Rev is the store revision it was committed at (the ModRev of its
// key), filled in when read.
type Record struct {
	Rev        int64     `json:"-"`
	Seq        int64     `json:"seq"`
	ParentRev  int64     `json:"parentRev"`
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor"`
	Message    string    `json:"message,omitempty"`
	Objects    int       `json:"objects"`
	Manifest   []string  `json:"manifest"` // blob hashes of the manifest chunks
	RollbackOf int64     `json:"rollbackOf,omitempty"`
	// Seal is an HMAC under the manager key (internal/manager/seal): a revision written
	// into the store by hand names objects the manager will not load.
	Seal string `json:"seal,omitempty"`
}

// SealField is where the record's seal is (seal.Sealed).
func (r *Record) SealField() *string { return &r.Seal }

// API is the record as GET /v1/revisions shows it.
func (r *Record) API() api.Revision {
	return api.Revision{Revision: r.Rev, Parent: r.ParentRev, Time: r.Time, Actor: r.Actor,
		Message: r.Message, Objects: r.Objects, RollbackOf: r.RollbackOf}
}

// Key is the store key of the revision numbered seq.
func Key(seq int64) string { return fmt.Sprintf("%s%020d", Prefix, seq) }

// Decode reads the revision record at kv; its Rev is kv's ModRev.
func Decode(kv store.KV) (*Record, error) {
	var r Record
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return nil, fmt.Errorf("revision record %s: %w", kv.Key, err)
	}
	r.Rev = kv.ModRev
	return &r, nil
}

// State is the objects in force at one revision (rev 0: none yet).
type State struct {
	Record  *Record // nil before the first revision
	Objects map[string]Object
}

// Rev is the store revision of the state's record, 0 for none.
func (ps *State) Rev() int64 {
	if ps.Record == nil {
		return 0
	}
	return ps.Record.Rev
}

// Manifest encodes the objects' names and hashes, sorted, in chunks; it
// returns the chunks by hash and their order.
func Manifest(objects map[string]Object) (map[string][]byte, []string) {
	keys := make([]string, 0, len(objects))
	for k := range objects {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	chunks := map[string][]byte{}
	var order []string
	var cur [][2]string
	size := 0
	flush := func() {
		if len(cur) == 0 {
			return
		}
		data, _ := json.Marshal(cur)
		o := Blob(data)
		chunks[o.Hash] = data
		order = append(order, o.Hash)
		cur, size = nil, 0
	}
	for _, k := range keys {
		if size > ManifestChunk {
			flush()
		}
		cur = append(cur, [2]string{k, objects[k].Hash})
		size += len(k) + 70
	}
	flush()
	return chunks, order
}

// History reads the states that revision records name, checking each
// record's seal and each blob's hash, and keeps the last few. It is safe
// for concurrent use once its fields are set.
type History struct {
	Blobs *Blobs
	// Check verifies a record's seal; Tampered, if set, is told of the
	// store key of a record that does not verify (the manager raises an
	// alert).
	Check    func(*Record) error
	Tampered func(key string)

	mu     sync.Mutex
	states map[int64]*State
}

// Load reads the objects a revision record names (nil: none, the empty
// state). A record whose seal does not verify, or a blob changed in the
// store, is an error wrapping a *seal.TamperedError.
func (h *History) Load(ctx context.Context, rec *Record) (*State, error) {
	ps := &State{Record: rec, Objects: map[string]Object{}}
	if rec == nil {
		return ps, nil
	}
	h.mu.Lock()
	if c := h.states[rec.Rev]; c != nil {
		h.mu.Unlock()
		return c, nil
	}
	h.mu.Unlock()
	if err := h.Check(rec); err != nil {
		key := Key(rec.Seq)
		if h.Tampered != nil {
			h.Tampered(key)
		}
		return nil, fmt.Errorf("manager: revision %d: %w", rec.Rev, &seal.TamperedError{Key: key, Reason: "its seal does not verify: it was written or changed outside the manager, and the manager will not serve it"})
	}
	for _, hash := range rec.Manifest {
		data, err := h.Blobs.Get(ctx, hash)
		if err != nil {
			return nil, err
		}
		var entries [][2]string
		if err := json.Unmarshal(data, &entries); err != nil {
			return nil, fmt.Errorf("manager: manifest %s of revision %d: %w", hash, rec.Rev, err)
		}
		for _, e := range entries {
			ref, ok := objects.ParseKey(e[0])
			if !ok {
				return nil, fmt.Errorf("manager: manifest %s of revision %d: bad object name %q", hash, rec.Rev, e[0])
			}
			data, err := h.Blobs.Get(ctx, e[1])
			if err != nil {
				return nil, err
			}
			ps.Objects[e[0]] = Object{Ref: ref, JSON: data, Hash: e[1]}
		}
	}
	h.mu.Lock()
	if h.states == nil || len(h.states) >= 8 {
		h.states = map[int64]*State{}
	}
	h.states[rec.Rev] = ps
	h.mu.Unlock()
	return ps, nil
}

// Head reads the head from the store: the KV to condition a commit on
// (ModRev 0: there is none yet) and the state it names.
func (h *History) Head(ctx context.Context) (store.KV, *State, error) {
	kv, err := h.Blobs.Store.Get(ctx, HeadKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return kv, nil, fmt.Errorf("manager: read head: %w", err)
	}
	if kv.ModRev == 0 {
		ps, err := h.Load(ctx, nil)
		return kv, ps, err
	}
	rec, err := Decode(kv)
	if err != nil {
		return kv, nil, err
	}
	ps, err := h.Load(ctx, rec)
	return kv, ps, err
}
