package api

import (
	"encoding/json"
	"time"
)

// The manager's public API: JSON over HTTPS (TLS 1.3), described route by
// route in api/openapi.yaml; docs/manager.md explains the model. Every
// route but GET /healthz and GET /readyz needs a bearer token (admin,
// operator or auditor) or, on the agent routes, an agent's client
// certificate. Errors are an HTTP 4xx or 5xx status with an APIError body.
//
// Revisions are the store's revision numbers: one counter for everything,
// increasing but not consecutive. A policy revision is a revision at which
// the objects changed; a host has realized revision R when it enforces
// everything the feed held up to R.

// Roles a token may carry.
const (
	RoleAdmin    = "admin"    // everything
	RoleOperator = "operator" // read everything, act on workloads
	RoleAuditor  = "auditor"  // read everything, including the audit log
)

// TokenRequest creates an API token (POST /v1/tokens).
type TokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"`
}

// Token describes an API token; Secret is set only in the answer that
// created it and is never stored.
type Token struct {
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"createdBy"`
	Secret    string    `json:"secret,omitempty"`
}

// JoinTokenRequest creates a one-time join token for a host
// (POST /v1/jointokens). TTL is a Go duration ("15m"); default one hour,
// at most 24 hours.
type JoinTokenRequest struct {
	Host string `json:"host"`
	TTL  string `json:"ttl,omitempty"`
}

// JoinToken answers POST /v1/jointokens; Secret is shown once. CAHash
// ("sha256:HEX" of the CA certificate's DER) lets a new agent trust the
// manager before it has the CA: it accepts a server whose chain ends in a
// CA with this hash.
type JoinToken struct {
	ID      string    `json:"id"` // names it in GET /v1/jointokens and DELETE /v1/jointokens/{id}
	Host    string    `json:"host"`
	Expires time.Time `json:"expires"`
	Secret  string    `json:"secret"`
	CAHash  string    `json:"caHash"`
}

// JoinRequest buys a client certificate (POST /v1/join, or POST /v1/renew
// with the agent's current certificate and no token): CSR is a PEM
// "CERTIFICATE REQUEST" whose subject is empty or CN=host:NAME.
type JoinRequest struct {
	Token string `json:"token,omitempty"`
	CSR   string `json:"csr"`
}

// JoinResult carries the agent's certificate and the CA that signed it
// (which also signed the manager's server certificate).
type JoinResult struct {
	Host        string    `json:"host"`
	Serial      string    `json:"serial"`
	NotAfter    time.Time `json:"notAfter"`
	Certificate string    `json:"certificate"` // PEM
	CA          string    `json:"ca"`          // PEM
}

// Certificate is an issued client certificate (GET /v1/certificates).
type Certificate struct {
	Serial    string     `json:"serial"`
	Host      string     `json:"host"`
	Issued    time.Time  `json:"issued"`
	NotAfter  time.Time  `json:"notAfter"`
	Revoked   *time.Time `json:"revoked,omitempty"`
	RevokedBy string     `json:"revokedBy,omitempty"`
	// RenewedFrom is the serial of the certificate this one was renewed
	// with (revoking that one revokes this one too); "" for a join.
	RenewedFrom string `json:"renewedFrom,omitempty"`
}

// ManagerApplyRequest is the body of POST /v1/apply and POST /v1/delete:
// the documents as the agent's API takes them, and how long to wait for
// every affected host to realize the new revision (a Go duration; the
// query parameter ?wait= does the same). Message is kept in the revision.
type ManagerApplyRequest struct {
	Documents []Document `json:"documents"`
	DryRun    bool       `json:"dryRun,omitempty"`
	Wait      string     `json:"wait,omitempty"`
	Message   string     `json:"message,omitempty"`
}

// ManagerApplyResult answers an apply, delete or rollback.
type ManagerApplyResult struct {
	Revision  int64       `json:"revision"` // 0 when nothing changed or dry run
	Created   []ObjectRef `json:"created,omitempty"`
	Updated   []ObjectRef `json:"updated,omitempty"`
	Unchanged []ObjectRef `json:"unchanged,omitempty"`
	Deleted   []ObjectRef `json:"deleted,omitempty"`
	// Wait: the hosts that had realized the revision when the answer was
	// sent, and those that had not (after the timeout).
	Realized    []string `json:"realized,omitempty"`
	NotRealized []string `json:"notRealized,omitempty"`
}

// Revision is one policy revision (GET /v1/revisions).
type Revision struct {
	Revision int64     `json:"revision"`
	Parent   int64     `json:"parent"` // the revision it changed; 0 for the first
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Message  string    `json:"message,omitempty"`
	Objects  int       `json:"objects"`
	// RollbackOf is set when the revision restored an earlier one.
	RollbackOf int64 `json:"rollbackOf,omitempty"`
}

// RevisionList answers GET /v1/revisions: a page of the revisions,
// newest first. Next, when set, is the cursor of the page after
// (?cursor=NEXT); it is absent on the last page.
type RevisionList struct {
	Head  int64      `json:"head"`
	Items []Revision `json:"items"`
	Next  string     `json:"next,omitempty"`
}

// ObjectChange is one object that differs between two revisions: Before
// is absent for a created object, After for a deleted one.
type ObjectChange struct {
	ObjectRef
	Before json.RawMessage `json:"before,omitempty"`
	After  json.RawMessage `json:"after,omitempty"`
}

// RevisionDiff answers GET /v1/revisions/diff?from=A&to=B.
type RevisionDiff struct {
	From    int64          `json:"from"`
	To      int64          `json:"to"`
	Changes []ObjectChange `json:"changes"`
}

// RollbackRequest is the body of POST /v1/revisions/{rev}/rollback.
type RollbackRequest struct {
	Wait    string `json:"wait,omitempty"`
	Message string `json:"message,omitempty"`
}

// HostWorkload is a workload as an agent reports it, with the host it
// runs on and the cluster-wide identity the manager gave its labels.
type HostWorkload struct {
	Host      string            `json:"host"`
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	IPs       []string          `json:"ips,omitempty"`
	Ports     []NamedPort       `json:"ports,omitempty"`
	Identity  uint32            `json:"identity,omitempty"` // set by the manager
	// HostIP is the host's underlay address (as a Kubernetes pod's
	// status.hostIP): the other hosts route the workload's addresses
	// through it.
	HostIP string `json:"hostIP,omitempty"`
}

// WorkloadReport is an agent's report of its host's workloads: PUT
// /v1/hosts/{host}/workloads replaces the whole set with Workloads; POST
// adds or updates Workloads and removes Deleted ("namespace/name").
type WorkloadReport struct {
	Workloads []HostWorkload `json:"workloads"`
	Deleted   []string       `json:"deleted,omitempty"`
}

// ReportResult answers a workload report: the revision it was stored at
// (0 when nothing changed) and the workloads as stored, with identities.
type ReportResult struct {
	Revision  int64          `json:"revision"`
	Workloads []HostWorkload `json:"workloads,omitempty"`
}

// WorkloadList answers GET /v1/workloads.
type WorkloadList struct {
	Revision int64          `json:"revision"`
	Items    []HostWorkload `json:"items"`
}

// HostStatus is what an agent reports about itself
// (PUT /v1/hosts/{host}/status).
type HostStatus struct {
	Realized int64  `json:"realized"` // the feed revision it enforces
	Health   string `json:"health"`   // "ok", or what is wrong
	Version  string `json:"version,omitempty"`
}

// Host is one host as the manager sees it (GET /v1/hosts).
type Host struct {
	Name      string    `json:"name"`
	Realized  int64     `json:"realized"`
	Health    string    `json:"health"`
	Version   string    `json:"version,omitempty"`
	LastSeen  time.Time `json:"lastSeen"`
	Workloads int       `json:"workloads"`
}

// HostBounds is what a host may claim in its workload reports (PUT and
// GET /v1/hosts/{host}/bounds), set by an admin. An empty list sets no
// bound of its kind: the manager then trusts the host as far as
// docs/security.md ("What a host may claim") says.
type HostBounds struct {
	// Ranges are the prefixes its workloads' addresses must lie in;
	// no other host's ranges may overlap them.
	Ranges []string `json:"ranges,omitempty"`
	// HostIPs are the prefixes its underlay address (hostIP) must lie in.
	HostIPs []string `json:"hostIPs,omitempty"`
	// Namespaces are the namespaces it may run workloads in.
	Namespaces []string `json:"namespaces,omitempty"`
	// Held (read only) are addresses that stay the host's after an
	// operator deleted the workload record that had them, until the
	// host's own report releases them.
	Held []string `json:"held,omitempty"`
}

// HostList answers GET /v1/hosts.
type HostList struct {
	Items []Host `json:"items"`
}

// Identity is a cluster-wide security identity: one number for each
// distinct (namespace, namespace labels, workload labels), the same on
// every host, and the addresses of the workloads that carry it.
type Identity struct {
	ID              uint32            `json:"id"`
	Namespace       string            `json:"namespace"`
	NamespaceLabels map[string]string `json:"namespaceLabels,omitempty"`
	Labels          map[string]string `json:"labels,omitempty"`
	Addresses       []string          `json:"addresses,omitempty"` // only in GET /v1/identities
}

// IdentityList answers GET /v1/identities.
type IdentityList struct {
	Revision int64      `json:"revision"`
	Items    []Identity `json:"items"`
}

// AuditActor is who did something: a token (with its role), an agent
// (its host) or the manager itself ("system").
type AuditActor struct {
	Kind string `json:"kind"` // "token", "agent", "system" or "anonymous"
	Name string `json:"name"`
	Role string `json:"role,omitempty"`
}

// AuditEntry is one record of the audit log (internal/audit's Entry).
type AuditEntry struct {
	Seq      uint64          `json:"seq"`
	Time     time.Time       `json:"time"`
	Actor    AuditActor      `json:"actor"`
	Action   string          `json:"action"` // e.g. "policy.apply", "token.create"
	Object   string          `json:"object"`
	Detail   json.RawMessage `json:"detail,omitempty"`
	Revision int64           `json:"revision,omitempty"` // the revision of the change it records
	PrevHash string          `json:"prevHash"`
	Hash     string          `json:"hash"`
}

// AuditList answers GET /v1/audit.
type AuditList struct {
	Items []AuditEntry `json:"items"`
	Next  uint64       `json:"next,omitempty"` // the seq to ask for next; 0 at the end
}

// AuditVerify answers GET /v1/audit/verify[?anchor=SEQ:HASH]: the chain
// is checked whole, and against the anchor (a head seen earlier) when
// given, else against the head the store keeps.
type AuditVerify struct {
	OK      bool   `json:"ok"`
	Entries uint64 `json:"entries"`
	Head    string `json:"head,omitempty"` // SEQ:HASH, an anchor for a later verify
	// Problem names the first entry that does not verify, and why.
	Problem string `json:"problem,omitempty"`
	Seq     uint64 `json:"seq,omitempty"` // that entry
}

// Feed event types: the lines of GET /v1/watch, one JSON object each.
const (
	FeedSnapshot  = "snapshot"  // a full snapshot follows: forget what you had
	FeedResync    = "resync"    // the revision asked for is gone: a snapshot follows
	FeedObject    = "object"    // a policy object was put or deleted
	FeedWorkload  = "workload"  // a workload of some host was put or deleted
	FeedIdentity  = "identity"  // an identity was put or deleted
	FeedRev       = "rev"       // everything up to Rev has been sent
	FeedHeartbeat = "heartbeat" // nothing new; the stream is alive
	FeedCutoff    = "cutoff"    // the server ends the stream; resume from Rev+1
)

// FeedEvent is one line of the watch stream. A reader applies the events
// between two "rev" lines as one consistent change, and resumes with
// ?from= the last "rev" line's Rev + 1.
type FeedEvent struct {
	Type string `json:"type"`
	Rev  int64  `json:"rev"`
	Op   string `json:"op,omitempty"` // "put" or "delete"
	// Object: Ref names it; Object is its native form (absent on delete).
	Ref      *ObjectRef      `json:"ref,omitempty"`
	Object   json.RawMessage `json:"object,omitempty"`
	Workload *HostWorkload   `json:"workload,omitempty"` // on delete: host, namespace, name only
	Identity *Identity       `json:"identity,omitempty"` // on delete: id only
	// Policy is the policy revision in force at Rev ("rev" lines).
	Policy int64  `json:"policy,omitempty"`
	Reason string `json:"reason,omitempty"` // resync, cutoff
}
