package k8s

import (
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// adminKind holds what differs between AdminNetworkPolicy,
// BaselineAdminNetworkPolicy and ClusterNetworkPolicy: the action names and
// the limits of the CRD schema.
type adminKind struct {
	kind        string
	actions     map[string]policy.Action
	actionNames string
	maxRules    int // per direction
	maxPeers    int // per rule
	domainNames bool
}

var (
	anpKind = &adminKind{
		kind:        KindAdminNetworkPolicy,
		actions:     map[string]policy.Action{"Allow": policy.Allow, "Deny": policy.Deny, "Pass": policy.Pass},
		actionNames: "Allow, Deny, Pass",
		maxRules:    100, maxPeers: 100, domainNames: true,
	}
	banpKind = &adminKind{
		kind:        KindBaselineAdminNetworkPolicy,
		actions:     map[string]policy.Action{"Allow": policy.Allow, "Deny": policy.Deny},
		actionNames: "Allow, Deny",
		maxRules:    100, maxPeers: 100,
	}
	cnpKind = &adminKind{
		kind:        KindClusterNetworkPolicy,
		actions:     map[string]policy.Action{"Accept": policy.Allow, "Deny": policy.Deny, "Pass": policy.Pass},
		actionNames: "Accept, Deny, Pass",
		maxRules:    25, maxPeers: 25, domainNames: true,
	}
)

// adminRule is one rule of any of the three kinds, its ports already
// converted.
type adminRule struct {
	pos       source.Pos
	path      string // spec.ingress[i]
	name      string
	action    string
	peerField string // from or to
	peers     []adminPeer
	services  []policy.Service
	namedPort bool
}

// adminNetworkPolicy converts an AdminNetworkPolicy to an environment-tier
// policy ordered by spec.priority.
func (c *checker) adminNetworkPolicy(o *adminNetworkPolicy) *policy.Policy {
	c.meta(&o.Metadata, o.Pos)
	p := &policy.Policy{Name: o.Metadata.Name, Kind: KindAdminNetworkPolicy, Tier: policy.Environment, Mode: policy.Enforce, Pos: o.Pos}
	if o.Spec == nil {
		c.add(o.Pos, "spec", "spec is required (priority, subject, ingress, egress)")
		return p
	}
	s := o.Spec
	p.Priority = c.priority(s.Pos, s.Priority)
	p.Subject = c.adminSubject(s.Subject, s.Pos)
	in, out := c.anpRules(s.Ingress, s.Egress)
	p.Ingress = c.adminRules(p, policy.Ingress, anpKind, s.Pos, in)
	p.Egress = c.adminRules(p, policy.Egress, anpKind, s.Pos, out)
	return p
}

// anpRules reads the rules of an AdminNetworkPolicy or a
// BaselineAdminNetworkPolicy (they share the rule types) into adminRules.
func (c *checker) anpRules(ingress []anpIngress, egress []anpEgress) (in, out []adminRule) {
	for i, r := range ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		services, named := c.anpPorts(r.Ports, r.Pos, path+".ports")
		in = append(in, adminRule{r.Pos, path, r.Name, r.Action, "from", ingressPeers(r.From), services, named})
	}
	for i, r := range egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		services, named := c.anpPorts(r.Ports, r.Pos, path+".ports")
		out = append(out, adminRule{r.Pos, path, r.Name, r.Action, "to", r.To, services, named})
	}
	return in, out
}

// baselineAdminNetworkPolicy converts the BaselineAdminNetworkPolicy (there
// is one per cluster, named "default") to a baseline-tier policy.
func (c *checker) baselineAdminNetworkPolicy(o *baselineAdminNetworkPolicy) *policy.Policy {
	c.meta(&o.Metadata, o.Pos)
	if o.Metadata.Name != "" && o.Metadata.Name != "default" {
		c.add(o.Metadata.Pos, "metadata.name", "a BaselineAdminNetworkPolicy must be named \"default\" (only one may exist in a cluster), found %q", o.Metadata.Name)
	}
	p := &policy.Policy{Name: o.Metadata.Name, Kind: KindBaselineAdminNetworkPolicy, Tier: policy.Baseline, Mode: policy.Enforce, Pos: o.Pos}
	if o.Spec == nil {
		c.add(o.Pos, "spec", "spec is required (subject, ingress, egress)")
		return p
	}
	s := o.Spec
	p.Subject = c.adminSubject(s.Subject, s.Pos)
	in, out := c.anpRules(s.Ingress, s.Egress)
	p.Ingress = c.adminRules(p, policy.Ingress, banpKind, s.Pos, in)
	p.Egress = c.adminRules(p, policy.Egress, banpKind, s.Pos, out)
	return p
}

