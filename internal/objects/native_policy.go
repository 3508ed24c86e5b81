package objects

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
)

func (c *converter) policyObject(m api.Metadata, s api.PolicySpec, pos policy.Pos) *policy.Policy {
	p := &policy.Policy{Name: m.Name, Namespace: m.Namespace, Kind: "Policy", Tier: policy.Application,
		Priority: DefaultPriority, Mode: policy.Enforce, Pos: pos}
	if m.Namespace != "" {
		c.name("metadata.namespace", m.Pos, m.Namespace)
	}
	if s.Tier != "" {
		t, ok := policy.ParseTier(s.Tier)
		if !ok {
			c.errs.Add(pos, "spec.tier", "unknown tier %q; valid, in evaluation order: %s", s.Tier, strings.Join(policy.TierNames(), ", "))
		}
		p.Tier = t
	}
	if s.Priority != nil {
		if *s.Priority < 0 || *s.Priority > 1_000_000 {
			c.errs.Add(pos, "spec.priority", "priority %d is out of range 0-1000000 (lower is consulted first)", *s.Priority)
		}
		p.Priority = *s.Priority
	}
	switch policy.Mode(s.Mode) {
	case "":
	case policy.Enforce, policy.Observe:
		p.Mode = policy.Mode(s.Mode)
	default:
		c.errs.Add(pos, "spec.mode", "unknown mode %q; valid: enforce, observe", s.Mode)
	}
	if s.AppliesTo == nil {
		c.errs.Add(pos, "spec.appliesTo", "say which workloads the policy applies to: a selector ({} for all), namespaces, or a segment")
	} else {
		p.Subject = c.subject(*s.AppliesTo)
	}
	for i, d := range s.Isolate {
		switch d {
		case "ingress":
			p.Isolate[policy.Ingress] = true
		case "egress":
			p.Isolate[policy.Egress] = true
		default:
			c.errs.Add(pos, fmt.Sprintf("spec.isolate[%d]", i), "unknown direction %q; valid: ingress, egress", d)
		}
	}
	p.Ingress = c.rules(p, policy.Ingress, s.Ingress)
	p.Egress = c.rules(p, policy.Egress, s.Egress)
	return p
}

func (c *converter) subject(s api.Subject) policy.Subject {
	if s.Segment != "" {
		if s.Selector != nil || len(s.Namespaces) > 0 || s.NamespaceSelector != nil {
			c.errs.Add(s.Pos, "spec.appliesTo", "give either a segment or a selector with namespaces, not both")
		}
		return policy.Subject{Segment: s.Segment}
	}
	sel := c.selector("spec.appliesTo.selector", s.Selector)
	if sel == nil {
		sel = &policy.Selector{}
	}
	return policy.Subject{Namespaces: c.namespaces("spec.appliesTo", s.Pos, s.Namespaces, s.NamespaceSelector), Workloads: sel}
}

func (c *converter) rules(p *policy.Policy, d policy.Direction, in []api.Rule) []policy.Rule {
	var out []policy.Rule
	for i, r := range in {
		path := "spec." + d.String() + "[" + strconv.Itoa(i) + "]"
		rule := policy.Rule{Name: r.Name, Action: policy.Action(r.Action), Log: r.Log, Pos: r.Pos}
		id := r.Name
		if id == "" {
			id = fmt.Sprint(i)
		}
		rule.ID = p.Key() + "/" + d.String() + "/" + id
		if !rule.Action.Valid() {
			c.errs.Add(r.Pos, path+".action", "unknown action %q; valid: allow, deny, reject, pass, escalate", r.Action)
		}
		peers, wrong := r.From, r.To
		if d == policy.Egress {
			peers, wrong = r.To, r.From
		}
		if len(wrong) > 0 {
			c.errs.Add(r.Pos, path, "an %s rule names its peers in %q, not %q", d, policy.PeerField(d), policy.PeerField(1-d))
		}
		for j, peer := range peers {
			rule.Peers = append(rule.Peers, c.peer(p, path+"."+policy.PeerField(d)+"["+strconv.Itoa(j)+"]", peer))
		}
		for j, svc := range r.Services {
			rule.Services = append(rule.Services, c.service(path+".services["+strconv.Itoa(j)+"]", svc))
		}
		out = append(out, rule)
	}
	return out
}

