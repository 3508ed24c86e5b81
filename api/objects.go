// Package api holds the wire types of Bulkhead's public objects: the native
// policy language (apiVersion bulkhead.dev/v1) as users write it in YAML or
// JSON. The types are hand-written; docs/policy.md is their reference.
package api

import (
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
	"go.yaml.in/yaml/v3"
)

// Version is the apiVersion of every native object.
const Version = "bulkhead.dev/v1"

// Metadata names an object, as in Kubernetes.
type Metadata struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace"`
	Labels      map[string]string `json:"labels"`
	Annotations map[string]string `json:"annotations"`
	Pos         source.Pos
}

// Object is the envelope every native document has.
type Object struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   Metadata   `json:"metadata"`
	Spec       *yaml.Node `json:"spec"`
	Pos        source.Pos
}

// Selector is a Kubernetes-style label selector.
type Selector struct {
	MatchLabels      map[string]string `json:"matchLabels"`
	MatchExpressions []Requirement     `json:"matchExpressions"`
	Pos              source.Pos
}

// Requirement is one term of matchExpressions.
type Requirement struct {
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values"`
	Pos      source.Pos
}

// CIDR is an address block with exceptions.
type CIDR struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except"`
	Pos    source.Pos
}

// SegmentSpec chooses workloads and addresses.
type SegmentSpec struct {
	Namespaces        []string  `json:"namespaces"`
	NamespaceSelector *Selector `json:"namespaceSelector"`
	Selector          *Selector `json:"selector"`
	CIDRs             []CIDR    `json:"cidrs"`
	Description       string    `json:"description"`
}

// Subject chooses the workloads a policy applies to.
type Subject struct {
	Segment           string    `json:"segment"`
	Namespaces        []string  `json:"namespaces"`
	NamespaceSelector *Selector `json:"namespaceSelector"`
	Selector          *Selector `json:"selector"`
	Pos               source.Pos
}

// Peer is the other end of a connection: exactly one of any, segment, cidr,
// or the workload form (selector, namespaces, namespaceSelector).
type Peer struct {
	Any               bool      `json:"any"`
	Segment           string    `json:"segment"`
	CIDR              string    `json:"cidr"`
	Except            []string  `json:"except"`
	Namespaces        []string  `json:"namespaces"`
	NamespaceSelector *Selector `json:"namespaceSelector"`
	Selector          *Selector `json:"selector"`
	Pos               source.Pos
}

// Service is a protocol with a port, a port range, a named port, or an ICMP
// type and code.
type Service struct {
	Protocol string             `json:"protocol"`
	Port     strict.IntOrString `json:"port"`
	EndPort  int                `json:"endPort"`
	ICMPType *int               `json:"icmpType"`
	ICMPCode *int               `json:"icmpCode"`
	Pos      source.Pos
}

// Rule is one rule of a policy.
type Rule struct {
	Name     string    `json:"name"`
	Action   string    `json:"action"`
	From     []Peer    `json:"from"`
	To       []Peer    `json:"to"`
	Services []Service `json:"services"`
	Log      bool      `json:"log"`
	Pos      source.Pos
}

// PolicySpec is a tiered, ordered rule list.
type PolicySpec struct {
	Tier        string   `json:"tier"`
	Priority    *int     `json:"priority"`
	Mode        string   `json:"mode"`
	AppliesTo   *Subject `json:"appliesTo"`
	Isolate     []string `json:"isolate"`
	Ingress     []Rule   `json:"ingress"`
	Egress      []Rule   `json:"egress"`
	Description string   `json:"description"`
}

// WallSpec names segments that must never reach each other.
type WallSpec struct {
	Segments    []string `json:"segments"`
	Description string   `json:"description"`
}

// Dataset is one member of a conflict class.
type Dataset struct {
	Name    string `json:"name"`
	Segment string `json:"segment"`
	Pos     source.Pos
}

// ConflictClassSpec is a dynamic (Brewer–Nash) wall.
type ConflictClassSpec struct {
	Subjects    string    `json:"subjects"`
	Datasets    []Dataset `json:"datasets"`
	Scope       string    `json:"scope"`
	Window      string    `json:"window,omitempty"` // a Go duration, for scope window and session
	Description string    `json:"description"`
}

// NamedPort is a port a workload declares under a name.
type NamedPort struct {
	Name     string     `json:"name"`
	Port     int        `json:"port"`
	Protocol string     `json:"protocol"`
	Pos      source.Pos `json:"-"`
}

// WorkloadSpec is a workload's addresses and ports.
type WorkloadSpec struct {
	IPs   []string    `json:"ips"`
	Ports []NamedPort `json:"ports"`
	Host  string      `json:"host"`
	Image string      `json:"image"`
}

// Inventory is the file format of `--inventory`: namespaces and workloads.
type Inventory struct {
	Namespaces []InventoryNamespace `json:"namespaces"`
	Workloads  []InventoryWorkload  `json:"workloads"`
}

// InventoryNamespace is a namespace in an inventory file.
type InventoryNamespace struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Pos    source.Pos
}

// InventoryWorkload is a workload in an inventory file.
type InventoryWorkload struct {
	Namespace string            `json:"namespace"`
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels"`
	IPs       []string          `json:"ips"`
	Ports     []NamedPort       `json:"ports"`
	Host      string            `json:"host"`
	Pos       source.Pos
}

// DecisionRuleSpec decides escalated connections: the rules are tried by
// order, and the first whose escalations and condition match decides.
type DecisionRuleSpec struct {
	Order       *int              `json:"order"`
	Escalations *EscalationsMatch `json:"escalations"`
	Condition   string            `json:"condition"`
	Outcome     string            `json:"outcome"`
	HoldTimeout string            `json:"holdTimeout"`
	OnTimeout   string            `json:"onTimeout"`
	Remember    string            `json:"remember"`
	TimeZone    string            `json:"timeZone"`
	Description string            `json:"description"`
}

// EscalationsMatch chooses the escalations a decision rule applies to.
type EscalationsMatch struct {
	Rules           []EscalatingRule `json:"rules"`
	ConflictClasses []string         `json:"conflictClasses"`
	From            *EndpointMatch   `json:"from"`
	To              *EndpointMatch   `json:"to"`
	Pos             source.Pos
}

// EscalatingRule names a policy rule whose action is escalate.
type EscalatingRule struct {
	Namespace string `json:"namespace"`
	Policy    string `json:"policy"`
	Rule      string `json:"rule"`
	Pos       source.Pos
}

// EndpointMatch chooses one end of an escalated connection: workloads by
// namespace and label, addresses by CIDR.
type EndpointMatch struct {
	Namespaces        []string  `json:"namespaces"`
	NamespaceSelector *Selector `json:"namespaceSelector"`
	Selector          *Selector `json:"selector"`
	CIDRs             []CIDR    `json:"cidrs"`
	Pos               source.Pos
}