// clusterNetworkPolicy converts a ClusterNetworkPolicy: tier Admin to the
// environment tier, tier Baseline to the baseline tier, by spec.priority.
func (c *checker) clusterNetworkPolicy(o *clusterNetworkPolicy) *policy.Policy {
	c.meta(&o.Metadata, o.Pos)
	p := &policy.Policy{Name: o.Metadata.Name, Kind: KindClusterNetworkPolicy, Mode: policy.Enforce, Pos: o.Pos}
	if o.Spec == nil {
		c.add(o.Pos, "spec", "spec is required (tier, priority, subject, ingress, egress)")
		return p
	}
	s := o.Spec
	switch s.Tier {
	case "Admin":
		p.Tier = policy.Environment
	case "Baseline":
		p.Tier = policy.Baseline
	case "":
		c.add(s.Pos, "spec.tier", "tier is required; valid tiers: Admin, Baseline")
	default:
		c.add(s.Pos, "spec.tier", "unsupported tier %q; valid tiers: Admin, Baseline", s.Tier)
	}
	p.Priority = c.priority(s.Pos, s.Priority)
	p.Subject = c.adminSubject(s.Subject, s.Pos)
	var in, out []adminRule
	for i, r := range s.Ingress {
		path := fmt.Sprintf("spec.ingress[%d]", i)
		services, named := c.cnpProtocols(r.Protocols, r.Pos, path+".protocols")
		in = append(in, adminRule{r.Pos, path, r.Name, r.Action, "from", ingressPeers(r.From), services, named})
	}
	for i, r := range s.Egress {
		path := fmt.Sprintf("spec.egress[%d]", i)
		services, named := c.cnpProtocols(r.Protocols, r.Pos, path+".protocols")
		out = append(out, adminRule{r.Pos, path, r.Name, r.Action, "to", r.To, services, named})
	}
	p.Ingress = c.adminRules(p, policy.Ingress, cnpKind, s.Pos, in)
	p.Egress = c.adminRules(p, policy.Egress, cnpKind, s.Pos, out)
	return p
}

func ingressPeers(in []adminIngressPeer) []adminPeer {
	out := make([]adminPeer, len(in))
	for i, p := range in {
		out[i] = adminPeer{Pos: p.Pos, Namespaces: p.Namespaces, Pods: p.Pods}
	}
	return out
}

func (c *checker) priority(pos source.Pos, p *int) int {
	switch {
	case p == nil:
		c.add(pos, "spec.priority", "priority is required: 0 (first) to 1000 (last)")
		return 0
	case *p < 0 || *p > 1000:
		c.add(pos, "spec.priority", "priority %d is out of range; valid priorities are 0 (first) to 1000 (last)", *p)
	}
	return *p
}

// adminSubject converts a subject: exactly one of namespaces (every pod of
// the chosen namespaces) and pods (the chosen pods of the chosen namespaces).
func (c *checker) adminSubject(s *adminSubject, specPos source.Pos) policy.Subject {
	const path = "spec.subject"
	if s == nil {
		c.add(specPos, path, "subject is required: namespaces or pods")
		return policy.Subject{}
	}
	switch {
	case (s.Namespaces == nil) == (s.Pods == nil):
		c.add(s.Pos, path, "exactly one of namespaces and pods must be given")
		return policy.Subject{}
	case s.Namespaces != nil:
		return policy.Subject{Namespaces: namespaces(c.nsSelector(s.Namespaces, path+".namespaces")), Workloads: all()}
	}
	nsm, pods := c.namespacedPod(s.Pods, path+".pods")
	return policy.Subject{Namespaces: nsm, Workloads: pods}
}

// nsSelector converts the label selector of a `namespaces` field, and
// explains the fields of older releases of the API.
func (c *checker) nsSelector(s *nsSelector, path string) *policy.Selector {
	for _, f := range []struct {
		name string
		set  bool
	}{{"namespaceSelector", s.NamespaceSelector != nil}, {"sameLabels", s.SameLabels != nil}, {"notSameLabels", s.NotSameLabels != nil}, {"related", s.Related != nil}} {
		if f.set {
			c.add(s.Pos, path+"."+f.name, "%s belonged to network-policy-api v0.1.0 and was removed from v1alpha1 in later releases; namespaces is now a plain label selector (matchLabels, matchExpressions)", f.name)
		}
	}
	return c.selector(&labelSelector{Pos: s.Pos, MatchLabels: s.MatchLabels, MatchExpressions: s.MatchExpressions}, path)
}

func (c *checker) namespacedPod(p *namespacedPod, path string) (policy.NamespaceMatch, *policy.Selector) {
	if p.PodSelector == nil {
		c.add(p.Pos, path+".podSelector", "podSelector is required ({} selects every pod)")
	}
	if p.NamespaceSelector == nil {
		c.add(p.Pos, path+".namespaceSelector", "namespaceSelector is required ({} selects every namespace)")
	}
	nsm := namespaces(c.selector(p.NamespaceSelector, path+".namespaceSelector"))
	pods := c.selector(p.PodSelector, path+".podSelector")
	if pods == nil {
		pods = nothing()
	}
	return nsm, pods
}

