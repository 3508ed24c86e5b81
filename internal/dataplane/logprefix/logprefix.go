// Package logprefix is the format of the prefixes the dataplane writes on
// its NFLOG records — "bh KIND [ID]", such as "bh deny
// Policy/app/x/ingress/web" or "bh spoofed" — shared by the dataplane
// that writes them and by the readers (the flow collector, `bulkhead up`'s
// screen), so that neither needs the other.
package logprefix

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// The kinds of log record.
const (
	Allow     = "allow"
	Deny      = "deny"
	Reject    = "reject"
	Escalate  = "escalate"
	WouldDeny = "would-deny"
	Wall      = "wall"
	Spoofed   = "spoofed"
	NoEntry   = "no-entry"
)

// max is the kernel's limit on a log prefix (NF_LOG_PREFIXLEN 128, with
// its NUL); a longer id is replaced by "#" and Tag(id).
const max = 127

// Format returns the prefix of a record of kind about id (a rule id or a
// wall name; "" for none).
func Format(kind, id string) string {
	p := "bh " + kind
	if id != "" {
		p += " " + id
	}
	if len(p) <= max {
		return p
	}
	return "bh " + kind + " #" + Tag(id)
}

// Tag is the short form of an id too long for a prefix: 16 hex digits of
// its SHA-256.
func Tag(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:8])
}

// Parse splits a prefix made by Format. A long id comes back as "#" and
// its Tag.
func Parse(p string) (kind, id string, ok bool) {
	p = strings.TrimRight(p, "\x00")
	rest, ok := strings.CutPrefix(p, "bh ")
	if !ok {
		return "", "", false
	}
	kind, id, _ = strings.Cut(rest, " ")
	return kind, id, kind != ""
}
