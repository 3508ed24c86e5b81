package api

import "time"

// Alert is something the manager found wrong that a person must look at
// (GET /v1/alerts): a stored blob that no longer matches its name, an
// access record without a valid seal. Each is also an audit entry
// ("alert.KIND") and a line at error level in the manager's log.
type Alert struct {
	Kind    string    `json:"kind"`   // e.g. "blob-mismatch", "record-seal"
	Object  string    `json:"object"` // the store key or object it concerns
	Message string    `json:"message"`
	First   time.Time `json:"first"`
	Last    time.Time `json:"last"`
	Count   int       `json:"count"` // times seen since the manager started
}

// AlertList answers GET /v1/alerts: this manager's alerts since it
// started, the latest first.
type AlertList struct {
	Items []Alert `json:"items"`
}

// JoinTokenInfo is a join token as GET /v1/jointokens lists it: never its
// secret. State is "unused", "used" or "expired".
type JoinTokenInfo struct {
	ID        string     `json:"id"`
	Host      string     `json:"host"`
	Created   time.Time  `json:"created"`
	CreatedBy string     `json:"createdBy"`
	Expires   time.Time  `json:"expires"`
	Used      *time.Time `json:"used,omitempty"`
	State     string     `json:"state"`
}

// HostRevocation answers POST /v1/hosts/{host}/revoke: the host's
// certificates revoked by it, and the ids of its unused join tokens it
// deleted.
type HostRevocation struct {
	Host         string        `json:"host"`
	Certificates []Certificate `json:"certificates"`
	JoinTokens   []string      `json:"joinTokens"`
}

// AuditHead answers GET /v1/audit/head: the head of the audit log signed
// by the manager's audit key (Ed25519; internal/audit's SignedHead).
// Keep it outside the manager: `bulkhead audit verify --head FILE` later
// proves the log still passes through it. KeyID identifies the key; the
// manager's is the same in every head it signs.
type AuditHead struct {
	Seq       uint64    `json:"seq"`
	Hash      string    `json:"hash"`
	Time      time.Time `json:"time"`
	Key       string    `json:"key"`
	KeyID     string    `json:"keyId"`
	Signature string    `json:"signature"`
}
