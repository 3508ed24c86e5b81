package manager

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The manager key is a secret kept outside the store (KeyFile in the data
// directory, 0600): whoever can write the store but not read that file can
// neither mint an access record the manager accepts nor sign an audit
// head. Two keys are derived from it: one seals the access records (API
// tokens, join tokens, certificate records) with an HMAC over their store
// key and content, and one (Ed25519) signs the audit log's head. Managers
// that share a store must share the file; the store keeps the key's id
// (and the audit key's public half) so that a manager with another key,
// or none, refuses to start rather than refuse every token.
const (
	KeyFile       = "manager.key" // the manager key, hex, 0600
	keyManagerKey = "pki/managerkey"
)

type managerKey struct {
	id    string // a fingerprint that reveals nothing of the key
	mac   []byte
	audit ed25519.PrivateKey
	// legacy is the last policy revision (seq) from before the key, which
	// the operator adopted: those revisions carry no seal.
	legacy int64
}

// keyRecord is what the store keeps of the manager key, sealed by it.
type keyRecord struct {
	ID              string `json:"id"`
	AuditKey        string `json:"auditKey"`                  // base64 Ed25519 public key
	LegacyRevisions int64  `json:"legacyRevisions,omitempty"` // revisions up to this seq predate the key
	Seal            string `json:"seal,omitempty"`
}

func deriveKey(seed []byte) *managerKey {
	derive := func(label string) []byte {
		h := hmac.New(sha256.New, seed)
		h.Write([]byte(label))
		return h.Sum(nil)
	}
	id := derive("bulkhead manager key id v1")
	return &managerKey{id: hex.EncodeToString(id[:8]), mac: derive("bulkhead access records v1"),
		audit: ed25519.NewKeyFromSeed(derive("bulkhead audit head v1"))}
}

func (k *managerKey) auditPublic() ed25519.PublicKey { return k.audit.Public().(ed25519.PublicKey) }

// record returns the sealed key record to store.
func (k *managerKey) record() []byte {
	rec := keyRecord{ID: k.id, AuditKey: base64.StdEncoding.EncodeToString(k.auditPublic()), LegacyRevisions: k.legacy}
	return k.seal(keyManagerKey, &rec)
}

// checkRevision verifies a policy revision record's seal; the revisions
// from before the key (adopted) are trusted as they are.
func (k *managerKey) checkRevision(rec *revRecord) error {
	if rec.Seq <= k.legacy {
		return nil
	}
	return k.check(revisionSealKey, rec)
}

// sealed is an access record that carries its seal.
type sealed interface{ sealField() *string }

func (t *tokenRecord) sealField() *string { return &t.Seal }
func (j *joinRecord) sealField() *string  { return &j.Seal }
func (c *certRecord) sealField() *string  { return &c.Seal }
func (r *keyRecord) sealField() *string   { return &r.Seal }
func (r *revRecord) sealField() *string   { return &r.Seal }

// revisionSealKey stands for the store key in a revision record's seal:
// one record is stored twice, as revisions/SEQ and as the head.
const revisionSealKey = "revisions"

// sum is the seal of rec (its Seal field empty) stored under key.
func (k *managerKey) sum(key string, rec sealed) string {
	saved := *rec.sealField()
	*rec.sealField() = ""
	raw, _ := json.Marshal(rec)
	*rec.sealField() = saved
	h := hmac.New(sha256.New, k.mac)
	h.Write([]byte("bulkhead-record-v1\x00" + key + "\x00"))
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil))
}

// seal sets rec's seal for key and returns the value to store.
func (k *managerKey) seal(key string, rec sealed) []byte {
	*rec.sealField() = k.sum(key, rec)
	value, _ := json.Marshal(rec)
	return value
}