// adminRules converts the rules of one direction, in order: the first rule
// that matches decides.
func (c *checker) adminRules(p *policy.Policy, d policy.Direction, k *adminKind, specPos source.Pos, rules []adminRule) []policy.Rule {
	if len(rules) > k.maxRules {
		c.add(specPos, "spec."+d.String(), "%d rules is more than the %d a %s may have per direction", len(rules), k.maxRules, k.kind)
	}
	var out []policy.Rule
	for i, r := range rules {
		action, ok := k.actions[r.action]
		switch {
		case r.action == "":
			c.add(r.pos, r.path+".action", "action is required; valid actions: %s", k.actionNames)
		case !ok:
			c.add(r.pos, r.path+".action", "unsupported action %q; valid actions: %s", r.action, k.actionNames)
		}
		if len(r.name) > 100 {
			c.add(r.pos, r.path+".name", "name is %d characters long; at most 100 are allowed", len(r.name))
		}
		rule := policy.Rule{ID: fmt.Sprintf("%s/%s/%d", p.Key(), d, i), Name: r.name, Action: action, Services: r.services, Pos: r.pos}
		switch {
		case len(r.peers) == 0:
			c.add(r.pos, r.path+"."+r.peerField, "%s is required and must list at least one peer", r.peerField)
		case len(r.peers) > k.maxPeers:
			c.add(r.pos, r.path+"."+r.peerField, "%d peers is more than the %d allowed", len(r.peers), k.maxPeers)
		}
		outside := false
		for j := range r.peers {
			peer, ok, ext := c.adminPeer(&r.peers[j], fmt.Sprintf("%s.%s[%d]", r.path, r.peerField, j), k)
			outside = outside || ext
			if ok {
				rule.Peers = append(rule.Peers, peer)
			}
		}
		if outside && r.namedPort {
			c.add(r.pos, r.path, "networks and nodes peers cannot be used with a named port, since they have no named ports")
		}
		out = append(out, rule)
	}
	return out
}

// adminPeer converts one peer. ext reports a peer outside the pod network
// (networks, nodes), which has no named ports.
func (c *checker) adminPeer(p *adminPeer, path string, k *adminKind) (peer policy.Peer, ok, ext bool) {
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"namespaces", p.Namespaces != nil}, {"pods", p.Pods != nil}, {"nodes", p.Nodes != nil}, {"networks", p.Networks != nil}, {"domainNames", p.DomainNames != nil}} {
		if f.set {
			set = append(set, f.name)
		}
	}
	if len(set) != 1 {
		found := "none"
		if len(set) > 0 {
			found = strings.Join(set, ", ")
		}
		c.add(p.Pos, path, "exactly one of namespaces, pods, nodes, networks must be given, found %s", found)
		return policy.Peer{}, false, false
	}
	switch set[0] {
	case "namespaces":
		return policy.Peer{Namespaces: namespaces(c.nsSelector(p.Namespaces, path+".namespaces")), Workloads: all()}, true, false
	case "pods":
		nsm, pods := c.namespacedPod(p.Pods, path+".pods")
		return policy.Peer{Namespaces: nsm, Workloads: pods}, true, false
	case "nodes":
		c.selector(p.Nodes, path+".nodes")
		// Bulkhead's inventory has no nodes, so this peer matches nothing:
		// an Allow to nodes allows nothing, a Deny denies nothing.
		return policy.Peer{Workloads: nothing()}, true, true
	case "networks":
		return c.networks(p, path+".networks"), true, true
	}
	if !k.domainNames {
		c.add(p.Pos, path+".domainNames", "a %s peer has no domainNames; valid peers: namespaces, pods, nodes, networks", k.kind)
	} else {
		c.add(p.Pos, path+".domainNames", "domainNames peers are not supported: Bulkhead enforces on addresses, not DNS names; list the addresses under networks instead")
	}
	return policy.Peer{}, false, true
}

// networks converts a networks peer: 1 to 25 CIDRs, each plainly IPv4 or
// IPv6 (no IPv4 embedded in IPv6).
func (c *checker) networks(p *adminPeer, path string) policy.Peer {
	if len(p.Networks) == 0 || len(p.Networks) > 25 {
		c.add(p.Pos, path, "networks must list 1 to 25 CIDRs, found %d", len(p.Networks))
	}
	var out policy.Peer
	seen := map[string]bool{}
	for i, s := range p.Networks {
		ip := fmt.Sprintf("%s[%d]", path, i)
		if seen[s] {
			c.add(p.Pos, ip, "duplicate CIDR %q", s)
			continue
		}
		seen[s] = true
		if strings.Contains(s, ":") == strings.Contains(s, ".") {
			c.add(p.Pos, ip, "invalid CIDR %q: must be either IPv4 (10.0.0.0/8) or IPv6 (fd00::/8); IPv4 embedded in IPv6 is not supported", s)
			continue
		}
		if prefix, ok := c.cidr(p.Pos, ip, s); ok {
			out.CIDRs = append(out.CIDRs, policy.CIDR{Prefix: prefix})
		}
	}
	if len(out.CIDRs) == 0 {
		out.Workloads = nothing() // an empty CIDRs slice would read as the workload form
	}
	return out
}
