package manager

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
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Keys of the policy objects and their revisions. Objects and manifest
// chunks are content-addressed blobs, written before the revision that
// names them, so that a revision of any size commits in one small Txn:
// the head (under feed/, so that agents see it), the revision record and
// the audit entry. A manager killed while writing blobs leaves the head
// as it was; the blobs no revision names are garbage.
const (
	keyHead         = "feed/head"
	prefixRevisions = "revisions/"
	prefixBlobs     = "blobs/"
	manifestChunk   = 256 << 10 // bytes of manifest per blob
	stageOps        = 64        // blobs per staging Txn
	stageBytes      = 768 << 10 // bytes per staging Txn
)

// revRecord is one policy revision: where its manifest is and who made
// it. Rev is the store revision it was committed at (the ModRev of its
// key), filled in when read.
type revRecord struct {
	Rev        int64     `json:"-"`
	Seq        int64     `json:"seq"`
	ParentRev  int64     `json:"parentRev"`
	Time       time.Time `json:"time"`
	Actor      string    `json:"actor"`
	Message    string    `json:"message,omitempty"`
	Objects    int       `json:"objects"`
	Manifest   []string  `json:"manifest"` // blob hashes of the manifest chunks
	RollbackOf int64     `json:"rollbackOf,omitempty"`
	// Seal is an HMAC under the manager key (keys.go): a revision written
	// into the store by hand names objects the manager will not load.
	Seal string `json:"seal,omitempty"`
}

func (r *revRecord) api() api.Revision {
	return api.Revision{Revision: r.Rev, Parent: r.ParentRev, Time: r.Time, Actor: r.Actor,
		Message: r.Message, Objects: r.Objects, RollbackOf: r.RollbackOf}
}

func revisionKey(seq int64) string { return fmt.Sprintf("%s%020d", prefixRevisions, seq) }

func decodeRecord(kv store.KV) (*revRecord, error) {
	var r revRecord
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return nil, fmt.Errorf("revision record %s: %w", kv.Key, err)
	}
	r.Rev = kv.ModRev
	return &r, nil
}

// policyState is the objects in force at one revision (rev 0: none yet).
type policyState struct {
	record  *revRecord // nil before the first revision
	objects map[string]object
}

func (ps *policyState) rev() int64 {
	if ps.record == nil {
		return 0
	}
	return ps.record.Rev
}

// blobs caches the content of blobs, which never change, and remembers
// which are known to be in the store. Every blob read from the store is
// checked against its name, the SHA-256 of its content: one changed in
// the store is never served, and onMismatch raises the alert.
type blobs struct {
	st         store.Store
	mu         sync.Mutex
	m          map[string][]byte
	n          int
	onMismatch func(key, got string)
}

const blobCacheBytes = 256 << 20

func (b *blobs) get(ctx context.Context, hash string) ([]byte, error) {
	b.mu.Lock()
	v, ok := b.m[hash]
	b.mu.Unlock()
	if ok {
		return v, nil
	}
	kv, err := b.st.Get(ctx, prefixBlobs+hash)
	if err != nil {
		return nil, fmt.Errorf("manager: read blob %s: %w", hash, err)
	}
	if sum := sha256.Sum256(kv.Value); hex.EncodeToString(sum[:]) != hash {
		got := hex.EncodeToString(sum[:])
		if b.onMismatch != nil {
			b.onMismatch(kv.Key, got)
		}
		return nil, fmt.Errorf("manager: read blob %s: %w", hash, &TamperedError{Key: kv.Key,
			Reason: "its content hashes to " + got + ", not to its name: it was changed outside the manager, and the manager will not serve it"})
	}
	b.remember(hash, kv.Value)
	return kv.Value, nil
}

func (b *blobs) has(hash string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.m[hash]
	return ok
}

func (b *blobs) remember(hash string, v []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil || b.n+len(v) > blobCacheBytes {
		b.m, b.n = map[string][]byte{}, 0
	}
	if _, ok := b.m[hash]; !ok {
		b.m[hash] = v
		b.n += len(v)
	}
}

// stage writes the blobs the store may lack, in Txns of bounded size.
func (b *blobs) stage(ctx context.Context, items map[string][]byte) error {
	var ops []store.Op
	size := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		if _, _, err := b.st.Txn(ctx, nil, ops); err != nil {
			if errors.Is(err, store.ErrTooLarge) {
				return fault.New(fault.TooLarge, nil, "an object is too large for the store: %w", err)
			}
			return fmt.Errorf("manager: write objects: %w", err)
		}
		for _, op := range ops {
			b.remember(op.Key[len(prefixBlobs):], op.Value)
		}
		ops, size = ops[:0], 0
		return nil
	}
	hashes := make([]string, 0, len(items))
	for h := range items {
		hashes = append(hashes, h)
	}
	sort.Strings(hashes)
	for _, h := range hashes {
		if b.has(h) {
			continue
		}
		v := items[h]
		if len(ops) >= stageOps || size+len(v) > stageBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		ops = append(ops, store.Put(prefixBlobs+h, v))
		size += len(v) + len(h)
	}
	return flush()
}