func (c *converter) peer(p *policy.Policy, path string, in api.Peer) policy.Peer {
	forms := 0
	for _, set := range []bool{in.Any, in.Segment != "", in.CIDR != "",
		in.Selector != nil || len(in.Namespaces) > 0 || in.NamespaceSelector != nil} {
		if set {
			forms++
		}
	}
	if forms != 1 {
		c.errs.Add(in.Pos, path, "a peer is exactly one of: any: true; segment; cidr (with except); selector with namespaces or namespaceSelector")
	}
	if len(in.Except) > 0 && in.CIDR == "" {
		c.errs.Add(in.Pos, path+".except", "except narrows a cidr; add the cidr")
	}
	switch {
	case in.Any:
		return policy.Peer{Any: true}
	case in.Segment != "":
		return policy.Peer{Segment: in.Segment}
	case in.CIDR != "":
		cidr, _ := c.cidr(path, in.Pos, in.CIDR, in.Except)
		return policy.Peer{CIDRs: []policy.CIDR{cidr}}
	}
	ns := c.namespaces(path, in.Pos, in.Namespaces, in.NamespaceSelector)
	if ns.All() && p.Namespace != "" {
		// As in a Kubernetes NetworkPolicy: a selector alone in a namespaced
		// policy means workloads of the policy's own namespace.
		ns.Names = []string{p.Namespace}
	}
	return policy.Peer{Namespaces: ns, Workloads: c.selector(path+".selector", in.Selector)}
}

func (c *converter) service(path string, in api.Service) policy.Service {
	proto, ok := policy.ParseProtocol(in.Protocol)
	if !ok {
		c.errs.Add(in.Pos, path+".protocol", "unknown protocol %q; valid: tcp, udp, sctp, icmp, icmpv6", in.Protocol)
		return policy.Service{}
	}
	out := policy.Service{Protocol: proto}
	if !proto.HasPorts() {
		if in.Port.Exists || in.EndPort != 0 {
			c.errs.Add(in.Pos, path+".port", "%s has no ports; use icmpType and icmpCode", proto)
		}
		if in.ICMPType != nil && (*in.ICMPType < 0 || *in.ICMPType > 255) {
			c.errs.Add(in.Pos, path+".icmpType", "ICMP type %d is out of range 0-255", *in.ICMPType)
		}
		if in.ICMPCode != nil && (*in.ICMPCode < 0 || *in.ICMPCode > 255 || in.ICMPType == nil) {
			c.errs.Add(in.Pos, path+".icmpCode", "an ICMP code is 0-255 and needs icmpType")
		}
		out.Type, out.Code = in.ICMPType, in.ICMPCode
		return out
	}
	if in.ICMPType != nil || in.ICMPCode != nil {
		c.errs.Add(in.Pos, path+".icmpType", "icmpType and icmpCode are for icmp and icmpv6 only")
	}
	switch {
	case in.Port.IsStr:
		if msg := policy.PortNameProblem(in.Port.Str); msg != "" {
			c.errs.Add(in.Pos, path+".port", "%s; a port is a number 1-65535 or a port name", msg)
		}
		if in.EndPort != 0 {
			c.errs.Add(in.Pos, path+".endPort", "endPort needs a numeric port")
		}
		out.Name = in.Port.Str
	case in.Port.Exists:
		if in.Port.Int < 1 || in.Port.Int > 65535 {
			c.errs.Add(in.Pos, path+".port", "port %d is out of range 1-65535", in.Port.Int)
		}
		out.Port = in.Port.Int
		if in.EndPort != 0 {
			if in.EndPort < in.Port.Int || in.EndPort > 65535 {
				c.errs.Add(in.Pos, path+".endPort", "endPort %d must be between port %d and 65535", in.EndPort, in.Port.Int)
			}
			out.EndPort = in.EndPort
		}
	case in.EndPort != 0:
		c.errs.Add(in.Pos, path+".endPort", "endPort needs a port")
	}
	return out
}