// check verifies the seal of rec, read from key.
func (k *managerKey) check(key string, rec sealed) error {
	if !hmac.Equal([]byte(*rec.sealField()), []byte(k.sum(key, rec))) {
		return &TamperedError{Key: key, Reason: "the access record's seal does not verify: it was written or changed outside the manager, and the manager will not use it"}
	}
	return nil
}

// loadKey reads the manager key, or creates it for a store that has none.
func (m *Manager) loadKey(ctx context.Context) error {
	path := m.cfg.KeyFile
	var key *managerKey
	switch data, err := os.ReadFile(path); {
	case err == nil:
		seed, derr := hex.DecodeString(strings.TrimSpace(string(data)))
		if derr != nil || len(seed) != 32 {
			return fmt.Errorf("manager: key file %s: want 64 hex digits, as the manager wrote it", path)
		}
		key = deriveKey(seed)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("manager: key file: %w", err)
	}
	kv, err := m.st.Get(ctx, keyManagerKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("manager: read %s: %w", keyManagerKey, err)
	}
	var rec keyRecord
	if err == nil {
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return fmt.Errorf("manager: %s in the store: %w", keyManagerKey, err)
		}
	}
	switch {
	case key != nil && rec.ID != "" && rec.ID != key.id:
		return fmt.Errorf("manager: the key in %s (id %s) is not the key this store was sealed with (id %s): give this manager the %s of the managers that share the store", path, key.id, rec.ID, KeyFile)
	case key != nil && rec.ID != "":
		if err := key.check(keyManagerKey, &rec); err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		key.legacy = rec.LegacyRevisions
		m.key = key
		return nil
	case rec.ID != "":
		return fmt.Errorf("manager: this store was sealed with manager key %s, but %s does not exist: copy %s from the data directory of a manager that shares the store (0600); without it no token, join token or certificate record can be trusted", rec.ID, path, KeyFile)
	}
	created := key == nil
	if created {
		seed := make([]byte, 32)
		if _, err := rand.Read(seed); err != nil {
			return fmt.Errorf("manager: random: %w", err)
		}
		if err := writeFile(path, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return err
		}
		key = deriveKey(seed)
	}
	if err := m.sealStore(ctx, key); err != nil {
		if created {
			os.Remove(path)
		}
		return err
	}
	m.key = key
	m.log.Info("sealed the store with the manager key", "file", path, "id", key.id, "created", created)
	return nil
}

