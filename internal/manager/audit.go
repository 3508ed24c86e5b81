package manager

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// The audit log is a hash chain in the store: each entry carries the hash
// of the one before, and the head key names the last. An entry is written
// in the same Txn as the change it records, conditioned on the head, so
// that a change is never without its entry and the chain never forks.
const (
	keyAuditHead       = "audit/head"
	prefixAuditEntries = "audit/entries/"
)

type auditHead struct {
	Seq  uint64 `json:"seq"`
	Hash string `json:"hash"`
}

type auditEntry struct {
	actor  principal
	action string
	object string
	detail any
}

func auditKey(seq uint64) string { return fmt.Sprintf("%s%020d", prefixAuditEntries, seq) }

// entryHash is the hash that chains e: SHA-256 of the previous hash and
// e's JSON without its own hash.
func entryHash(e api.AuditEntry) string {
	e.Hash = ""
	data, _ := json.Marshal(e)
	sum := sha256.Sum256(append([]byte(e.Prev+"\n"), data...))
	return hex.EncodeToString(sum[:])
}

// commitAudited commits conds and ops with the audit entry for them, at
// one revision. When the Txn fails only because another entry was
// appended meanwhile, it chains onto that one and tries again; ok is
// false when one of conds no longer holds.
func (m *Manager) commitAudited(ctx context.Context, conds []store.Cond, ops []store.Op, e auditEntry) (int64, bool, error) {
	detail, err := json.Marshal(e.detail)
	if err != nil {
		return 0, false, fmt.Errorf("manager: audit detail: %w", err)
	}
	if e.detail == nil {
		detail = nil
	}
	// One writer at a time in this process: the chain's head is a single
	// key, and local writers queueing here do not waste Txns on conflicts.
	m.auditMu.Lock()
	defer m.auditMu.Unlock()
	for attempt := 0; attempt < 20; attempt++ {
		headKV, err := m.st.Get(ctx, keyAuditHead)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return 0, false, fmt.Errorf("manager: read audit head: %w", err)
		}
		var head auditHead
		if headKV.ModRev != 0 {
			if err := json.Unmarshal(headKV.Value, &head); err != nil {
				return 0, false, fmt.Errorf("manager: audit head: %w", err)
			}
		}
		// The revision is not known before the commit: an entry records
		// the revision its change was committed at as the ModRev of its
		// key, which GET /v1/audit reports.
		entry := api.AuditEntry{Seq: head.Seq + 1, Time: m.now().UTC(), Actor: e.actor.String(),
			Action: e.action, Object: e.object, Detail: detail, Prev: head.Hash}
		entry.Hash = entryHash(entry)
		value, _ := json.Marshal(entry)
		newHead, _ := json.Marshal(auditHead{Seq: entry.Seq, Hash: entry.Hash})
		allConds := append(append([]store.Cond(nil), conds...), store.Unchanged(headKV))
		allOps := append(append([]store.Op(nil), ops...), store.Put(auditKey(entry.Seq), value), store.Put(keyAuditHead, newHead))
		rev, ok, err := m.st.Txn(ctx, allConds, allOps)
		if err != nil {
			return 0, false, fmt.Errorf("manager: commit %s: %w", e.action, err)
		}
		if ok {
			return rev, true, nil
		}
		if held, err := m.holds(ctx, conds); err != nil || !held {
			return 0, false, err
		}
	}
	return 0, false, errorf(http.StatusServiceUnavailable, "the audit log is too busy; try again")
}

// holds reports whether every condition still holds.
func (m *Manager) holds(ctx context.Context, conds []store.Cond) (bool, error) {
	for _, c := range conds {
		kv, err := m.st.Get(ctx, c.Key)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return false, fmt.Errorf("manager: read %s: %w", c.Key, err)
		}
		if kv.ModRev != c.ModRev {
			return false, nil
		}
	}
	return true, nil
}

// auditEntries reads entries from seq on, at most limit.
func (m *Manager) auditEntries(ctx context.Context, from uint64, limit int) ([]api.AuditEntry, error) {
	kvs, _, err := m.st.List(ctx, prefixAuditEntries)
	if err != nil {
		return nil, fmt.Errorf("manager: read audit log: %w", err)
	}
	var out []api.AuditEntry
	for _, kv := range kvs {
		seq, _ := strconv.ParseUint(kv.Key[len(prefixAuditEntries):], 10, 64)
		if seq < from {
			continue
		}
		if len(out) == limit {
			break
		}
		var e api.AuditEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			e = api.AuditEntry{Seq: seq, Action: "(undecodable: " + err.Error() + ")"}
		}
		e.Revision = kv.ModRev
		out = append(out, e)
	}
	return out, nil
}

// verifyAudit walks the whole chain and reports the first entry that
// does not verify: a changed entry, a removed one, or a head that does
// not name the last.
func (m *Manager) verifyAudit(ctx context.Context) (api.AuditVerify, error) {
	kvs, _, err := m.st.List(ctx, "audit/")
	if err != nil {
		return api.AuditVerify{}, fmt.Errorf("manager: read audit log: %w", err)
	}
	var head *auditHead
	prev, n := "", uint64(0)
	for _, kv := range kvs {
		if kv.Key == keyAuditHead {
			head = &auditHead{}
			if err := json.Unmarshal(kv.Value, head); err != nil {
				return api.AuditVerify{Entries: n, Problem: "the audit head is undecodable: " + err.Error()}, nil
			}
			continue
		}
		want := n + 1
		var e api.AuditEntry
		if err := json.Unmarshal(kv.Value, &e); err != nil {
			return api.AuditVerify{Entries: n, Problem: fmt.Sprintf("entry %s is undecodable: %v", kv.Key, err)}, nil
		}
		switch {
		case kv.Key != auditKey(want) || e.Seq != want:
			return api.AuditVerify{Entries: n, Problem: fmt.Sprintf("entry %d is missing (found %s next)", want, kv.Key)}, nil
		case e.Prev != prev:
			return api.AuditVerify{Entries: n, Problem: fmt.Sprintf("entry %d does not chain onto entry %d", want, n)}, nil
		case entryHash(e) != e.Hash:
			return api.AuditVerify{Entries: n, Problem: fmt.Sprintf("entry %d was changed: its hash does not match its content", want)}, nil
		}
		prev, n = e.Hash, want
	}
	switch {
	case head == nil && n > 0:
		return api.AuditVerify{Entries: n, Problem: "the audit head is missing"}, nil
	case head != nil && (head.Seq != n || head.Hash != prev):
		return api.AuditVerify{Entries: n, Problem: fmt.Sprintf("the head names entry %d, but the chain ends at entry %d: entries were removed", head.Seq, n)}, nil
	}
	return api.AuditVerify{OK: true, Entries: n, Head: prev}, nil
}
