package auditlog

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/audit"
	"github.com/bulkhead-dev/bulkhead/internal/manager/datadir"
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
	key    ed25519.PrivateKey // signs the heads
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

// LoadHead takes the key that signs heads (seal.Key.Audit), and reads the
// head this manager kept; one whose signature does not verify under that
// key raises an alert and anchors nothing. Call it once, before the Log
// signs or saves a head.
func (l *Log) LoadHead(key ed25519.PrivateKey) error {
	l.heads.key = key
	path := filepath.Join(l.cfg.Dir, HeadFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("manager: read %s: %w", path, err)
	}
	var sh audit.SignedHead
	if err := json.Unmarshal(data, &sh); err != nil || sh.Check() != nil || sh.KeyID != audit.KeyID(key.Public().(ed25519.PublicKey)) {
		l.cfg.Alert("audit-head", path, "the audit head this manager kept does not verify under its key: it was changed; it anchors nothing")
		return nil
	}
	l.heads.note(sh.Head())
	l.heads.written = sh.Head()
	return nil
}

// SaveHead writes the last head, signed, to the data directory if it
// moved; it logs what fails.
func (l *Log) SaveHead() {
	h := &l.heads
	h.mu.Lock()
	last, written := h.last, h.written
	h.mu.Unlock()
	if last == written {
		return
	}
	sh := l.Sign(last)
	data, _ := json.MarshalIndent(sh, "", "  ")
	if err := datadir.WriteFile(filepath.Join(l.cfg.Dir, HeadFile), append(data, '\n'), 0o600); err != nil {
		l.cfg.Logger.Error("audit head not kept", "err", err)
		return
	}
	h.mu.Lock()
	h.written = last
	logNow := l.cfg.Now().Sub(h.logged) >= headLogEvery
	if logNow {
		h.logged = l.cfg.Now()
	}
	h.mu.Unlock()
	if logNow {
		// The log goes elsewhere (a journal, a SIEM): one more place the
		// head is kept outside the store.
		l.cfg.Logger.Info("audit head", "seq", sh.Seq, "hash", sh.Hash, "keyId", sh.KeyID, "signature", sh.Signature, "time", sh.Time)
	}
}

// headLogEvery bounds how often the manager logs its signed audit head.
const headLogEvery = time.Minute

// Sign signs head with the key LoadHead took.
func (l *Log) Sign(head audit.Head) audit.SignedHead {
	return audit.SignHead(head, l.cfg.Now(), l.heads.key)
}

// Verified reads the whole log and verifies it against the store's head,
// this manager's own, and anchor if given; a *audit.BrokenError says where
// it breaks (and, unless only anchor disagrees, raises an alert).
func (l *Log) Verified(ctx context.Context, anchor *audit.Head) ([]audit.Entry, error) {
	stored, err := audit.ReadHead(ctx, l.cfg.Store)
	if err != nil {
		return nil, err
	}
	entries, err := audit.Read(ctx, l.cfg.Store)
	if err != nil {
		return nil, err
	}
	own := l.heads.get()
	for _, a := range []*audit.Head{&stored, &own, anchor} {
		if a == nil {
			continue
		}
		if err := audit.Verify(entries, a); err != nil {
			var broken *audit.BrokenError
			if errors.As(err, &broken) && a != anchor {
				l.heads.mu.Lock()
				l.heads.broken = true
				l.heads.mu.Unlock()
				l.cfg.Alert("audit-broken", "audit/log", err.Error())
			}
			return entries, err
		}
	}
	return entries, nil
}

// CheckAtStart verifies the log once when the manager starts, so that a
// store rewritten while it was stopped raises an alert at once.
func (l *Log) CheckAtStart(ctx context.Context) {
	if _, err := l.Verified(ctx, nil); err != nil {
		l.cfg.Logger.Error("the audit log does not verify", "err", err)
	}
}
