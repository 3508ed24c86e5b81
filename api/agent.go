package api

// The agent's local API: JSON over HTTP/1.1 on a unix socket (default
// /run/bulkhead/agent.sock). The socket is created mode 0600 and the agent
// also checks the peer's credentials (SO_PEERCRED): only root or the
// agent's own user may call anything but GET /v1/health.
//
//	GET    /v1/health                       → Health (no authentication)
//	GET    /v1/status                       → AgentStatus
//	POST   /v1/apply        ApplyRequest    → ApplyResult, once the kernel enforces it
//	POST   /v1/delete       ApplyRequest    → ApplyResult, once the kernel enforces it
//	GET    /v1/objects?kind=K               → ObjectList
//	POST   /v1/explain      ExplainRequest  → policy report (as `bulkhead explain -o json`) and "text", the same in words
//	GET    /v1/workloads                    → []WorkloadRegistration
//	POST   /v1/workloads    WorkloadRegistration → WorkloadRegistration, once its policy is enforced
//	DELETE /v1/workloads/{namespace}/{name}[?interface=IF] → 204; idempotent; with interface, only if registered on IF
//	GET    /v1/counters                     → Counters
//
// Errors are an HTTP 4xx or 5xx status with an APIError body.

// APIError is the body of every error answer.
type APIError struct {
	Error string `json:"error"`
	// Details lists every problem found, each with its place
	// (file:line:col and field path) when it has one.
	Details []string `json:"details,omitempty"`
}

// Health answers GET /v1/health.
type Health struct {
	Status string `json:"status"` // "ok"
}

// Document is one input file, sent whole so that errors can name it.
type Document struct {
	Name string `json:"name"` // the file name errors will cite
	Data string `json:"data"` // YAML or JSON, one or many documents
}

// ApplyRequest carries the objects to add, update or delete.
type ApplyRequest struct {
	Documents []Document `json:"documents"`
	// DryRun validates (and proves the walls) without changing anything.
	DryRun bool `json:"dryRun,omitempty"`
}

// ObjectRef names one object.
type ObjectRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
}

// ApplyResult reports what an apply or delete changed.
type ApplyResult struct {
	Revision  int64       `json:"revision"`
	Created   []ObjectRef `json:"created,omitempty"`
	Updated   []ObjectRef `json:"updated,omitempty"`
	Unchanged []ObjectRef `json:"unchanged,omitempty"`
	Deleted   []ObjectRef `json:"deleted,omitempty"`
	// NotFound lists what a delete named that did not exist (not an error:
	// deleting twice is harmless).
	NotFound []ObjectRef `json:"notFound,omitempty"`
	// Enforced is how long the dataplane took, from request to the kernel
	// enforcing the result, in microseconds.
	EnforcedMicros int64 `json:"enforcedMicros"`
}

// ObjectList answers GET /v1/objects: the stored objects in their native
// form, one JSON value each, as apply would accept them.
type ObjectList struct {
	Revision int64            `json:"revision"`
	Items    []map[string]any `json:"items"`
}

// ExplainRequest asks for the verdict of one hypothetical connection.
// From and To are "namespace/name" or an address.
type ExplainRequest struct {
	From     string `json:"from"`
	To       string `json:"to"`
	Port     int    `json:"port"`           // the destination port; for ICMP the type
	Protocol string `json:"protocol"`       // tcp (default), udp, sctp, icmp, icmpv6
	Code     int    `json:"code,omitempty"` // for ICMP, the code
}

// WorkloadRegistration is how an attachment (the CNI plugin, the Docker
// driver) tells the agent about a local workload.
type WorkloadRegistration struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	IPs       []string          `json:"ips"`
	Ports     []NamedPort       `json:"ports,omitempty"`
	// Interface is the host-side interface the workload's packets arrive
	// on; anti-spoofing keys on it.
	Interface string `json:"interface"`
	// ContainerID is the runtime's id, kept for garbage collection.
	ContainerID string `json:"containerID,omitempty"`
	// RuntimeName is the container's name as its runtime shows it, when
	// Name had to be normalised from it (Podman's `frosty_pare` is
	// registered as frosty-pare); shown, never matched by a policy.
	RuntimeName string `json:"runtimeName,omitempty"`
}

// AgentStatus answers GET /v1/status.
type AgentStatus struct {
	Host      string `json:"host"`
	Revision  int64  `json:"revision"`
	Workloads int    `json:"workloads"`
	Policies  int    `json:"policies"`
	// Features are the kernel features the dataplane found at start-up,
	// with the fallbacks it chose.
	Features map[string]string `json:"features,omitempty"`
	// Elements counts what the dataplane holds in the kernel.
	Elements map[string]int `json:"elements,omitempty"`
	// MemoryBytes is the agent's heap in use.
	MemoryBytes uint64 `json:"memoryBytes"`
	// NetNS is the network namespace the dataplane enforces in; absent
	// when it enforces in none (the userspace dataplane). Workloads must
	// be attached in this namespace: the agent refuses registrations from
	// callers in another, and the CNI plugin checks it in ADD, CHECK and
	// STATUS.
	NetNS *NetNS `json:"netns,omitempty"`
}

// NetNS identifies a network namespace: the device and inode numbers of
// its nsfs file, as `stat -L /proc/PID/ns/net` shows them.
type NetNS struct {
	Dev uint64 `json:"dev"`
	Ino uint64 `json:"ino"`
}

// Counter is packets and bytes.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Counters answers GET /v1/counters.
type Counters struct {
	Rules   map[string]Counter `json:"rules"` // by rule id
	Walls   map[string]Counter `json:"walls,omitempty"`
	Spoofed Counter            `json:"spoofed"`
	// Escalations are the escalate path's counts, on a managed agent
	// whose dataplane queues escalations (nil otherwise).
	Escalations *EscalationCounters `json:"escalations,omitempty"`
}
