// Package audit is the manager's record of who did what: an append-only
// log, kept in the store, in which every entry carries the SHA-256 of its
// own content and of the entry before it, so that changing, removing or
// reordering entries breaks the chain where it was done, and Verify says
// where and how.
//
// An entry is written through the store, in the same Txn as the change it
// records when there is one (Append returns the conditions and ops to add
// to that Txn), so that a change is never without its entry nor an entry
// without its change.
//
// What the chain cannot show alone is a log cut short, or rewritten and
// re-sealed from some entry on: both leave a chain that is still whole.
// Verify takes an anchor for that, a head (seq and hash) recorded outside
// the store earlier; SignedHead is a head signed by the manager's audit
// key, to publish and keep (docs/security.md says what this proves).
package audit

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Keys in the store.
const (
	Prefix     = "audit/"
	entriesKey = Prefix + "log/" // + seq, zero-padded to sort in order
	headKey    = Prefix + "head"
)

// Actor is who did something.
type Actor struct {
	Kind string `json:"kind"`           // "token", "agent", "system" or "anonymous"
	Name string `json:"name"`           // the token's name, the agent's host, or an anonymous caller's address
	Role string `json:"role,omitempty"` // a token's role: admin, operator, auditor
}

// Entry is one record of the log.
type Entry struct {
	Seq    uint64    `json:"seq"` // 1, 2, 3, …
	Time   time.Time `json:"time"`
	Actor  Actor     `json:"actor"`
	Action string    `json:"action"` // what was done: "policy.apply", "token.revoke"
	Object string    `json:"object"` // what it was done to: "policies/payments/db"
	// Detail is what a reader needs beyond the above, as JSON.
	Detail json.RawMessage `json:"detail,omitempty"`

	// Revision is the store revision the entry was written at: the
	// revision of the change it records, when written in the same Txn. It
	// is not known until the Txn commits, so it is not hashed: Read sets it
	// from the entry's key, and Verify checks that it increases.
	Revision int64 `json:"revision,omitempty"`

	PrevHash string `json:"prevHash"` // the previous entry's Hash; "" for the first
	Hash     string `json:"hash"`     // hex SHA-256 of the canonical encoding
}

// Head is the end of the chain: the last entry's seq and hash. The zero
// Head is an empty log. A Head recorded outside the store serves as the
// anchor of Verify.
type Head struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`

	modRev int64 // of the head key, when read from the store
}

func (h Head) String() string { return fmt.Sprintf("%d:%s", h.Seq, h.Hash) }

// Sum returns the hash of e: SHA-256 over a canonical encoding of every
// field but Hash and Revision, each as its length (uvarint) and bytes, in
// a fixed order, after a version tag.
func Sum(e Entry) string {
	h := sha256.New()
	h.Write([]byte("bulkhead-audit-v1"))
	for _, f := range []string{
		strconv.FormatUint(e.Seq, 10),
		e.Time.UTC().Format(time.RFC3339Nano),
		e.Actor.Kind, e.Actor.Name, e.Actor.Role,
		e.Action, e.Object, string(e.Detail),
		e.PrevHash,
	} {
		h.Write(binary.AppendUvarint(nil, uint64(len(f))))
		h.Write([]byte(f))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Seal makes e the entry after head: it sets Seq, PrevHash and Hash, the
// time if unset, and puts Detail in the compact form that storing it keeps.
func Seal(head Head, e Entry) (Entry, error) {
	if e.Action == "" || e.Actor.Kind == "" {
		return Entry{}, fmt.Errorf("audit: entry without an action or an actor kind: %w", store.ErrInvalid)
	}
	if len(e.Detail) > 0 {
		// Marshal compacts and escapes as it will when the entry is
		// stored, so that the hashed bytes are the stored bytes.
		d, err := json.Marshal(e.Detail)
		if err != nil {
			return Entry{}, fmt.Errorf("audit: %s %s: detail: %w", e.Action, e.Object, err)
		}
		e.Detail = d
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	e.Seq, e.PrevHash, e.Revision = head.Seq+1, head.Hash, 0
	e.Hash = Sum(e)
	return e, nil
}

// Append seals e as the entry after head and returns it with the Txn
// conditions and ops that write it; add them to the Txn of the change that
// e records. If another entry was appended after head was read, the
// conditions fail: read the head again and retry the whole Txn.
func Append(head Head, e Entry) (Entry, []store.Cond, []store.Op, error) {
	e, err := Seal(head, e)
	if err != nil {
		return Entry{}, nil, nil, err
	}
	value, err := json.Marshal(e)
	if err != nil {
		return Entry{}, nil, nil, fmt.Errorf("audit: %s %s: %w", e.Action, e.Object, err)
	}
	headValue, _ := json.Marshal(Head{Seq: e.Seq, Hash: e.Hash})
	key := entryKey(e.Seq)
	conds := []store.Cond{{Key: headKey, ModRev: head.modRev}, store.Absent(key)}
	ops := []store.Op{store.Put(key, value), store.Put(headKey, headValue)}
	return e, conds, ops, nil
}

func entryKey(seq uint64) string { return fmt.Sprintf("%s%020d", entriesKey, seq) }

// ReadHead returns the head of the log in s.
func ReadHead(ctx context.Context, s store.Store) (Head, error) {
	kv, err := s.Get(ctx, headKey)
	if errors.Is(err, store.ErrNotFound) {
		return Head{}, nil
	}
	if err != nil {
		return Head{}, fmt.Errorf("audit: read head: %w", err)
	}
	var h Head
	if err := json.Unmarshal(kv.Value, &h); err != nil {
		return Head{}, fmt.Errorf("audit: read head: %w", err)
	}
	h.modRev = kv.ModRev
	return h, nil
}

// Write appends e in a Txn of its own, for what changes nothing else (a
// refused login, an export), retrying while other entries are appended.
func Write(ctx context.Context, s store.Store, e Entry) (Entry, error) {
	for {
		head, err := ReadHead(ctx, s)
		if err != nil {
			return Entry{}, err
		}
		sealed, conds, ops, err := Append(head, e)
		if err != nil {
			return Entry{}, err
		}
		rev, ok, err := s.Txn(ctx, conds, ops)
		if err != nil {
			return Entry{}, fmt.Errorf("audit: write %s %s: %w", e.Action, e.Object, err)
		}
		if ok {
			sealed.Revision = rev
			return sealed, nil
		}
	}
}

// Read returns the whole log in s, in key order (which is seq order unless
// someone renamed keys: Verify finds that), with Revision set.
func Read(ctx context.Context, s store.Store) ([]Entry, error) {
	kvs, _, err := s.List(ctx, entriesKey)
	if err != nil {
		return nil, fmt.Errorf("audit: read: %w", err)
	}
	entries := make([]Entry, len(kvs))
	for i, kv := range kvs {
		if err := json.Unmarshal(kv.Value, &entries[i]); err != nil {
			return nil, fmt.Errorf("audit: read %s: %w", kv.Key, err)
		}
		entries[i].Revision = kv.ModRev
	}
	return entries, nil
}
