package manager

import (
	"context"
	"errors"
	"net/http"
	"sort"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/pki"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

func (m *Manager) postToken(w http.ResponseWriter, r *http.Request, p principal) error {
	var req api.TokenRequest
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	tok, rev, err := m.createToken(r.Context(), p, req.Name, req.Role, nil, nil)
	if err != nil {
		return err
	}
	if err := m.auth.WaitRev(r.Context(), rev); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, tok)
	return nil
}

func (m *Manager) getTokens(w http.ResponseWriter, _ *http.Request, _ principal) error {
	out := []api.Token{}
	m.tab.tokens.Each(credentials.PrefixTokens, func(_ string, t *credentials.Token) {
		out = append(out, api.Token{Name: t.Name, Role: t.Role, Created: t.Created, CreatedBy: t.CreatedBy})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deleteToken revokes a token: its record goes, so it no longer
// authenticates anywhere.
func (m *Manager) deleteToken(w http.ResponseWriter, r *http.Request, p principal) error {
	name := r.PathValue("name")
	ctx := r.Context()
	nameKV, err := m.st.Get(ctx, credentials.PrefixTokenNames+name)
	if errors.Is(err, store.ErrNotFound) {
		return fault.New(fault.NotFound, nil, "no token named %q; GET /v1/tokens lists them", name)
	} else if err != nil {
		return err
	}
	hash := string(nameKV.Value)
	rev, ok, err := m.commitAudited(ctx, []store.Cond{store.Unchanged(nameKV)},
		[]store.Op{store.Delete(credentials.PrefixTokenNames + name), store.Delete(credentials.PrefixTokens + hash)},
		auditEntry{actor: p, action: "token.revoke", object: "token/" + name})
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.Conflict, nil, "token %q changed meanwhile; try again", name)
	}
	if err := m.auth.WaitRev(ctx, rev); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// DefaultJoinTTL is how long a join token is valid unless asked otherwise;
// MaxJoinTTL bounds what may be asked: a join token is for a host about to
// join, not a standing credential.
const (
	DefaultJoinTTL = time.Hour
	MaxJoinTTL     = 24 * time.Hour
)

func (m *Manager) postJoinToken(w http.ResponseWriter, r *http.Request, p principal) error {
	var req api.JoinTokenRequest
	if err := m.decode(w, r, &req); err != nil {
		return err
	}
	if err := pki.ValidHost(req.Host); err != nil {
		return fault.New(fault.BadRequest, nil, "host: %w", err)
	}
	ttl := DefaultJoinTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d < time.Second || d > MaxJoinTTL {
			return fault.New(fault.BadRequest, nil, "ttl: %q: want a Go duration between 1s and %s, such as 15m", req.TTL, MaxJoinTTL)
		}
		ttl = d
	}
	jt, rev, err := m.createJoinToken(r.Context(), p, req.Host, ttl)
	if err != nil {
		return err
	}
	if err := m.auth.WaitRev(r.Context(), rev); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, jt)
	return nil
}

// CreateJoinToken makes a one-time join token for host, as an admin
// would (for `bulkhead up`, which joins its own agent).
func (m *Manager) CreateJoinToken(ctx context.Context, host string, ttl time.Duration) (api.JoinToken, error) {
	jt, rev, err := m.createJoinToken(ctx, system, host, ttl)
	if err != nil {
		return jt, err
	}
	return jt, m.auth.WaitRev(ctx, rev)
}

func (m *Manager) createJoinToken(ctx context.Context, by principal, host string, ttl time.Duration) (api.JoinToken, int64, error) {
	if err := pki.ValidHost(host); err != nil {
		return api.JoinToken{}, 0, fault.New(fault.BadRequest, nil, "host: %w", err)
	}
	secret, err := credentials.NewSecret(credentials.JoinPrefix)
	if err != nil {
		return api.JoinToken{}, 0, err
	}
	now := m.now().UTC()
	rec := credentials.Join{Host: host, Expires: now.Add(ttl), Created: now, CreatedBy: by.String()}
	key := credentials.PrefixJoin + credentials.HashSecret(secret)
	value := m.key.Seal(key, &rec)
	rev, _, err := m.commitAudited(ctx, []store.Cond{store.Absent(key)}, []store.Op{store.Put(key, value)},
		auditEntry{actor: by, action: "jointoken.create", object: "host/" + host, detail: map[string]string{"id": credentials.JoinTokenID(credentials.HashSecret(secret)), "expires": rec.Expires.Format(time.RFC3339)}})
	if err != nil {
		return api.JoinToken{}, 0, err
	}
	return api.JoinToken{ID: credentials.JoinTokenID(credentials.HashSecret(secret)), Host: host, Expires: rec.Expires, Secret: secret, CAHash: m.ca.Hash()}, rev, nil
}

func (m *Manager) getJoinTokens(w http.ResponseWriter, _ *http.Request, _ principal) error {
	out := []api.JoinTokenInfo{}
	now := m.now()
	m.tab.joins.Each(credentials.PrefixJoin, func(key string, j *credentials.Join) {
		info := api.JoinTokenInfo{ID: credentials.JoinTokenID(key[len(credentials.PrefixJoin):]), Host: j.Host, Created: j.Created, CreatedBy: j.CreatedBy,
			Expires: j.Expires, Used: j.Used, State: "unused"}
		switch {
		case j.Used != nil:
			info.State = "used"
		case now.After(j.Expires):
			info.State = "expired"
		}
		out = append(out, info)
	})
	sort.Slice(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	writeJSON(w, http.StatusOK, out)
	return nil
}

// deleteJoinToken revokes a join token by its id: its record goes, so it
// joins nothing.
func (m *Manager) deleteJoinToken(w http.ResponseWriter, r *http.Request, p principal) error {
	id := r.PathValue("id")
	var key string
	var host string
	m.tab.joins.Each(credentials.PrefixJoin, func(k string, j *credentials.Join) {
		if credentials.JoinTokenID(k[len(credentials.PrefixJoin):]) == id {
			key, host = k, j.Host
		}
	})
	if len(id) != 16 || key == "" {
		return fault.New(fault.NotFound, nil, "no join token with id %q; GET /v1/jointokens lists them", id)
	}
	ctx := r.Context()
	var jt credentials.Join
	kv, err := m.readSealed(ctx, key, &jt)
	if errors.Is(err, store.ErrNotFound) {
		return fault.New(fault.NotFound, nil, "no join token with id %q; GET /v1/jointokens lists them", id)
	} else if err != nil {
		return err
	}
	rev, ok, err := m.commitAudited(ctx, []store.Cond{store.Unchanged(kv)}, []store.Op{store.Delete(key)},
		auditEntry{actor: p, action: "jointoken.revoke", object: "host/" + host, detail: map[string]string{"id": id}})
	if err != nil {
		return err
	}
	if !ok {
		return fault.New(fault.Conflict, nil, "join token %s changed meanwhile; try again", id)
	}
	if err := m.auth.WaitRev(ctx, rev); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
