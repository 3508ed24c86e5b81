package k8s

import (
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
	"go.yaml.in/yaml/v3"
)

// The wire types below mirror the upstream Go types field for field (by
// their json names), so that the strict decoder rejects what the API server
// would not accept as a field. Fields the API server manages, and status,
// are kept as raw nodes and ignored.

// objectMeta is metav1.ObjectMeta.
type objectMeta struct {
	Pos                        source.Pos
	Name                       string            `json:"name"`
	GenerateName               string            `json:"generateName"`
	Namespace                  string            `json:"namespace"`
	Labels                     map[string]string `json:"labels"`
	Annotations                map[string]string `json:"annotations"`
	UID                        *yaml.Node        `json:"uid"`
	ResourceVersion            *yaml.Node        `json:"resourceVersion"`
	Generation                 *yaml.Node        `json:"generation"`
	CreationTimestamp          *yaml.Node        `json:"creationTimestamp"`
	DeletionTimestamp          *yaml.Node        `json:"deletionTimestamp"`
	DeletionGracePeriodSeconds *yaml.Node        `json:"deletionGracePeriodSeconds"`
	SelfLink                   *yaml.Node        `json:"selfLink"`
	OwnerReferences            *yaml.Node        `json:"ownerReferences"`
	Finalizers                 *yaml.Node        `json:"finalizers"`
	ManagedFields              *yaml.Node        `json:"managedFields"`
}

// labelSelector is metav1.LabelSelector.
type labelSelector struct {
	Pos              source.Pos
	MatchLabels      map[string]string     `json:"matchLabels"`
	MatchExpressions []selectorRequirement `json:"matchExpressions"`
}

// selectorRequirement is metav1.LabelSelectorRequirement.
type selectorRequirement struct {
	Pos      source.Pos
	Key      string   `json:"key"`
	Operator string   `json:"operator"`
	Values   []string `json:"values"`
}

// namespace is core/v1 Namespace.
type namespace struct {
	Pos        source.Pos
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       *yaml.Node `json:"spec"`
	Status     *yaml.Node `json:"status"`
}

// list is core/v1 List, as `kubectl get -o yaml` writes it.
type list struct {
	Pos        source.Pos
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   *yaml.Node   `json:"metadata"`
	Items      []*yaml.Node `json:"items"`
}

// networkPolicy is networking.k8s.io/v1 NetworkPolicy.
type networkPolicy struct {
	Pos        source.Pos
	APIVersion string             `json:"apiVersion"`
	Kind       string             `json:"kind"`
	Metadata   objectMeta         `json:"metadata"`
	Spec       *networkPolicySpec `json:"spec"`
	Status     *yaml.Node         `json:"status"`
}

type networkPolicySpec struct {
	Pos         source.Pos
	PodSelector *labelSelector  `json:"podSelector"`
	Ingress     []npIngressRule `json:"ingress"`
	Egress      []npEgressRule  `json:"egress"`
	PolicyTypes []string        `json:"policyTypes"`
}

type npIngressRule struct {
	Pos   source.Pos
	Ports []npPort `json:"ports"`
	From  []npPeer `json:"from"`
}

type npEgressRule struct {
	Pos   source.Pos
	Ports []npPort `json:"ports"`
	To    []npPeer `json:"to"`
}

type npPort struct {
	Pos      source.Pos
	Protocol *string            `json:"protocol"`
	Port     strict.IntOrString `json:"port"`
	EndPort  *int               `json:"endPort"`
}

type npPeer struct {
	Pos               source.Pos
	PodSelector       *labelSelector `json:"podSelector"`
	NamespaceSelector *labelSelector `json:"namespaceSelector"`
	IPBlock           *ipBlock       `json:"ipBlock"`
}

type ipBlock struct {
	Pos    source.Pos
	CIDR   string   `json:"cidr"`
	Except []string `json:"except"`
}

// adminNetworkPolicy is policy.networking.k8s.io/v1alpha1
// AdminNetworkPolicy; baselineAdminNetworkPolicy the same group's
// BaselineAdminNetworkPolicy (no priority, no Pass).
type adminNetworkPolicy struct {
	Pos        source.Pos
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       *anpSpec   `json:"spec"`
	Status     *yaml.Node `json:"status"`
}

type anpSpec struct {
	Pos      source.Pos
	Priority *int          `json:"priority"`
	Subject  *adminSubject `json:"subject"`
	Ingress  []anpIngress  `json:"ingress"`
	Egress   []anpEgress   `json:"egress"`
}

type baselineAdminNetworkPolicy struct {
	Pos        source.Pos
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       *banpSpec  `json:"spec"`
	Status     *yaml.Node `json:"status"`
}

type banpSpec struct {
	Pos     source.Pos
	Subject *adminSubject `json:"subject"`
	Ingress []anpIngress  `json:"ingress"`
	Egress  []anpEgress   `json:"egress"`
}

