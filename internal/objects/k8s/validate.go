package k8s

import (
	"fmt"
	"net/netip"
	"sort"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// checker collects the problems of one object. prefix is the field path of
// the object inside its document ("" at the top, "items[2]" in a List).
type checker struct {
	prefix string
	errs   source.Errors
	wire   any // the last object decoded, as its wire type
}

func (c *checker) add(pos source.Pos, path, format string, args ...any) {
	path = joinPath(c.prefix, path)
	c.errs.Add(pos, path, format, args...)
}

// checkSubdomain checks an object name (a DNS-1123 subdomain).
func (c *checker) checkSubdomain(pos source.Pos, path, name string) {
	if p := policy.SubdomainProblem(name); p != "" {
		c.add(pos, path, "%s", p)
	}
}

// checkLabel checks a namespace name (a DNS-1123 label).
func (c *checker) checkLabel(pos source.Pos, path, name string) {
	if p := policy.DNSLabelProblem(name); p != "" {
		c.add(pos, path, "%s", p)
	}
}

// checkLabels checks a map of labels (metadata.labels, matchLabels).
func (c *checker) checkLabels(pos source.Pos, path string, labels map[string]string) {
	for _, p := range policy.LabelProblems(labels) {
		lp := path
		if p.Key != "" {
			lp += "." + p.Key
		}
		c.add(pos, lp, "%s", p.Msg)
	}
}

func (c *checker) checkPortName(pos source.Pos, path, name string) {
	if p := policy.PortNameProblem(name); p != "" {
		c.add(pos, path, "%s", p)
	}
}

func (c *checker) checkPortNumber(pos source.Pos, path string, n int) bool {
	if p := policy.PortProblem(n); p != "" {
		c.add(pos, path, "%s", p)
		return false
	}
	return true
}

// protocol parses the Kubernetes spelling of a protocol; "" is TCP.
func (c *checker) protocol(pos source.Pos, path, s string) policy.Protocol {
	switch s {
	case "", "TCP":
		return policy.TCP
	case "UDP":
		return policy.UDP
	case "SCTP":
		return policy.SCTP
	}
	c.add(pos, path, "unsupported protocol %q; valid protocols: TCP, UDP, SCTP", s)
	return policy.TCP
}

// cidr parses a CIDR as net.ParseCIDR does (the address bits past the
// prefix are dropped: 10.0.0.1/24 is 10.0.0.0/24).
func (c *checker) cidr(pos source.Pos, path, s string) (netip.Prefix, bool) {
	p, err := netip.ParsePrefix(s)
	if err != nil || p.Addr().Zone() != "" {
		c.add(pos, path, "invalid CIDR %q; expected an address and a prefix length like 10.0.0.0/8 or fd00::/8", s)
		return netip.Prefix{}, false
	}
	return p.Masked(), true
}

// ipBlock checks and converts a NetworkPolicy ipBlock: each except must be
// a strict subset of cidr, in the same family.
func (c *checker) ipBlock(b *ipBlock, path string) policy.CIDR {
	var out policy.CIDR
	if b.CIDR == "" {
		c.add(b.Pos, path+".cidr", "cidr is required, e.g. 10.0.0.0/8")
		return out
	}
	p, ok := c.cidr(b.Pos, path+".cidr", b.CIDR)
	if !ok {
		return out
	}
	out.Prefix = p
	for i, s := range b.Except {
		ep := fmt.Sprintf("%s.except[%d]", path, i)
		e, ok := c.cidr(b.Pos, ep, s)
		if !ok {
			continue
		}
		if e.Addr().Is4() != p.Addr().Is4() || e.Bits() <= p.Bits() || !p.Contains(e.Addr()) {
			c.add(b.Pos, ep, "except %s must be a strict subset of cidr %s", e, p)
			continue
		}
		out.Except = append(out.Except, e)
	}
	return out
}

// selector checks and converts a label selector; nil stays nil.
func (c *checker) selector(s *labelSelector, path string) *policy.Selector {
	if s == nil {
		return nil
	}
	c.checkLabels(s.Pos, path+".matchLabels", s.MatchLabels)
	out := &policy.Selector{}
	if len(s.MatchLabels) > 0 {
		out.MatchLabels = make(map[string]string, len(s.MatchLabels))
		for k, v := range s.MatchLabels {
			out.MatchLabels[k] = v
		}
	}
	for i, r := range s.MatchExpressions {
		rp := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		c.requirement(r, rp)
		out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{
			Key: r.Key, Operator: r.Operator, Values: append([]string(nil), r.Values...)})
	}
	return out
}

func (c *checker) requirement(r selectorRequirement, path string) {
	if r.Key == "" {
		c.add(r.Pos, path+".key", "key is required")
	} else if p := policy.LabelKeyProblem(r.Key); p != "" {
		c.add(r.Pos, path+".key", "%s", p)
	}
	switch r.Operator {
	case "In", "NotIn":
		if len(r.Values) == 0 {
			c.add(r.Pos, path+".values", "values must be given when operator is %s", r.Operator)
		}
	case "Exists", "DoesNotExist":
		if len(r.Values) > 0 {
			c.add(r.Pos, path+".values", "values must not be given when operator is %s", r.Operator)
		}
	case "":
		c.add(r.Pos, path+".operator", "operator is required; valid operators: In, NotIn, Exists, DoesNotExist")
	default:
		c.add(r.Pos, path+".operator", "unsupported operator %q; valid operators: In, NotIn, Exists, DoesNotExist", r.Operator)
	}
	for j, v := range r.Values {
		if p := policy.LabelValueProblem(v); p != "" {
			c.add(r.Pos, fmt.Sprintf("%s.values[%d]", path, j), "%s", p)
		}
	}
}

// namespaces converts a namespace selector to a NamespaceMatch: the empty
// selector is every namespace.
func namespaces(s *policy.Selector) policy.NamespaceMatch {
	if s == nil || s.Empty() {
		return policy.NamespaceMatch{}
	}
	return policy.NamespaceMatch{Selector: s}
}

// all is the selector that chooses every workload.
func all() *policy.Selector { return &policy.Selector{} }

// nothing is a selector that no labels satisfy ("In" an empty set). It
// stands for peers Bulkhead's inventory has no members of.
func nothing() *policy.Selector {
	return &policy.Selector{MatchExpressions: []policy.Requirement{{Key: "bulkhead.dev/none", Operator: "In"}}}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