// manifest encodes the objects' names and hashes, sorted, in chunks; it
// returns the chunks by hash and their order.
func manifest(objects map[string]object) (map[string][]byte, []string) {
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
		o := blobObject(data)
		chunks[o.Hash] = data
		order = append(order, o.Hash)
		cur, size = nil, 0
	}
	for _, k := range keys {
		if size > manifestChunk {
			flush()
		}
		cur = append(cur, [2]string{k, objects[k].Hash})
		size += len(k) + 70
	}
	flush()
	return chunks, order
}

// loadState reads the objects a revision record names.
func (m *Manager) loadState(ctx context.Context, rec *revRecord) (*policyState, error) {
	ps := &policyState{record: rec, objects: map[string]object{}}
	if rec == nil {
		return ps, nil
	}
	m.stateMu.Lock()
	if c := m.states[rec.Rev]; c != nil {
		m.stateMu.Unlock()
		return c, nil
	}
	m.stateMu.Unlock()
	if err := m.checkRevision(rec); err != nil {
		key := revisionKey(rec.Seq)
		m.raise("revision-seal", key, "the policy revision's seal does not verify: it was written or changed outside the manager; its objects are not served")
		return nil, fmt.Errorf("manager: revision %d: %w", rec.Rev, &TamperedError{Key: key, Reason: "its seal does not verify: it was written or changed outside the manager, and the manager will not serve it"})
	}
	for _, h := range rec.Manifest {
		data, err := m.blobs.get(ctx, h)
		if err != nil {
			return nil, err
		}
		var entries [][2]string
		if err := json.Unmarshal(data, &entries); err != nil {
			return nil, fmt.Errorf("manager: manifest %s of revision %d: %w", h, rec.Rev, err)
		}
		for _, e := range entries {
			ref, ok := parseRefKey(e[0])
			if !ok {
				return nil, fmt.Errorf("manager: manifest %s of revision %d: bad object name %q", h, rec.Rev, e[0])
			}
			data, err := m.blobs.get(ctx, e[1])
			if err != nil {
				return nil, err
			}
			ps.objects[e[0]] = object{Ref: ref, JSON: data, Hash: e[1]}
		}
	}
	m.stateMu.Lock()
	if len(m.states) >= 8 {
		clear(m.states)
	}
	m.states[rec.Rev] = ps
	m.stateMu.Unlock()
	return ps, nil
}

// head reads the head from the store: the KV to condition a commit on and
// the state it names.
func (m *Manager) head(ctx context.Context) (store.KV, *policyState, error) {
	kv, err := m.st.Get(ctx, keyHead)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return kv, nil, fmt.Errorf("manager: read head: %w", err)
	}
	if kv.ModRev == 0 {
		ps, err := m.loadState(ctx, nil)
		return kv, ps, err
	}
	rec, err := decodeRecord(kv)
	if err != nil {
		return kv, nil, err
	}
	ps, err := m.loadState(ctx, rec)
	return kv, ps, err
}

// record finds the policy revision rev (0: none, the empty set), in the
// mirror, else in the store (a revision another manager just made).
func (m *Manager) record(ctx context.Context, rev int64) (*revRecord, error) {
	if rev == 0 {
		return nil, nil
	}
	var found *revRecord
	m.tab.revs.Each(prefixRevisions, func(_ string, r *revRecord) {
		if r.Rev == rev {
			found = r
		}
	})
	if found != nil {
		return found, nil
	}
	kvs, _, err := m.st.List(ctx, prefixRevisions)
	if err != nil {
		return nil, fmt.Errorf("manager: list revisions: %w", err)
	}
	for _, kv := range kvs {
		if kv.ModRev == rev {
			return decodeRecord(kv)
		}
	}
	return nil, fault.New(fault.NotFound, nil, "revision %d is not a policy revision; GET /v1/revisions lists them", rev)
}

// change is what a commit records besides the objects.
type change struct {
	actor      principal
	action     string // audit action: apply, delete, rollback
	message    string
	rollbackOf int64
	detail     any // audit detail
}

// newRecord is the record of the revision that makes objects, whose
// manifest is order, the head after prev.
func (m *Manager) newRecord(prev *policyState, objects map[string]object, order []string, c change) revRecord {
	rec := revRecord{Seq: 1, ParentRev: prev.rev(), Time: m.now().UTC(), Actor: c.actor.String(),
		Message: c.message, Objects: len(objects), Manifest: order, RollbackOf: c.rollbackOf}
	if prev.record != nil {
		rec.Seq = prev.record.Seq + 1
	}
	return rec
}

// commit makes objects the new head if the head is still base: blobs
// first, then one Txn with the head, the revision record and the audit
// entry. ok is false when another change won the race.
func (m *Manager) commit(ctx context.Context, base store.KV, prev *policyState, objects map[string]object, c change) (rev int64, ok bool, err error) {
	items := map[string][]byte{}
	for _, o := range objects {
		items[o.Hash] = o.JSON
	}
	chunks, order := manifest(objects)
	for h, v := range chunks {
		items[h] = v
	}
	if err := m.blobs.stage(ctx, items); err != nil {
		return 0, false, err
	}
	rec := m.newRecord(prev, objects, order, c)
	value := m.key.Seal(revisionSealKey, &rec)
	conds := []store.Cond{store.Unchanged(base)}
	ops := []store.Op{store.Put(keyHead, value), store.Put(revisionKey(rec.Seq), value)}
	return m.commitAudited(ctx, conds, ops, auditEntry{actor: c.actor, action: c.action, object: "revision", detail: c.detail})
}
