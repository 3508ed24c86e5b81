package manager

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// principal is who made a request: a token's holder or a host's agent.
type principal struct {
	kind   string // "token", "host" or "" (nobody, or the manager itself)
	name   string
	role   string // a token's role; "agent" for a host
	serial string // a host's certificate
	hash   string // a token's hash
}

func (p principal) String() string {
	switch p.kind {
	case "token":
		return fmt.Sprintf("token:%s (%s)", p.name, p.role)
	case "host":
		return "host:" + p.name
	case "":
		if p.name != "" {
			return p.name
		}
	}
	return "anonymous"
}

// system is the manager acting on its own (the first start).
var system = principal{name: "manager"}

// access says who may call a route.
type access struct {
	public bool     // no authentication
	roles  []string // token roles allowed
	agents bool     // agents' client certificates allowed
	join   bool     // a join token in the body stands for authentication
}

var (
	anyRole   = []string{api.RoleAdmin, api.RoleOperator, api.RoleAuditor}
	adminOnly = []string{api.RoleAdmin}
	operators = []string{api.RoleAdmin, api.RoleOperator}
)

func (a access) allows(p principal) bool {
	switch p.kind {
	case "token":
		for _, r := range a.roles {
			if r == p.role {
				return true
			}
		}
	case "host":
		return a.agents
	}
	return false
}

func (a access) String() string {
	var who []string
	if len(a.roles) > 0 {
		who = append(who, "a token with role "+strings.Join(a.roles, " or "))
	}
	if a.agents {
		who = append(who, "an agent's client certificate")
	}
	return strings.Join(who, ", or ")
}

// authenticate finds who made r: a bearer token, else an agent's client
// certificate. It refuses what it cannot verify with 401, and a revoked
// or unknown certificate with 403.
func (m *Manager) authenticate(r *http.Request) (principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		secret, ok := credentials.Bearer(h)
		if !ok {
			return principal{}, fault.New(fault.Unauthenticated, nil, "Authorization: want \"Bearer TOKEN\"")
		}
		hash := credentials.HashSecret(secret)
		t, ok := m.tab.tokens.Get(credentials.PrefixTokens + hash)
		if !ok {
			return principal{}, fault.New(fault.Unauthenticated, nil, "the bearer token is unknown or revoked")
		}
		return principal{kind: "token", name: t.Name, role: t.Role, hash: hash}, nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		host, err := pki.HostOf(cert)
		if err != nil {
			return principal{}, fault.New(fault.Forbidden, nil, "client certificate: %w", err)
		}
		serial := pki.Serial(cert)
		c, ok := m.tab.certs.Get(credentials.PrefixCerts + serial)
		if !ok {
			return principal{}, fault.New(fault.Forbidden, nil, "client certificate %s of host %s is not in this manager's records", serial, host)
		}
		switch {
		case c.Revoked != nil:
			return principal{}, fault.New(fault.Forbidden, nil, "client certificate %s of host %s was revoked at %s by %s; join again with a new join token",
				serial, host, c.Revoked.Format(time.RFC3339), c.RevokedBy)
		case c.Host != host:
			return principal{}, fault.New(fault.Forbidden, nil, "client certificate %s names host %s, but was issued to host %s", serial, host, c.Host)
		}
		return principal{kind: "host", name: host, role: "agent", serial: serial}, nil
	}
	return principal{}, fault.New(fault.Unauthenticated, nil, "authentication required: send Authorization: Bearer TOKEN, or an agent's client certificate")
}

// sameHost refuses an agent acting for another host.
func sameHost(p principal, host string) error {
	if p.kind == "host" && p.name != host {
		return fault.New(fault.Forbidden, nil, "this client certificate names host %s; it may not act for host %s", p.name, host)
	}
	return nil
}

// createToken stores a new token (failing if the name is taken) and
// returns its secret; the audit entry is in the same Txn.
func (m *Manager) createToken(ctx context.Context, by principal, name, role string, extraConds []store.Cond, extraOps []store.Op) (api.Token, int64, error) {
	if err := pki.ValidHost(name); err != nil {
		return api.Token{}, 0, fault.New(fault.BadRequest, nil, "name: %q: want lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit", name)
	}
	if !credentials.ValidRole(role) {
		return api.Token{}, 0, fault.New(fault.BadRequest, nil, "role: %q; valid: admin, operator, auditor", role)
	}
	secret, err := credentials.NewSecret(credentials.TokenPrefix)
	if err != nil {
		return api.Token{}, 0, err
	}
	hash := credentials.HashSecret(secret)
	rec := credentials.Token{Name: name, Role: role, Created: m.now().UTC(), CreatedBy: by.String()}
	value := m.key.Seal(credentials.PrefixTokens+hash, &rec)
	conds := append([]store.Cond{store.Absent(credentials.PrefixTokenNames + name)}, extraConds...)
	ops := append([]store.Op{store.Put(credentials.PrefixTokens+hash, value), store.Put(credentials.PrefixTokenNames+name, []byte(hash))}, extraOps...)
	rev, ok, err := m.commitAudited(ctx, conds, ops, auditEntry{actor: by, action: "token.create", object: "token/" + name, detail: map[string]string{"role": role}})
	if err != nil {
		return api.Token{}, 0, err
	}
	if !ok {
		return api.Token{}, 0, fault.New(fault.Conflict, nil, "a token named %q exists; revoke it first or choose another name", name)
	}
	return api.Token{Name: name, Role: role, Created: rec.Created, CreatedBy: rec.CreatedBy, Secret: secret}, rev, nil
}

// refused audits a refused request: action auth.refused (401, who could
// not be told) or access.refused (403), object the route, actor who it
// was as far as known, and in detail where from, the credential offered
// and why (cred, else what the request carries). It never fails the
// request: a refusal the store cannot take is logged.
func (m *Manager) refused(r *http.Request, p principal, err error, cred string) {
	// The entry records the status the refusal was answered with.
	status := http.StatusInternalServerError
	if fault.KindOf(err) != nil {
		status = fault.StatusOf(err)
	}
	action := "access.refused"
	if fault.KindOf(err) == fault.Unauthenticated {
		action = "auth.refused"
	}
	now := m.now()
	ok, suppressed := m.auditLog.TakeRefusal(now)
	if !ok {
		return
	}
	actor := p
	if actor.kind == "" {
		actor = principal{kind: "anonymous", name: remoteHost(r)}
	}
	detail := map[string]any{"remote": remoteHost(r), "status": status, "reason": err.Error()}
	if cred == "" {
		cred = credential(r)
	}
	if cred != "" {
		detail["credential"] = cred
	}
	if suppressed > 0 {
		detail["suppressedBefore"] = suppressed
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if _, _, werr := m.commitAudited(ctx, nil, nil, auditEntry{actor: actor, action: action, object: r.Method + " " + r.URL.Path, detail: detail}); werr != nil {
		m.auditLog.GiveBackRefusals(suppressed + 1)
		m.log.Error("refusal not audited", "method", r.Method, "path", r.URL.Path, "remote", remoteHost(r), "err", werr)
	}
}

func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// credential describes what the client offered, never the secret: a
// bearer token by a prefix of its hash (which the token list does not
// show, but which tells repeated tries of one token apart), a client
// certificate by serial and the host it names.
func credential(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, secret, _ := strings.Cut(h, " ")
		return scheme + " sha256:" + credentials.HashSecret(strings.TrimSpace(secret))[:16]
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		host, _ := pki.HostOf(cert)
		return "certificate " + pki.Serial(cert) + " host:" + host
	}
	return ""
}
