// Package seal holds the manager key and what it proves about the
// records a manager keeps in its store.
//
// The manager key is a secret kept outside the store (KeyFile in the data
// directory, 0600): whoever can write the store but not read that file can
// neither mint an access record the manager accepts nor sign an audit
// head. Two keys are derived from it: one seals the access records (API
// tokens, join tokens, certificate records) and the policy revisions with
// an HMAC over their store key and content, and one (Ed25519) signs the
// audit log's head (internal/manager/auditlog). Managers that share a
// store must share the file; the store keeps the key's id (and the audit
// key's public half) in a Record, so that a manager with another key, or
// none, refuses to start rather than refuse every token.
//
// A seal proves that a manager wrote a record, not that it is the latest
// one written: Final remembers, outside the store, the one-way states
// (a certificate revoked, a join token used) that a record must never
// come back without.
//
// Nothing here reads or writes the store; the manager does (keys.go),
// with Key and Final.
package seal

import (
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

	"github.com/bulkhead-dev/bulkhead/internal/manager/datadir"
)

const (
	KeyFile  = "manager.key"    // the manager key, hex, 0600
	StoreKey = "pki/managerkey" // where the store keeps the key's Record
)

// Key is the manager key. Its methods are safe for concurrent use, but
// Legacy is set once, before it is shared.
type Key struct {
	id    string // a fingerprint that reveals nothing of the key
	mac   []byte
	audit ed25519.PrivateKey
	// Legacy is the last policy revision (seq) from before the key, which
	// the operator adopted: those revisions carry no seal.
	Legacy int64
}

// Record is what the store keeps of the manager key, sealed by it.
type Record struct {
	ID              string `json:"id"`
	AuditKey        string `json:"auditKey"`                  // base64 Ed25519 public key
	LegacyRevisions int64  `json:"legacyRevisions,omitempty"` // revisions up to this seq predate the key
	Seal            string `json:"seal,omitempty"`
}

// SealField makes a Record Sealed.
func (r *Record) SealField() *string { return &r.Seal }

// Derive makes the key of a 32-byte seed.
func Derive(seed []byte) *Key {
	derive := func(label string) []byte {
		h := hmac.New(sha256.New, seed)
		h.Write([]byte(label))
		return h.Sum(nil)
	}
	id := derive("bulkhead manager key id v1")
	return &Key{id: hex.EncodeToString(id[:8]), mac: derive("bulkhead access records v1"),
		audit: ed25519.NewKeyFromSeed(derive("bulkhead audit head v1"))}
}

// ReadFile reads the key at path; it returns nil and no error if there
// is no file.
func ReadFile(path string) (*Key, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("manager: key file: %w", err)
	}
	seed, derr := hex.DecodeString(strings.TrimSpace(string(data)))
	if derr != nil || len(seed) != 32 {
		return nil, fmt.Errorf("manager: key file %s: want 64 hex digits, as the manager wrote it", path)
	}
	return Derive(seed), nil
}

// Create makes a new random key and writes it to path (0600).
func Create(path string) (*Key, error) {
	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("manager: random: %w", err)
	}
	if err := datadir.WriteFile(path, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
		return nil, err
	}
	return Derive(seed), nil
}

// ID is the key's fingerprint, which reveals nothing of it.
func (k *Key) ID() string { return k.id }

// Audit is the key that signs the audit log's head.
func (k *Key) Audit() ed25519.PrivateKey { return k.audit }

// AuditPublic is the public half of Audit.
func (k *Key) AuditPublic() ed25519.PublicKey { return k.audit.Public().(ed25519.PublicKey) }

// Record returns the sealed key record to store at StoreKey.
func (k *Key) Record() []byte {
	rec := Record{ID: k.id, AuditKey: base64.StdEncoding.EncodeToString(k.AuditPublic()), LegacyRevisions: k.Legacy}
	return k.Seal(StoreKey, &rec)
}

// Sealed is a record that carries its seal in one of its fields.
type Sealed interface{ SealField() *string }

// sum is the seal of rec (its Seal field empty) stored under key.
func (k *Key) sum(key string, rec Sealed) string {
	saved := *rec.SealField()
	*rec.SealField() = ""
	raw, _ := json.Marshal(rec)
	*rec.SealField() = saved
	h := hmac.New(sha256.New, k.mac)
	h.Write([]byte("bulkhead-record-v1\x00" + key + "\x00"))
	h.Write(raw)
	return hex.EncodeToString(h.Sum(nil))
}

// Seal sets rec's seal for key and returns the value to store.
func (k *Key) Seal(key string, rec Sealed) []byte {
	*rec.SealField() = k.sum(key, rec)
	value, _ := json.Marshal(rec)
	return value
}

// Check verifies the seal of rec, read from key: a *TamperedError if it
// does not.
func (k *Key) Check(key string, rec Sealed) error {
	if !hmac.Equal([]byte(*rec.SealField()), []byte(k.sum(key, rec))) {
		return &TamperedError{Key: key, Reason: "the access record's seal does not verify: it was written or changed outside the manager, and the manager will not use it"}
	}
	return nil
}

// TamperedError is a record in the store that is not as the manager wrote
// it: a blob whose content does not match its name, an access record
// whose seal does not verify. The manager does not use it.
type TamperedError struct {
	Key    string // the store key
	Reason string
}

func (e *TamperedError) Error() string { return "store key " + e.Key + ": " + e.Reason }
