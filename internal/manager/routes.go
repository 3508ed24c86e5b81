package manager

import (
	"context"
	"net/http"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/fault"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
)

// route is one endpoint: what it serves, who may call it, and its
// handler. The table is the single source of the routes: the server
// registers exactly these, and a test checks them against
// api/openapi.yaml both ways.
type route struct {
	method, path string
	access       access
	handle       func(w http.ResponseWriter, r *http.Request, p principal) error
}

type principalKey struct{}

// Routes lists every route the manager serves, as "METHOD /path" with
// {name} for path parameters.
func (m *Manager) Routes() []string {
	out := make([]string, len(m.routes))
	for i, rt := range m.routes {
		out[i] = rt.method + " " + rt.path
	}
	return out
}

func (m *Manager) routeTable() []route {
	read := access{roles: anyRole}
	admin := access{roles: adminOnly}
	audit := access{roles: []string{api.RoleAdmin, api.RoleAuditor}}
	agents := access{agents: true}
	readOrAgents := access{roles: anyRole, agents: true}
	rs := []route{
		{"GET", "/healthz", access{public: true}, m.healthz},
		{"GET", "/readyz", access{public: true}, m.readyz},

		{"POST", "/v1/tokens", admin, m.postToken},
		{"GET", "/v1/tokens", admin, m.getTokens},
		{"DELETE", "/v1/tokens/{name}", admin, m.deleteToken},
		{"POST", "/v1/jointokens", admin, m.postJoinToken},
		{"GET", "/v1/jointokens", admin, m.getJoinTokens},
		{"DELETE", "/v1/jointokens/{id}", admin, m.deleteJoinToken},
		{"POST", "/v1/join", access{public: true, join: true}, m.postJoin},
		{"POST", "/v1/renew", agents, m.postRenew},
		{"GET", "/v1/certificates", read, m.getCertificates},
		{"POST", "/v1/certificates/{serial}/revoke", admin, m.revokeCertificate},
		{"POST", "/v1/hosts/{host}/revoke", admin, m.revokeHost},

		{"POST", "/v1/apply", admin, m.postApply},
		{"POST", "/v1/delete", admin, m.postDelete},
		{"GET", "/v1/objects", read, m.getObjects},
		{"GET", "/v1/revisions", read, m.getRevisions},
		{"GET", "/v1/revisions/diff", read, m.getDiff},
		{"GET", "/v1/revisions/{rev}", read, m.getRevision},
		{"POST", "/v1/revisions/{rev}/rollback", admin, m.postRollback},

		{"GET", "/v1/workloads", read, m.getWorkloads},
		{"DELETE", "/v1/workloads/{host}/{namespace}/{name}", access{roles: operators}, m.deleteWorkload},
		{"PUT", "/v1/hosts/{host}/workloads", agents, m.putWorkloads},
		{"POST", "/v1/hosts/{host}/workloads", agents, m.postWorkloads},
		{"PUT", "/v1/hosts/{host}/status", agents, m.putStatus},
		{"GET", "/v1/hosts", read, m.getHosts},
		{"GET", "/v1/hosts/{host}/bounds", read, m.getHostBounds},
		{"PUT", "/v1/hosts/{host}/bounds", admin, m.putHostBounds},
		{"GET", "/v1/identities", readOrAgents, m.getIdentities},
		{"GET", "/v1/watch", readOrAgents, m.getWatch},
		{"GET", "/v1/bindings", read, m.getBindings},
		{"DELETE", "/v1/bindings/{namespace}/{name}/{class}", admin, m.deleteBinding},
		{"POST", "/v1/bindings/{namespace}/{name}/{class}/end", access{roles: operators}, m.postBindingEnd},

		{"GET", "/v1/audit", audit, m.getAudit},
		{"GET", "/v1/audit/verify", audit, m.getAuditVerify},
		{"GET", "/v1/audit/head", audit, m.getAuditHead},
		{"GET", "/v1/alerts", read, m.getAlerts},

		{"POST", "/v1/escalations", agents, m.postEscalation},
		{"GET", "/v1/escalations", read, m.getEscalations},
		{"POST", "/v1/escalations/{id}/approve", access{roles: operators}, m.postEscalationAnswer(true)},
		{"POST", "/v1/escalations/{id}/deny", access{roles: operators}, m.postEscalationAnswer(false)},
		{"POST", "/v1/flows", agents, m.postFlows},
		{"GET", "/v1/flows", read, m.getFlows},
		{"GET", "/v1/flows/counts", read, m.getFlowCounts},
	}
	for _, res := range objects.Resources() {
		rs = append(rs, route{"GET", "/v1/" + res, read, m.listResource(res)})
	}
	return rs
}

// wrap authenticates, authorizes, bounds and runs a route, answering
// errors as APIError bodies. Nothing of a body is read before the client
// is known and within its limits.
func (m *Manager) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p principal
		if !rt.access.public {
			var err error
			if err := m.waitAccess(r.Context()); err != nil {
				m.writeError(w, r, err)
				return
			}
			if p, err = m.authenticate(r); err != nil {
				m.refused(r, p, err, "")
				m.writeError(w, r, err)
				return
			}
			if !rt.access.allows(p) {
				err := fault.New(fault.Forbidden, nil, "%s %s needs %s; %s may not", rt.method, rt.path, rt.access, p)
				m.refused(r, p, err, "")
				m.writeError(w, r, err)
				return
			}
		}
		w, release, ok := m.admit(w, r, rt, p)
		if !ok {
			return
		}
		defer release()
		r = r.WithContext(context.WithValue(r.Context(), principalKey{}, p))
		if err := rt.handle(w, r, p); err != nil {
			m.writeError(w, r, err)
		}
	})
}

func (m *Manager) healthz(w http.ResponseWriter, _ *http.Request, _ principal) error {
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
	return nil
}

func (m *Manager) readyz(w http.ResponseWriter, _ *http.Request, _ principal) error {
	if !m.ready() {
		return fault.New(fault.Unavailable, nil, "not ready: the store has not been read yet")
	}
	if err := m.storeOK.get(); err != nil {
		// %v, not %w: the cause is the store's, and writeError would then
		// answer it as a request the store failed, not as "not ready".
		return fault.New(fault.Unavailable, nil, "not ready: %v", err)
	}
	writeJSON(w, http.StatusOK, api.Health{Status: "ok"})
	return nil
}
