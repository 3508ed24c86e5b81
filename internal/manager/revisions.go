package manager

import (
	"context"
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The policy revisions, their records, states and blobs, are package
// internal/manager/revisions; here the manager finds them in its copy and
// commits new ones, audited.

// Store keys of the revisions, as the manager's files name them.
const (
	keyHead         = revisions.HeadKey
	prefixRevisions = revisions.Prefix
	prefixBlobs     = revisions.BlobPrefix
	stageOps        = revisions.StageOps
)

// head reads the head from the store: the KV to condition a commit on and
// the state it names.
func (m *Manager) head(ctx context.Context) (store.KV, *revisions.State, error) {
	return m.history.Head(ctx)
}

// record finds the policy revision rev (0: none, the empty set), in the
// mirror, else in the store (a revision another manager just made).
func (m *Manager) record(ctx context.Context, rev int64) (*revisions.Record, error) {
	if rev == 0 {
		return nil, nil
	}
	var found *revisions.Record
	m.tab.revs.Each(prefixRevisions, func(_ string, r *revisions.Record) {
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
			return revisions.Decode(kv)
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
func (m *Manager) newRecord(prev *revisions.State, objects map[string]revisions.Object, order []string, c change) revisions.Record {
	rec := revisions.Record{Seq: 1, ParentRev: prev.Rev(), Time: m.now().UTC(), Actor: c.actor.String(),
		Message: c.message, Objects: len(objects), Manifest: order, RollbackOf: c.rollbackOf}
	if prev.Record != nil {
		rec.Seq = prev.Record.Seq + 1
	}
	return rec
}

// commit makes objects the new head if the head is still base: blobs
// first, then one Txn with the head, the revision record and the audit
// entry. ok is false when another change won the race.
func (m *Manager) commit(ctx context.Context, base store.KV, prev *revisions.State, objects map[string]revisions.Object, c change) (rev int64, ok bool, err error) {
	items := map[string][]byte{}
	for _, o := range objects {
		items[o.Hash] = o.JSON
	}
	chunks, order := revisions.Manifest(objects)
	for h, v := range chunks {
		items[h] = v
	}
	if err := m.history.Blobs.Stage(ctx, items); err != nil {
		return 0, false, err
	}
	rec := m.newRecord(prev, objects, order, c)
	value := m.key.Seal(revisions.SealKey, &rec)
	conds := []store.Cond{store.Unchanged(base)}
	ops := []store.Op{store.Put(keyHead, value), store.Put(revisions.Key(rec.Seq), value)}
	return m.commitAudited(ctx, conds, ops, auditEntry{actor: c.actor, action: c.action, object: "revision", detail: c.detail})
}
