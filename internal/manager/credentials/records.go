// Package credentials holds the manager's access records: API tokens, join
// tokens and agents' certificate records, how the store keeps them, and
// the rules that need nothing but a record — how a secret is made and
// kept (never itself: the SHA-256 of it names its record), how a bearer
// header reads, which roles exist, how often a host may renew.
//
// Every record carries a seal under the manager key
// (internal/manager/seal), which the manager checks before it uses one.
// The handlers that create, list and revoke records and the
// authentication of requests are the manager's HTTP edge: tokens.go,
// join.go, certs.go and auth.go in internal/manager.
package credentials

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// Keys of the access records. Secrets are never stored: a token or join
// token is kept under the SHA-256 of its secret.
const (
	PrefixAuth       = "auth/"
	PrefixTokens     = "auth/tokens/"     // hash → Token
	PrefixTokenNames = "auth/tokennames/" // name → hash
	PrefixJoin       = "auth/join/"       // hash → Join
	PrefixCerts      = "auth/certs/"      // serial → Cert
	PrefixRenewals   = "auth/renewals/"   // host → its recent renewals' times
	TokenPrefix      = "bh_"              // begins an API token's secret
	JoinPrefix       = "bhj_"             // begins a join token's secret
)

// Token is an API token's record.
type Token struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"createdBy"`
	Seal      string    `json:"seal,omitempty"`
}

// Join is a join token's record; Used is set, once, by the join.
type Join struct {
	Host      string     `json:"host"`
	Expires   time.Time  `json:"expires"`
	Created   time.Time  `json:"created"`
	CreatedBy string     `json:"createdBy"`
	Used      *time.Time `json:"used,omitempty"`
	Seal      string     `json:"seal,omitempty"`
}

// Cert is the record of a client certificate issued to a host's agent;
// Revoked is set, once, by a revocation.
type Cert struct {
	Serial    string     `json:"serial"`
	Host      string     `json:"host"`
	Issued    time.Time  `json:"issued"`
	NotAfter  time.Time  `json:"notAfter"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	RevokedBy string     `json:"revokedBy,omitempty"`
	// RenewedFrom is the serial of the certificate this one was renewed
	// with; "" for one issued at a join.
	RenewedFrom string `json:"renewedFrom,omitempty"`
	Seal        string `json:"seal,omitempty"`
}

// Usable refuses a join token that was used or has expired at now, with
// a fault.Forbidden that says which; a join token is good for one join.
func (j *Join) Usable(now time.Time) error {
	switch {
	case j.Used != nil:
		return fault.New(fault.Forbidden, nil, "token: the join token for host %s was already used at %s; a join token is good for one join", j.Host, j.Used.Format(time.RFC3339))
	case now.After(j.Expires):
		return fault.New(fault.Forbidden, nil, "token: the join token for host %s expired at %s", j.Host, j.Expires.Format(time.RFC3339))
	}
	return nil
}

// Descendants returns serial and the serials of every certificate renewed
// from it, at any depth, in certs: what a revocation of serial revokes,
// since whoever held it could have renewed it.
func Descendants(serial string, certs []*Cert) []string {
	children := map[string][]string{}
	for _, c := range certs {
		if c.RenewedFrom != "" {
			children[c.RenewedFrom] = append(children[c.RenewedFrom], c.Serial)
		}
	}
	serials := []string{serial}
	for i := 0; i < len(serials); i++ {
		serials = append(serials, children[serials[i]]...)
	}
	return serials
}

// SealField makes the records seal.Sealed.
func (t *Token) SealField() *string { return &t.Seal }
func (j *Join) SealField() *string  { return &j.Seal }
func (c *Cert) SealField() *string  { return &c.Seal }

// API is the certificate as the API shows it.
func (c *Cert) API() api.Certificate {
	return api.Certificate{Serial: c.Serial, Host: c.Host, Issued: c.Issued, NotAfter: c.NotAfter, Revoked: c.Revoked,
		RevokedBy: c.RevokedBy, RenewedFrom: c.RenewedFrom}
}

// Decode reads the access record at kv by its key: a *Token, *Join or
// *Cert; anything else under PrefixAuth (a token name's hash, a host's
// renewals) as its string.
func Decode(kv store.KV) (any, error) {
	var v any
	switch {
	case strings.HasPrefix(kv.Key, PrefixTokens):
		v = &Token{}
	case strings.HasPrefix(kv.Key, PrefixJoin):
		v = &Join{}
	case strings.HasPrefix(kv.Key, PrefixCerts):
		v = &Cert{}
	default:
		return string(kv.Value), nil
	}
	if err := json.Unmarshal(kv.Value, v); err != nil {
		return nil, err
	}
	return v, nil
}

// HashSecret is what names a secret's record: its SHA-256, hex.
func HashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// NewSecret returns prefix followed by 32 random bytes, base64url.
func NewSecret(prefix string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("manager: random: %w", err)
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b), nil
}

// JoinTokenID names a join token in lists and revocations: a prefix of
// the hash it is stored under, which reveals nothing of the secret.
func JoinTokenID(hash string) string { return hash[:16] }

// Bearer reads the token of an Authorization header. The scheme is
// matched without regard to case and followed by one or more spaces
// (RFC 7235 section 2.1, RFC 6750 section 2.1).
func Bearer(h string) (string, bool) {
	scheme, rest, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	secret := strings.TrimLeft(rest, " ")
	return secret, secret != "" && !strings.ContainsAny(secret, " \t")
}

// ValidRole reports whether role is a token's role.
func ValidRole(role string) bool {
	return role == api.RoleAdmin || role == api.RoleOperator || role == api.RoleAuditor
}

// Renewal is bounded per host: at most RenewBurst certificates within
// RenewWindow, counted from the host's renewal record in the store so
// that every manager counts the same.
const (
	RenewBurst  = 3
	RenewWindow = 10 * time.Minute
)

// Renewals keeps of a host's renewal times those within RenewWindow of
// now; wait is how long until it may renew again, 0 if it may now.
func Renewals(times []time.Time, now time.Time) (recent []time.Time, wait time.Duration) {
	for _, t := range times {
		if now.Sub(t) < RenewWindow {
			recent = append(recent, t)
		}
	}
	if len(recent) >= RenewBurst {
		wait = recent[len(recent)-RenewBurst].Add(RenewWindow).Sub(now)
	}
	return recent, wait
}
