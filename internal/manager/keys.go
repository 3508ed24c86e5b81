package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The manager key (internal/manager/seal) seals the access records and
// the policy revisions, and signs the audit head. This file is where the
// manager uses it on the store: it loads the key, seals a store that has
// none, and checks every access record it reads.
const (
	KeyFile   = seal.KeyFile   // the manager key, in the data directory
	FinalFile = seal.FinalFile // the one-way states this manager has seen
)

// TamperedError is a record in the store that is not as the manager wrote
// it (seal.TamperedError).
type TamperedError = seal.TamperedError

// sealed is an access record that carries its seal.
type sealed = seal.Sealed

// checkRevision verifies a policy revision record's seal; the revisions
// from before the key (adopted) are trusted as they are.
func (m *Manager) checkRevision(rec *revisions.Record) error {
	if rec.Seq <= m.key.Legacy {
		return nil
	}
	return m.key.Check(revisions.SealKey, rec)
}

// loadKey reads the manager key, or creates it for a store that has none.
func (m *Manager) loadKey(ctx context.Context) error {
	path := m.cfg.KeyFile
	key, err := seal.ReadFile(path)
	if err != nil {
		return err
	}
	kv, err := m.st.Get(ctx, seal.StoreKey)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("manager: read %s: %w", seal.StoreKey, err)
	}
	var rec seal.Record
	if err == nil {
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return fmt.Errorf("manager: %s in the store: %w", seal.StoreKey, err)
		}
	}
	switch {
	case key != nil && rec.ID != "" && rec.ID != key.ID():
		return fmt.Errorf("manager: the key in %s (id %s) is not the key this store was sealed with (id %s): give this manager the %s of the managers that share the store", path, key.ID(), rec.ID, KeyFile)
	case key != nil && rec.ID != "":
		if err := key.Check(seal.StoreKey, &rec); err != nil {
			return fmt.Errorf("manager: %w", err)
		}
		key.Legacy = rec.LegacyRevisions
		m.key = key
		return nil
	case rec.ID != "":
		return fmt.Errorf("manager: this store was sealed with manager key %s, but %s does not exist: copy %s from the data directory of a manager that shares the store (0600); without it no token, join token or certificate record can be trusted", rec.ID, path, KeyFile)
	}
	created := key == nil
	if created {
		if key, err = seal.Create(path); err != nil {
			return err
		}
	}
	if err := m.sealStore(ctx, key); err != nil {
		if created {
			os.Remove(path)
		}
		return err
	}
	m.key = key
	m.log.Info("sealed the store with the manager key", "file", path, "id", key.ID(), "created", created)
	return nil
}

// sealStore records key as the store's manager key. Access records
// already in the store that its seal does not cover (from a manager
// before the key, or a sealing interrupted) are sealed first, in Txns of
// bounded size, only if Config.AdoptRecords says they are trusted; the
// adoption is audited with the key's record.
func (m *Manager) sealStore(ctx context.Context, key *seal.Key) error {
	kvs, _, err := m.st.List(ctx, credentials.PrefixAuth)
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
		v, err := credentials.Decode(kv)
		if err != nil {
			return fmt.Errorf("manager: access record %s: %w", kv.Key, err)
		}
		rec, ok := v.(sealed)
		if !ok || key.Check(kv.Key, rec) == nil {
			continue
		}
		if !m.cfg.AdoptRecords {
			return fmt.Errorf("manager: the store holds access records (%s, …) that the manager key does not seal, from before it: start once with --adopt-unsealed-records (Config.AdoptRecords) if you trust them, or start on a new store", kv.Key)
		}
		conds = append(conds, store.Unchanged(kv))
		ops = append(ops, store.Put(kv.Key, key.Seal(kv.Key, rec)))
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
	key.Legacy = legacy
	value := key.Record()
	conds, ops = []store.Cond{store.Absent(seal.StoreKey)}, []store.Op{store.Put(seal.StoreKey, value)}
	var ok bool
	if adopted > 0 || legacy > 0 {
		_, ok, err = m.commitAudited(ctx, conds, ops, auditEntry{actor: system, action: "records.adopt", object: seal.StoreKey,
			detail: map[string]any{"key": key.ID(), "records": adopted, "revisions": legacy}})
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
func (m *Manager) legacyRevisions(ctx context.Context, key *seal.Key) (int64, error) {
	kv, err := m.st.Get(ctx, keyHead)
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("manager: read the head: %w", err)
	}
	var rec revisions.Record
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return 0, fmt.Errorf("manager: the head: %w", err)
	}
	if key.Check(revisions.SealKey, &rec) == nil {
		return 0, nil
	}
	if !m.cfg.AdoptRecords {
		return 0, fmt.Errorf("manager: the store holds policy revisions (up to %d) that the manager key does not seal, from before it: start once with --adopt-unsealed-records (Config.AdoptRecords) if you trust them, or start on a new store", rec.Seq)
	}
	return rec.Seq, nil
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
	if err := m.key.Check(key, rec); err != nil {
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
	case <-m.auth.Ready():
		return nil
	default:
	}
	t := time.NewTimer(accessWait)
	defer t.Stop()
	select {
	case <-m.auth.Ready():
		return nil
	case <-t.C:
		return fault.New(fault.Unavailable, nil, "not ready: the manager has not read its access records yet; try again")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// holdFinal holds an access record read from key to the one-way states
// this manager has seen (seal.Final): a certificate it saw revoked stays
// revoked, a join token it saw used stays used.
func (m *Manager) holdFinal(key string, rec sealed) {
	switch r := rec.(type) {
	case *credentials.Cert:
		m.holdCert(key, r)
	case *credentials.Join:
		m.holdJoin(key, r)
	}
}

// holdCert holds a certificate revoked that this manager saw revoked.
func (m *Manager) holdCert(key string, c *credentials.Cert) {
	if m.final.Revoked(c.Serial, c.Revoked != nil) {
		now := m.now().UTC()
		c.Revoked, c.RevokedBy = &now, "this manager's record: the store's copy was rolled back"
		m.rolledBack(key)
	}
}

// holdJoin holds a join token used that this manager saw used.
func (m *Manager) holdJoin(key string, j *credentials.Join) {
	if m.final.Used(key, j.Used != nil) {
		now := m.now().UTC()
		j.Used = &now
		m.rolledBack(key)
	}
}

func (m *Manager) rolledBack(key string) {
	m.raise("record-rollback", key, "the access record was put back as it was before a revocation or a use: the manager holds it revoked or used")
}

func (m *Manager) finalPath() string { return filepath.Join(m.cfg.DataDir, seal.FinalFile) }
