package manager

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// postJoin trades a one-time join token and a CSR for a client
// certificate. The token is marked used in the same Txn that records the
// certificate, conditioned on it being unused, so that two joins with one
// token cannot both succeed.
func (m *Manager) postJoin(w http.ResponseWriter, r *http.Request, _ principal) error {
	var req api.JoinRequest
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	if req.Token == "" {
		return fault.New(fault.BadRequest, nil, "token: required: a join token from `bulkhead token create --join --host NAME`")
	}
	if req.CSR == "" {
		return fault.New(fault.BadRequest, nil, "csr: required: a PEM certificate request")
	}
	if err := m.join(w, r, req); err != nil {
		if errors.Is(fault.KindOf(err), fault.Forbidden) { // also fault.Unauthenticated
			m.refused(r, principal{}, err, "join token sha256:"+credentials.HashSecret(strings.TrimSpace(req.Token))[:16])
		}
		return err
	}
	return nil
}

// join is postJoin once the request is read; its refusals of the token
// are audited by postJoin.
func (m *Manager) join(w http.ResponseWriter, r *http.Request, req api.JoinRequest) error {
	ctx := r.Context()
	key := credentials.PrefixJoin + credentials.HashSecret(strings.TrimSpace(req.Token))
	var jt credentials.Join
	kv, err := m.readSealed(ctx, key, &jt)
	if errors.Is(err, store.ErrNotFound) {
		return fault.New(fault.Unauthenticated, nil, "token: unknown join token")
	} else if err != nil {
		return err
	}
	now := m.now().UTC()
	if err := jt.Usable(now); err != nil {
		return err
	}
	cert, err := m.ca.SignCSR([]byte(req.CSR), jt.Host, now, m.cfg.ClientValidity)
	if err != nil {
		return fault.New(fault.BadRequest, nil, "csr: %w", err)
	}
	jt.Used = &now
	used := m.key.Seal(key, &jt)
	by := principal{kind: "host", name: jt.Host}
	res, rev, ok, err := m.issue(ctx, by, "host.join", cert, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Put(key, used)})
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.Forbidden, nil, "token: the join token for host %s was used meanwhile; a join token is good for one join", jt.Host)
	}
	if err := m.auth.WaitRev(ctx, rev); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// postRenew gives an agent a new certificate for its host, with the
// certificate it has (which stays valid until it expires or is revoked).
func (m *Manager) postRenew(w http.ResponseWriter, r *http.Request, p principal) error {
	var req api.JoinRequest
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	if req.Token != "" {
		return fault.New(fault.BadRequest, nil, "token: not used to renew; the client certificate says which host this is")
	}
	countCond, countOp, err := m.renewals(r.Context(), p.name)
	if err != nil {
		m.refused(r, p, err, "")
		return err
	}
	// The renewal is conditioned on the certificate it renews being as
	// read, unrevoked: a revocation that commits first (and revokes its
	// descendants) makes this Txn fail rather than leave a live child.
	var parent credentials.Cert
	parentKV, err := m.readSealed(r.Context(), credentials.PrefixCerts+p.serial, &parent)
	if err != nil {
		return err
	}
	if parent.Revoked != nil {
		return fault.New(fault.Forbidden, nil, "renew: certificate %s was revoked", p.serial)
	}
	cert, err := m.ca.SignCSR([]byte(req.CSR), p.name, m.now(), m.cfg.ClientValidity)
	if err != nil {
		return fault.New(fault.BadRequest, nil, "csr: %w", err)
	}
	res, rev, ok, err := m.issue(r.Context(), p, "host.renew", cert, []store.Cond{store.Unchanged(parentKV), countCond}, []store.Op{countOp})
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.Conflict, nil, "renew: certificate %s was revoked, or host %s renewed, at the same moment; try again", p.serial, p.name)
	}
	if err := m.auth.WaitRev(r.Context(), rev); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// issue records a signed certificate (with conds and ops of the caller)
// and returns what the agent receives.
func (m *Manager) issue(ctx context.Context, by principal, action string, cert *x509.Certificate, conds []store.Cond, ops []store.Op) (api.JoinResult, int64, bool, error) {
	host, _ := pki.HostOf(cert)
	serial := pki.Serial(cert)
	rec := credentials.Cert{Serial: serial, Host: host, Issued: m.now().UTC(), NotAfter: cert.NotAfter}
	if action == "host.renew" {
		rec.RenewedFrom = by.serial
	}
	value := m.key.Seal(credentials.PrefixCerts+serial, &rec)
	conds = append(conds, store.Absent(credentials.PrefixCerts+serial))
	ops = append(ops, store.Put(credentials.PrefixCerts+serial, value))
	detail := map[string]string{"serial": serial, "notAfter": cert.NotAfter.UTC().Format(time.RFC3339)}
	if rec.RenewedFrom != "" {
		detail["renewedFrom"] = rec.RenewedFrom
	}
	rev, ok, err := m.commitAudited(ctx, conds, ops, auditEntry{actor: by, action: action, object: "host/" + host, detail: detail})
	if err != nil || !ok {
		return api.JoinResult{}, 0, ok, err
	}
	return api.JoinResult{Host: host, Serial: serial, NotAfter: cert.NotAfter, Certificate: string(pki.CertPEM(cert)), CA: string(m.ca.CertPEM())}, rev, true, nil
}
