package manager

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/bounds"
	"github.com/bulkhead-dev/bulkhead/internal/manager/credentials"
	"github.com/bulkhead-dev/bulkhead/internal/manager/mirror"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/manager/seal"
	"github.com/bulkhead-dev/bulkhead/internal/store"
)

// tables are the typed values of the manager's copies of the store
// (internal/manager/mirror): one mirror per prefix, m.auth, m.feed,
// m.hosts and m.revisions, and in them one table per kind of record.
type tables struct {
	tokens     *mirror.Table[credentials.Token] // auth/tokens/
	joins      *mirror.Table[credentials.Join]  // auth/join/
	certs      *mirror.Table[credentials.Cert]  // auth/certs/
	head       *mirror.Table[revisions.Record]  // feed/head
	workloads  *mirror.Table[workloadItem]      // feed/workloads/
	identities *mirror.Table[api.Identity]      // feed/identities/
	hostRecs   *mirror.Table[hostRecord]        // hosts/H
	boundsRecs *mirror.Table[bounds.Record]     // hosts/H/bounds
	held       *mirror.Table[bounds.Held]       // hosts/H/held/A
	revs       *mirror.Table[revisions.Record]  // revisions/
}

// newCopies makes the mirrors and their tables and hooks; run starts
// them.
func (m *Manager) newCopies() {
	m.auth = mirror.New(m.st, credentials.PrefixAuth, m.log)
	m.auth.Ignore(credentials.PrefixTokenNames, credentials.PrefixRenewals, keyBootstrap)
	m.tab.tokens = mirror.Add(m.auth, mirror.Under(credentials.PrefixTokens), decodeSealed[credentials.Token](m, nil))
	m.tab.joins = mirror.Add(m.auth, mirror.Under(credentials.PrefixJoin), decodeSealed(m, m.holdJoin))
	m.tab.certs = mirror.Add(m.auth, mirror.Under(credentials.PrefixCerts), decodeSealed(m, m.holdCert))

	m.feed = mirror.New(m.st, prefixFeed, m.log)
	m.tab.head = mirror.Add(m.feed, func(k string) bool { return k == keyHead }, revisions.Decode)
	m.tab.workloads = mirror.Add(m.feed, mirror.Under(prefixWorkloads), decodeWorkload)
	m.tab.identities = mirror.Add(m.feed, mirror.Under(prefixIdentities), decodeAs[api.Identity]("identity"))
	m.feed.OnReset = m.inv.Reset
	m.tab.workloads.OnChange = func(key string, old, new *workloadItem) {
		m.inv.Change(key, old.hostWorkload(), new.hostWorkload())
	}

	m.hosts = mirror.New(m.st, prefixHosts, m.log)
	hostSub := func(want func(sub string) bool) func(string) bool {
		return func(key string) bool { _, sub := bounds.KeyParts(key); return want(sub) }
	}
	m.tab.hostRecs = mirror.Add(m.hosts, hostSub(func(s string) bool { return s == "" }), decodeAs[hostRecord]("host's status"))
	m.tab.boundsRecs = mirror.Add(m.hosts, hostSub(func(s string) bool { return s == "bounds" }), decodeAs[bounds.Record]("host's bounds"))
	m.tab.held = mirror.Add(m.hosts, hostSub(func(s string) bool { return strings.HasPrefix(s, "held/") }), decodeAs[bounds.Held]("held address"))
	m.hosts.OnReset, m.tab.boundsRecs.OnChange, m.tab.held.OnChange = m.bounds.Reset, m.bounds.ChangeBounds, m.bounds.ChangeHeld

	m.revisions = mirror.New(m.st, prefixRevisions, m.log)
	m.tab.revs = mirror.Add(m.revisions, mirror.Under(prefixRevisions), revisions.Decode)

	for _, mi := range m.mirrors() {
		mi.OnRefuse = m.mirrorRefused
	}
}

func (m *Manager) mirrors() []*mirror.Mirror {
	return []*mirror.Mirror{m.auth, m.feed, m.hosts, m.revisions}
}

// mirrorRefused raises the alert for a value a mirror left out, unless its
// seal did not verify, which decodeSealed raised already.
func (m *Manager) mirrorRefused(key string, err error) {
	var tampered *seal.TamperedError
	if errors.As(err, &tampered) {
		return
	}
	m.raise("record-type", key, fmt.Sprintf("%v; the manager leaves it out", err))
}

// decodeAs decodes a JSON record of type T, what names it saying what a
// T is.
func decodeAs[T any](what string) func(store.KV) (*T, error) {
	return func(kv store.KV) (*T, error) {
		v := new(T)
		if err := json.Unmarshal(kv.Value, v); err != nil {
			return nil, fmt.Errorf("the value is not a %s, as its key names: %w", what, err)
		}
		return v, nil
	}
}

// decodeSealed decodes an access record and checks its seal (one that
// does not verify raises record-seal); hold, if set, then holds its
// one-way state against a rolled-back store.
func decodeSealed[T any, P interface {
	*T
	sealed
}](m *Manager, hold func(key string, rec P)) func(store.KV) (*T, error) {
	return func(kv store.KV) (*T, error) {
		var rec P = new(T)
		if err := json.Unmarshal(kv.Value, rec); err != nil {
			return nil, fmt.Errorf("the value is not the access record its key names: %w", err)
		}
		if err := m.key.Check(kv.Key, rec); err != nil {
			m.raise("record-seal", kv.Key, err.Error())
			return nil, err
		}
		if hold != nil {
			hold(kv.Key, rec)
		}
		return rec, nil
	}
}

func (it *workloadItem) hostWorkload() *api.HostWorkload {
	if it == nil {
		return nil
	}
	return it.workload
}
