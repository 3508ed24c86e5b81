package audit

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// SignedHead is a head signed by the manager's audit key (Ed25519), at a
// time: what the manager publishes so that the log can be anchored outside
// its store. An auditor who keeps one can later prove that the log still
// passes through it (Verify with its Head): a log cut short before it, or
// rewritten and re-sealed up to it, no longer does. The signature says the
// manager holding that key published the head, so a head can be handed on
// (in a report, a ticket) and checked by whoever receives it.
type SignedHead struct {
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`      // when it was signed
	Key       string    `json:"key"`       // the audit key: base64 Ed25519 public key
	KeyID     string    `json:"keyId"`     // KeyID of Key, for people to compare
	Signature string    `json:"signature"` // base64 Ed25519 over the message below
}

// Head returns the head s vouches for, an anchor for Verify.
func (s SignedHead) Head() Head { return Head{Seq: s.Seq, Hash: s.Hash} }

// KeyID is a short fingerprint of an audit key: the first 16 hex digits of
// the SHA-256 of the public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// message is what is signed: a version tag, then seq, hash, time and key,
// each as its length (uvarint) and bytes.
func (s SignedHead) message() []byte {
	msg := []byte("bulkhead-audit-head-v1")
	for _, f := range []string{strconv.FormatUint(s.Seq, 10), s.Hash, s.Time.UTC().Format(time.RFC3339Nano), s.Key} {
		msg = binary.AppendUvarint(msg, uint64(len(f)))
		msg = append(msg, f...)
	}
	return msg
}

// SignHead signs h at t with key.
func SignHead(h Head, t time.Time, key ed25519.PrivateKey) SignedHead {
	pub := key.Public().(ed25519.PublicKey)
	s := SignedHead{Seq: h.Seq, Hash: h.Hash, Time: t.UTC(), Key: base64.StdEncoding.EncodeToString(pub), KeyID: KeyID(pub)}
	s.Signature = base64.StdEncoding.EncodeToString(ed25519.Sign(key, s.message()))
	return s
}

// Check verifies the signature of s under the key it names, and that
// KeyID is that key's. Whether that key is the manager's is the caller's
// to check: compare KeyID with the one the manager publishes, or one kept
// from before.
func (s SignedHead) Check() error {
	pub, err := base64.StdEncoding.DecodeString(s.Key)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return errors.New("audit: signed head: key: want a base64 Ed25519 public key")
	}
	if KeyID(pub) != s.KeyID {
		return fmt.Errorf("audit: signed head: keyId %q is not the id of its key (%s)", s.KeyID, KeyID(pub))
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil || !ed25519.Verify(pub, s.message(), sig) {
		return fmt.Errorf("audit: signed head %d:%s: the signature does not verify: the head was changed after it was signed, or not signed by key %s", s.Seq, s.Hash, s.KeyID)
	}
	if s.Seq == 0 && s.Hash != "" || s.Seq > 0 && len(s.Hash) != 64 {
		return fmt.Errorf("audit: signed head: %d:%q is not a head", s.Seq, s.Hash)
	}
	return nil
}

// Export is the log up to a signed head, as `bulkhead audit export`
// writes it: everything needed to verify it away from the manager.
type Export struct {
	Head    SignedHead `json:"head"`
	Entries []Entry    `json:"entries"`
}