// adminSubject is AdminNetworkPolicySubject (v1alpha1) and
// ClusterNetworkPolicySubject (v1alpha2): exactly one field.
type adminSubject struct {
	Pos        source.Pos
	Namespaces *nsSelector    `json:"namespaces"`
	Pods       *namespacedPod `json:"pods"`
}

// nsSelector is the metav1.LabelSelector of a `namespaces` subject or peer.
// The other fields are those of NamespacedPeer in network-policy-api v0.1.0
// and v0.1.1 (since removed); they are decoded only to say so clearly.
type nsSelector struct {
	Pos               source.Pos
	MatchLabels       map[string]string     `json:"matchLabels"`
	MatchExpressions  []selectorRequirement `json:"matchExpressions"`
	NamespaceSelector *yaml.Node            `json:"namespaceSelector"`
	SameLabels        *yaml.Node            `json:"sameLabels"`
	NotSameLabels     *yaml.Node            `json:"notSameLabels"`
	Related           *yaml.Node            `json:"related"`
}

type namespacedPod struct {
	Pos               source.Pos
	NamespaceSelector *labelSelector `json:"namespaceSelector"`
	PodSelector       *labelSelector `json:"podSelector"`
}

type anpIngress struct {
	Pos    source.Pos
	Name   string             `json:"name"`
	Action string             `json:"action"`
	From   []adminIngressPeer `json:"from"`
	Ports  *[]anpPort         `json:"ports"`
}

type anpEgress struct {
	Pos    source.Pos
	Name   string      `json:"name"`
	Action string      `json:"action"`
	To     []adminPeer `json:"to"`
	Ports  *[]anpPort  `json:"ports"`
}

// adminIngressPeer is AdminNetworkPolicyIngressPeer and its
// ClusterNetworkPolicy twin: exactly one field.
type adminIngressPeer struct {
	Pos        source.Pos
	Namespaces *nsSelector    `json:"namespaces"`
	Pods       *namespacedPod `json:"pods"`
}

// adminPeer is AdminNetworkPolicyEgressPeer and its BaselineAdminNetworkPolicy
// and ClusterNetworkPolicy twins: exactly one field. (BaselineAdminNetworkPolicy
// has no domainNames; that is checked after decoding.)
type adminPeer struct {
	Pos         source.Pos
	Namespaces  *nsSelector    `json:"namespaces"`
	Pods        *namespacedPod `json:"pods"`
	Nodes       *labelSelector `json:"nodes"`
	Networks    []string       `json:"networks"`
	DomainNames []string       `json:"domainNames"`
}

// anpPort is AdminNetworkPolicyPort: exactly one field.
type anpPort struct {
	Pos        source.Pos
	PortNumber *anpPortNumber `json:"portNumber"`
	NamedPort  *string        `json:"namedPort"`
	PortRange  *anpPortRange  `json:"portRange"`
}

type anpPortNumber struct {
	Pos      source.Pos
	Protocol string `json:"protocol"`
	Port     *int   `json:"port"`
}

type anpPortRange struct {
	Pos      source.Pos
	Protocol string `json:"protocol"`
	Start    *int   `json:"start"`
	End      *int   `json:"end"`
}

// clusterNetworkPolicy is policy.networking.k8s.io/v1alpha2
// ClusterNetworkPolicy.
type clusterNetworkPolicy struct {
	Pos        source.Pos
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       *cnpSpec   `json:"spec"`
	Status     *yaml.Node `json:"status"`
}

type cnpSpec struct {
	Pos      source.Pos
	Tier     string           `json:"tier"`
	Priority *int             `json:"priority"`
	Subject  *adminSubject    `json:"subject"`
	Ingress  []cnpIngressRule `json:"ingress"`
	Egress   []cnpEgressRule  `json:"egress"`
}

type cnpIngressRule struct {
	Pos       source.Pos
	Name      string             `json:"name"`
	Action    string             `json:"action"`
	From      []adminIngressPeer `json:"from"`
	Protocols []cnpProtocol      `json:"protocols"`
}

type cnpEgressRule struct {
	Pos       source.Pos
	Name      string        `json:"name"`
	Action    string        `json:"action"`
	To        []adminPeer   `json:"to"`
	Protocols []cnpProtocol `json:"protocols"`
}

// cnpProtocol is ClusterNetworkPolicyProtocol: exactly one field.
type cnpProtocol struct {
	Pos                  source.Pos
	TCP                  *cnpProtocolPorts `json:"tcp"`
	UDP                  *cnpProtocolPorts `json:"udp"`
	SCTP                 *cnpProtocolPorts `json:"sctp"`
	DestinationNamedPort *string           `json:"destinationNamedPort"`
}

type cnpProtocolPorts struct {
	Pos             source.Pos
	DestinationPort *cnpPort `json:"destinationPort"`
}

// cnpPort is v1alpha2 Port: exactly one of number and range.
type cnpPort struct {
	Pos    source.Pos
	Number *int          `json:"number"`
	Range  *cnpPortRange `json:"range"`
}

type cnpPortRange struct {
	Pos   source.Pos
	Start *int `json:"start"`
	End   *int `json:"end"`
}