// sealStore records key as the store's manager key. Access records
// already in the store that its seal does not cover (from a manager
// before the key, or a sealing interrupted) are sealed first, in Txns of
// bounded size, only if Config.AdoptRecords says they are trusted; the
// adoption is audited with the key's record.
func (m *Manager) sealStore(ctx context.Context, key *managerKey) error {
	kvs, _, err := m.st.List(ctx, prefixAuth)
	if err != nil {
		return fmt.Errorf("manager: list access records: %w", err)
	}
	var conds []store.Cond
	var ops []store.Op
	adopted := 0
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, ok, err := m.st.Txn(ctx, conds, ops)
		if err != nil {
			return fmt.Errorf("manager: seal access records: %w", err)
		}
		if !ok {
			return errors.New("manager: seal access records: the store changed meanwhile; start again")
		}
		conds, ops = conds[:0], ops[:0]
		return nil
	}
	for _, kv := range kvs {
		v, err := decodeAuth(kv)
		if err != nil {
			return fmt.Errorf("manager: access record %s: %w", kv.Key, err)
		}
		rec, ok := v.(sealed)
		if !ok || key.check(kv.Key, rec) == nil {
			continue
		}
		if !m.cfg.AdoptRecords {
			return fmt.Errorf("manager: the store holds access records (%s, …) that the manager key does not seal, from before it: start once with --adopt-unsealed-records (Config.AdoptRecords) if you trust them, or start on a new store", kv.Key)
		}
		conds = append(conds, store.Unchanged(kv))
		ops = append(ops, store.Put(kv.Key, key.seal(kv.Key, rec)))
		adopted++
		if len(ops) == stageOps {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	legacy, err := m.legacyRevisions(ctx, key)
	if err != nil {
		return err
	}
	key.legacy = legacy
	value := key.record()
	conds, ops = []store.Cond{store.Absent(keyManagerKey)}, []store.Op{store.Put(keyManagerKey, value)}
	var ok bool
	if adopted > 0 || legacy > 0 {
		_, ok, err = m.commitAudited(ctx, conds, ops, auditEntry{actor: system, action: "records.adopt", object: keyManagerKey,
			detail: map[string]any{"key": key.id, "records": adopted, "revisions": legacy}})
	} else {
		_, ok, err = m.st.Txn(ctx, conds, ops)
	}
	if err != nil {
		return fmt.Errorf("manager: record the manager key: %w", err)
	}
	if !ok {
		return fmt.Errorf("manager: another manager sealed this store at the same moment; give this one its %s", KeyFile)
	}
	return nil
}

// legacyRevisions returns the seq of the head, if the store holds policy
// revisions from before the manager key (unsealed): they are adopted as
// they are (their records cannot be rewritten, since a revision is named
// by its record's store revision) only if Config.AdoptRecords says so.
func (m *Manager) legacyRevisions(ctx context.Context, key *managerKey) (int64, error) {
	kv, err := m.st.Get(ctx, keyHead)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("manager: read the head: %w", err)
	}
	var rec revRecord
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return 0, fmt.Errorf("manager: the head: %w", err)
	}
	if key.check(revisionSealKey, &rec) == nil {
		return 0, nil
	}
	if !m.cfg.AdoptRecords {
		return 0, fmt.Errorf("manager: the store holds policy revisions (up to %d) that the manager key does not seal, from before it: start once with --adopt-unsealed-records (Config.AdoptRecords) if you trust them, or start on a new store", rec.Seq)
	}
	return rec.Seq, nil
}

// decodeSealed decodes an access record for the auth mirror, which keeps
// only what verifies: a record whose seal does not is left out (so that
// it authenticates nothing) and raises an alert.
func (m *Manager) decodeSealed(kv store.KV) (any, error) {
	v, err := decodeAuth(kv)
	if err != nil {
		return nil, err
	}
	if rec, ok := v.(sealed); ok {
		if err := m.key.check(kv.Key, rec); err != nil {
			m.raise("record-seal", kv.Key, err.Error())
			return nil, err
		}
		m.holdFinal(kv.Key, rec)
	}
	return v, nil
}

// readSealed reads the access record at key from the store into rec and
// checks its seal; a record that does not verify raises an alert and is
// reported as not found, with the reason.
func (m *Manager) readSealed(ctx context.Context, key string, rec sealed) (store.KV, error) {
	kv, err := m.st.Get(ctx, key)
	if err != nil {
		return kv, err
	}
	if err := json.Unmarshal(kv.Value, rec); err != nil {
		return kv, fmt.Errorf("manager: access record %s: %w", key, err)
	}
	if err := m.key.check(key, rec); err != nil {
		m.raise("record-seal", key, err.Error())
		return kv, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	m.holdFinal(key, rec)
	return kv, nil
}

// accessWait bounds how long a request waits, while the manager starts,
// for its copy of the access records.
const accessWait = 10 * time.Second

// waitAccess waits until this manager has read the access records once:
// before that every token would look unknown. Past accessWait it answers
// 503, which a client retries, never 401.
func (m *Manager) waitAccess(ctx context.Context) error {
	select {
	case <-m.auth.ready:
		return nil
	default:
	}
	t := time.NewTimer(accessWait)
	defer t.Stop()
	select {
	case <-m.auth.ready:
		return nil
	case <-t.C:
		return fault.New(fault.Unavailable, nil, "not ready: the manager has not read its access records yet; try again")
	case <-ctx.Done():
		return ctx.Err()
	}
}
