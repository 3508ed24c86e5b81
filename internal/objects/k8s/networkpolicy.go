package k8s

import (
	"fmt"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

// defaultNamespace is where kubectl puts an object whose metadata has no
// namespace (with the default context).
const defaultNamespace = "default"

// networkPolicy converts a NetworkPolicy to an application-tier policy.
//
// Upstream semantics kept here: the policy selects pods of its own namespace
// by spec.podSelector (empty: all of them); it isolates them in each
// direction of policyTypes (absent: Ingress, plus Egress when spec.egress is
// not empty); its rules only allow, and rules of a direction not in
// policyTypes are ignored. An empty list of rules allows nothing; a rule
// with no from/to allows any peer, and with no ports any port.
func (c *checker) networkPolicy(o *networkPolicy) *policy.Policy {
	c.meta(&o.Metadata, o.Pos)
	ns := o.Metadata.Namespace
	if ns == "" {
		ns = defaultNamespace
	}
	c.checkLabel(o.Metadata.Pos, "metadata.namespace", ns)
	spec := o.Spec
	if spec == nil {
		spec = &networkPolicySpec{Pos: o.Pos}
	}
	p := &policy.Policy{
		Name:      o.Metadata.Name,
		Namespace: ns,
		Kind:      KindNetworkPolicy,
		Tier:      policy.Application,
		Mode:      policy.Enforce,
		Pos:       o.Pos,
	}
	workloads := c.selector(spec.PodSelector, "spec.podSelector")
	if workloads == nil {
		workloads = all() // the API server accepts a missing podSelector as {}
	}
	p.Subject = policy.Subject{Namespaces: policy.NamespaceMatch{Names: []string{ns}}, Workloads: workloads}
	types := c.policyTypes(spec)
	p.Isolate = types
	if types[policy.Ingress] {
		for i, r := range spec.Ingress {
			path := fmt.Sprintf("spec.ingress[%d]", i)
			p.Ingress = append(p.Ingress, c.npRule(p, policy.Ingress, i, r.Pos, path, r.From, "from", r.Ports))
		}
	}
	if types[policy.Egress] {
		for i, r := range spec.Egress {
			path := fmt.Sprintf("spec.egress[%d]", i)
			p.Egress = append(p.Egress, c.npRule(p, policy.Egress, i, r.Pos, path, r.To, "to", r.Ports))
		}
	}
	return p
}

// policyTypes validates spec.policyTypes, or infers it as the API server's
// defaulting does.
func (c *checker) policyTypes(spec *networkPolicySpec) [2]bool {
	var types [2]bool
	if spec.PolicyTypes == nil {
		types[policy.Ingress] = true
		types[policy.Egress] = len(spec.Egress) > 0
		return types
	}
	if len(spec.PolicyTypes) > 2 {
		c.add(spec.Pos, "spec.policyTypes", "at most 2 policyTypes may be given (Ingress, Egress), found %d", len(spec.PolicyTypes))
	}
	for i, t := range spec.PolicyTypes {
		path := fmt.Sprintf("spec.policyTypes[%d]", i)
		var d policy.Direction
		switch t {
		case "Ingress":
			d = policy.Ingress
		case "Egress":
			d = policy.Egress
		default:
			c.add(spec.Pos, path, "unsupported policy type %q; valid types: Ingress, Egress", t)
			continue
		}
		if types[d] {
			c.add(spec.Pos, path, "duplicate policy type %q", t)
		}
		types[d] = true
	}
	return types
}

func (c *checker) npRule(p *policy.Policy, d policy.Direction, i int, pos policy.Pos, path string, peers []npPeer, field string, ports []npPort) policy.Rule {
	r := policy.Rule{
		ID:     fmt.Sprintf("%s/%s/%d", p.Key(), d, i),
		Action: policy.Allow,
		Pos:    pos,
	}
	for j, peer := range peers {
		if out, ok := c.npPeer(&peer, p.Namespace, path+"."+field+"["+strconv.Itoa(j)+"]"); ok {
			r.Peers = append(r.Peers, out)
		}
	}
	for j := range ports {
		if s, ok := c.npPort(&ports[j], fmt.Sprintf("%s.ports[%d]", path, j)); ok {
			r.Services = append(r.Services, s)
		}
	}
	return r
}

// npPeer converts a NetworkPolicyPeer. podSelector alone means pods of the
// policy's own namespace; namespaceSelector alone all pods of the chosen
// namespaces; both in one peer the chosen pods of the chosen namespaces.
func (c *checker) npPeer(peer *npPeer, ns, path string) (policy.Peer, bool) {
	n := 0
	for _, set := range []bool{peer.PodSelector != nil, peer.NamespaceSelector != nil, peer.IPBlock != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		c.add(peer.Pos, path, "must specify a peer: podSelector, namespaceSelector (or both), or ipBlock")
		return policy.Peer{}, false
	case peer.IPBlock != nil && n > 1:
		c.add(peer.Pos, path, "may not specify both ipBlock and another peer; write them as two peers")
		return policy.Peer{}, false
	case peer.IPBlock != nil:
		return policy.Peer{CIDRs: []policy.CIDR{c.ipBlock(peer.IPBlock, path+".ipBlock")}}, true
	}
	pods := c.selector(peer.PodSelector, path+".podSelector")
	nsSel := c.selector(peer.NamespaceSelector, path+".namespaceSelector")
	if nsSel == nil {
		return policy.Peer{Namespaces: policy.NamespaceMatch{Names: []string{ns}}, Workloads: pods}, true
	}
	if pods == nil {
		pods = all()
	}
	return policy.Peer{Namespaces: namespaces(nsSel), Workloads: pods}, true
}

// npPort converts a NetworkPolicyPort: no port is every port of the
// protocol; a named port is resolved against the destination workload.
func (c *checker) npPort(port *npPort, path string) (policy.Service, bool) {
	proto := policy.TCP
	if port.Protocol != nil {
		proto = c.protocol(port.Pos, path+".protocol", *port.Protocol)
		if *port.Protocol == "" {
			c.add(port.Pos, path+".protocol", "protocol may not be empty; valid protocols: TCP, UDP, SCTP")
		}
	}
	s := policy.Service{Protocol: proto}
	ok := true
	switch {
	case !port.Port.Exists:
		if port.EndPort != nil {
			c.add(port.Pos, path+".endPort", "endPort may not be given without port")
			ok = false
		}
	case port.Port.IsStr:
		c.checkPortName(port.Pos, path+".port", port.Port.Str)
		s.Name = port.Port.Str
		if port.EndPort != nil {
			c.add(port.Pos, path+".endPort", "endPort may not be given when port is a named port (%q); give a number", port.Port.Str)
			ok = false
		}
	default:
		ok = c.checkPortNumber(port.Pos, path+".port", port.Port.Int)
		s.Port = port.Port.Int
		if port.EndPort != nil {
			ok = c.checkPortNumber(port.Pos, path+".endPort", *port.EndPort) && ok
			if *port.EndPort < port.Port.Int {
				c.add(port.Pos, path+".endPort", "endPort %d must be greater than or equal to port %d", *port.EndPort, port.Port.Int)
				ok = false
			}
			s.EndPort = *port.EndPort
		}
	}
	return s, ok
}
