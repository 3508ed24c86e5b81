package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
)

// The audit log's anchors outside the store. The chain alone cannot show
// a log cut short, or rewritten and re-sealed from some entry on: both are
// whole chains. Two anchors can:
//
//   - the head this manager last wrote itself, which it keeps in its data
//     directory (HeadFile, signed), so that its own verify and its start
//     find a store rolled back or re-sealed below it;
//   - a signed head published on request (GET /v1/audit/head), which an
//     auditor keeps and later checks the log against
//     (`bulkhead audit verify --head FILE`), away from the manager.
//
// The manager signs a head only of a log that verifies against both the
// store's head and its own.
const HeadFile = "audit.head"

// heads tracks the last head this manager appended, and writes it to the
// data directory.
type heads struct {
	mu      sync.Mutex
	last    audit.Head // the highest this manager appended or read at start
	written audit.Head
	logged  time.Time // when the head was last logged
	// broken is set once the log was found not to pass through last: the
	// anchor then stays where it was, rather than move on to the rewritten
	// log and stop finding the break.
	broken bool
}

func (h *heads) note(head audit.Head) {
	h.mu.Lock()
	if head.Seq > h.last.Seq && !h.broken {
		h.last = head
	}
	h.mu.Unlock()
}

func (h *heads) get() audit.Head {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last
}

// loadHead reads the head this manager kept; one whose signature does not
// verify under the manager key raises an alert and anchors nothing.
func (m *Manager) loadHead() error {
	path := filepath.Join(m.cfg.DataDir, HeadFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("manager: read %s: %w", path, err)
	}
	var sh audit.SignedHead
	if err := json.Unmarshal(data, &sh); err != nil || sh.Check() != nil || sh.KeyID != audit.KeyID(m.key.AuditPublic()) {
		m.raise("audit-head", path, "the audit head this manager kept does not verify under its key: it was changed; it anchors nothing")
		return nil
	}
	m.heads.note(sh.Head())
	m.heads.written = sh.Head()
	return nil
}

// saveHead writes the last head to the data directory if it moved.
func (m *Manager) saveHead() {
	h := &m.heads
	h.mu.Lock()
	last, written := h.last, h.written
	h.mu.Unlock()
	if last == written {
		return
	}
	sh := audit.SignHead(last, m.now(), m.key.Audit())
	data, _ := json.MarshalIndent(sh, "", "  ")
	if err := writeFile(filepath.Join(m.cfg.DataDir, HeadFile), append(data, '\n'), 0o600); err != nil {
		m.log.Error("audit head not kept", "err", err)
		return
	}
	h.mu.Lock()
	h.written = last
	logNow := m.now().Sub(h.logged) >= headLogEvery
	if logNow {
		h.logged = m.now()
	}
	h.mu.Unlock()
	if logNow {
		// The log goes elsewhere (a journal, a SIEM): one more place the
		// head is kept outside the store.
		m.log.Info("audit head", "seq", sh.Seq, "hash", sh.Hash, "keyId", sh.KeyID, "signature", sh.Signature, "time", sh.Time)
	}
}

// headLogEvery bounds how often the manager logs its signed audit head.
const headLogEvery = time.Minute

// saveOutside writes what the manager keeps outside the store: its audit
// head and the final states of access records.
func (m *Manager) saveOutside() {
	m.saveHead()
	if err := m.final.Save(m.finalPath()); err != nil {
		m.log.Error("revocations and used join tokens not kept", "err", err)
	}
}

// headLoop keeps the data directory's head, and the final states, at most
// a second behind.
func (m *Manager) headLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.saveOutside()
			return
		case <-t.C:
			m.saveOutside()
		}
	}
}

// verifiedLog reads the whole log and verifies it against the store's
// head, this manager's own, and anchor if given; a *audit.BrokenError
// says where it breaks (and raises an alert).
func (m *Manager) verifiedLog(ctx context.Context, anchor *audit.Head) ([]audit.Entry, error) {
	stored, err := audit.ReadHead(ctx, m.st)
	if err != nil {
		return nil, err
	}
	entries, err := audit.Read(ctx, m.st)
	if err != nil {
		return nil, err
	}
	own := m.heads.get()
	for _, a := range []*audit.Head{&stored, &own, anchor} {
		if a == nil {
			continue
		}
		if err := audit.Verify(entries, a); err != nil {
			var broken *audit.BrokenError
			if errors.As(err, &broken) && a != anchor {
				m.heads.mu.Lock()
				m.heads.broken = true
				m.heads.mu.Unlock()
				m.raise("audit-broken", "audit/log", err.Error())
			}
			return entries, err
		}
	}
	return entries, nil
}

// getAuditHead signs the head of the log, once it verifies.
func (m *Manager) getAuditHead(w http.ResponseWriter, r *http.Request, _ principal) error {
	entries, err := m.verifiedLog(r.Context(), nil)
	var broken *audit.BrokenError
	if errors.As(err, &broken) {
		return fault.New(fault.Conflict, nil, "the audit log does not verify, so the manager signs no head of it: %w", err)
	} else if err != nil {
		return err
	}
	var head audit.Head
	if n := len(entries); n > 0 {
		head = audit.Head{Seq: entries[n-1].Seq, Hash: entries[n-1].Hash}
	}
	writeJSON(w, http.StatusOK, api.AuditHead(audit.SignHead(head, m.now(), m.key.Audit())))
	return nil
}

// checkAuditAtStart verifies the log once when the manager starts, so
// that a store rewritten while it was stopped raises an alert at once.
func (m *Manager) checkAuditAtStart(ctx context.Context) {
	if _, err := m.verifiedLog(ctx, nil); err != nil {
		m.log.Error("the audit log does not verify", "err", err)
	}
}
