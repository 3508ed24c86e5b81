package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// A host's certificates form chains: the one it joined with, then each
// renewed from the one before (credentials.Cert.RenewedFrom). Revoking one
// revokes its descendants with it, since whoever held it could have
// renewed it; revoking a host revokes all of its certificates and its
// unused join tokens. Renewal is bounded per host (credentials.Renewals).

func (m *Manager) getCertificates(w http.ResponseWriter, _ *http.Request, _ principal) error {
	out := []api.Certificate{}
	m.tab.certs.Each(credentials.PrefixCerts, func(_ string, c *credentials.Cert) {
		out = append(out, c.API())
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Host != out[j].Host {
			return out[i].Host < out[j].Host
		}
		return out[i].Issued.Before(out[j].Issued)
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revokeCertificate revokes a certificate and every certificate renewed
// from it, at any depth.
func (m *Manager) revokeCertificate(w http.ResponseWriter, r *http.Request, p principal) error {
	serial := r.PathValue("serial")
	var c credentials.Cert
	if _, err := m.readSealed(r.Context(), credentials.PrefixCerts+serial, &c); errors.Is(err, store.ErrNotFound) {
		return fault.New(fault.NotFound, nil, "no certificate with serial %q; GET /v1/certificates lists them", serial)
	} else if err != nil {
		return err
	}
	var certs []*credentials.Cert
	m.tab.certs.Each(credentials.PrefixCerts, func(_ string, rc *credentials.Cert) { certs = append(certs, rc) })
	serials := credentials.Descendants(serial, certs)
	revoked, err := m.revoke(r.Context(), p, "certificate.revoke", "host/"+c.Host, serials, nil)
	if err != nil {
		return err
	}
	if len(revoked) > 0 {
		c = revoked[0]
	} else if _, err := m.readSealed(r.Context(), credentials.PrefixCerts+serial, &c); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c.API())
	return nil
}

// revokeHost revokes every certificate of a host and deletes its unused
// join tokens.
func (m *Manager) revokeHost(w http.ResponseWriter, r *http.Request, p principal) error {
	host := r.PathValue("host")
	var serials, joins []string
	m.tab.certs.Each(credentials.PrefixCerts, func(_ string, c *credentials.Cert) {
		if c.Host == host {
			serials = append(serials, c.Serial)
		}
	})
	m.tab.joins.Each(credentials.PrefixJoin, func(key string, j *credentials.Join) {
		if j.Host == host && j.Used == nil {
			joins = append(joins, key)
		}
	})
	if len(serials) == 0 && len(joins) == 0 {
		return fault.New(fault.NotFound, nil, "host %q has no certificates or join tokens; GET /v1/certificates lists them", host)
	}
	sort.Strings(serials)
	sort.Strings(joins)
	revoked, err := m.revoke(r.Context(), p, "host.revoke", "host/"+host, serials, joins)
	if err != nil {
		return err
	}
	out := api.HostRevocation{Host: host, Certificates: []api.Certificate{}, JoinTokens: []string{}}
	for _, c := range revoked {
		out.Certificates = append(out.Certificates, c.API())
	}
	for _, k := range joins {
		out.JoinTokens = append(out.JoinTokens, credentials.JoinTokenID(k[len(credentials.PrefixJoin):]))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// revoke marks the certificates serials revoked (those not yet) and
// deletes the join token records joins, in one audited Txn, and waits
// until this manager's copy has it. It returns the certificates it
// revoked.
func (m *Manager) revoke(ctx context.Context, p principal, action, object string, serials, joins []string) ([]credentials.Cert, error) {
	now := m.now().UTC()
	var conds []store.Cond
	var ops []store.Op
	var revoked []credentials.Cert
	var done []string
	for _, s := range serials {
		var c credentials.Cert
		kv, err := m.readSealed(ctx, credentials.PrefixCerts+s, &c)
		if errors.Is(err, store.ErrNotFound) {
			continue // revoked with its record gone, or tampered with: it authenticates nothing
		} else if err != nil {
			return nil, err
		}
		if c.Revoked != nil {
			continue
		}
		c.Revoked, c.RevokedBy = &now, p.String()
		conds = append(conds, store.Unchanged(kv))
		ops = append(ops, store.Put(kv.Key, m.key.Seal(kv.Key, &c)))
		revoked = append(revoked, c)
		done = append(done, s)
	}
	for _, k := range joins {
		ops = append(ops, store.Delete(k))
	}
	if len(ops) == 0 {
		return nil, nil
	}
	detail := map[string]any{"serials": done}
	if len(done) == 1 && len(joins) == 0 {
		detail = map[string]any{"serial": done[0]}
	}
	if len(joins) > 0 {
		ids := make([]string, len(joins))
		for i, k := range joins {
			ids[i] = credentials.JoinTokenID(k[len(credentials.PrefixJoin):])
		}
		detail["joinTokens"] = ids
	}
	rev, ok, err := m.commitAudited(ctx, conds, ops, auditEntry{actor: p, action: action, object: object, detail: detail})
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fault.New(fault.Conflict, nil, "%s: a certificate changed meanwhile (renewed or revoked); try again", object)
	}
	return revoked, m.auth.WaitRev(ctx, rev)
}

// renewals returns the condition and op that record a renewal of host
// now in its renewal record (auth/renewals/HOST: the times of its recent
// renewals), or refuses it past credentials.RenewBurst within
// credentials.RenewWindow, saying when
// to try again. The record is conditioned on as read, so that renewals at
// the same moment, on any manager, cannot all pass the count.
func (m *Manager) renewals(ctx context.Context, host string) (store.Cond, store.Op, error) {
	key := credentials.PrefixRenewals + host
	kv, err := m.st.Get(ctx, key)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return store.Cond{}, store.Op{}, fmt.Errorf("manager: read %s: %w", key, err)
	}
	var times []time.Time
	if len(kv.Value) > 0 {
		_ = json.Unmarshal(kv.Value, &times) // a record that does not decode counts nothing: it only bounds
	}
	now := m.now().UTC()
	recent, wait := credentials.Renewals(times, now)
	if wait > 0 {
		secs := max(1, int(wait.Seconds()+0.999))
		return store.Cond{}, store.Op{}, &retryLater{after: secs, err: fault.New(fault.TooMany, nil, "renew: host %s renewed %d times in the last %s, the most allowed; try again in %ds",
			host, len(recent), credentials.RenewWindow, secs)}
	}
	value, _ := json.Marshal(append(recent, now))
	return store.Cond{Key: key, ModRev: kv.ModRev}, store.Put(key, value), nil
}
