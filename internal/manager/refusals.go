package manager

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
)

// Refusals of authentication and authorization are audited, so that an
// auditor sees who tried what and from where, but at a bounded rate: a
// flood of refused requests must not fill the store. Up to refusalBurst
// are written at once, then one per refusalEvery; the rest are counted,
// and the count is written with the next refusal audited (detail
// "suppressedBefore") or, if none comes, by refusalLoop in an entry of its
// own ("auth.refused.suppressed"). Nothing is lost silently: every refusal
// is either an entry or in a count.
const (
	refusalBurst = 20
	refusalEvery = 5 * time.Second
)

type refusalLimiter struct {
	mu         sync.Mutex
	tokens     float64
	last       time.Time
	suppressed uint64
}

// take reports whether a refusal at now may be written; if so it also
// returns, and clears, the count of refusals suppressed before it.
func (l *refusalLimiter) take(now time.Time) (bool, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last.IsZero() {
		l.tokens = refusalBurst
	} else if d := now.Sub(l.last); d > 0 {
		l.tokens = min(refusalBurst, l.tokens+float64(d)/float64(refusalEvery))
	}
	l.last = now
	if l.tokens < 1 {
		l.suppressed++
		return false, 0
	}
	l.tokens--
	n := l.suppressed
	l.suppressed = 0
	return true, n
}

// giveBack restores a count take cleared, when its entry was not written.
func (l *refusalLimiter) giveBack(n uint64) {
	l.mu.Lock()
	l.suppressed += n
	l.mu.Unlock()
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
	ok, suppressed := m.refusals.take(now)
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
		m.refusals.giveBack(suppressed + 1)
		m.log.Error("refusal not audited", "method", r.Method, "path", r.URL.Path, "remote", remoteHost(r), "err", werr)
	}
}

// refusalLoop writes the count of suppressed refusals that no later
// audited refusal carried, once the rate allows.
func (m *Manager) refusalLoop(ctx context.Context) {
	t := time.NewTicker(refusalEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.refusals.mu.Lock()
		pending := m.refusals.suppressed
		m.refusals.mu.Unlock()
		if pending == 0 {
			continue
		}
		ok, n := m.refusals.take(m.now())
		if !ok || n == 0 {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, _, err := m.commitAudited(wctx, nil, nil, auditEntry{actor: system, action: "auth.refused.suppressed", object: "requests",
			detail: map[string]any{"suppressed": n}})
		cancel()
		if err != nil {
			m.refusals.giveBack(n)
		}
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
		return scheme + " sha256:" + hashSecret(strings.TrimSpace(secret))[:16]
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		host, _ := pki.HostOf(cert)
		return "certificate " + pki.Serial(cert) + " host:" + host
	}
	return ""
}
