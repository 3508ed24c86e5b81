package k8s

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// checker collects the problems of one object. prefix is the field path of
// the object inside its document ("" at the top, "items[2]" in a List).
type checker struct {
	prefix string
	errs   source.Errors
}

func (c *checker) add(pos source.Pos, path, format string, args ...any) {
	path = joinPath(c.prefix, path)
	c.errs.Add(pos, path, format, args...)
}

// The upstream validation patterns (k8s.io/apimachinery/pkg/util/validation).
var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	qualifiedName    = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	ianaSvcName      = regexp.MustCompile(`^[-a-z0-9]+$`)
	ianaHasLetter    = regexp.MustCompile(`[a-z]`)
)

// checkSubdomain checks an object name (a DNS-1123 subdomain).
func (c *checker) checkSubdomain(pos source.Pos, path, name string) {
	switch {
	case name == "":
		c.add(pos, path, "name is required")
	case len(name) > 253 || !dns1123Subdomain.MatchString(name):
		c.add(pos, path, "invalid name %q: a lowercase RFC 1123 subdomain is required (at most 253 of a-z, 0-9, '-' and '.', starting and ending with a letter or digit, e.g. example.com)", name)
	}
}

// checkLabel checks a namespace name (a DNS-1123 label).
func (c *checker) checkLabel(pos source.Pos, path, name string) {
	switch {
	case name == "":
		c.add(pos, path, "name is required")
	case len(name) > 63 || !dns1123Label.MatchString(name):
		c.add(pos, path, "invalid name %q: a lowercase RFC 1123 label is required (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit, e.g. my-name)", name)
	}
}

func labelKeyProblem(k string) string {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if prefix == "" || len(prefix) > 253 || !dns1123Subdomain.MatchString(prefix) {
			return "its prefix must be a lowercase DNS subdomain (e.g. example.com/name)"
		}
		name = rest
	}
	if name == "" || len(name) > 63 || !qualifiedName.MatchString(name) {
		return "a label key is an optional DNS subdomain prefix and '/', then at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit (e.g. app or example.com/app)"
	}
	return ""
}

func labelValueOK(v string) bool {
	return v == "" || len(v) <= 63 && qualifiedName.MatchString(v)
}

const labelValueRule = "a label value is empty or at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"

// checkLabels checks a map of labels (metadata.labels, matchLabels).
func (c *checker) checkLabels(pos source.Pos, path string, labels map[string]string) {
	for _, k := range sortedKeys(labels) {
		if p := labelKeyProblem(k); p != "" {
			c.add(pos, path+"."+k, "invalid label key %q: %s", k, p)
		}
		if v := labels[k]; !labelValueOK(v) {
			c.add(pos, path+"."+k, "invalid label value %q: %s", v, labelValueRule)
		}
	}
}

// ianaSvcNameProblem says what is wrong with a named port (IANA_SVC_NAME,
// RFC 6335 section 5.1), or "".
func ianaSvcNameProblem(s string) string {
	switch {
	case len(s) > 15:
		return "must be no more than 15 characters"
	case !ianaSvcName.MatchString(s):
		return "must contain only lowercase letters, digits and '-'"
	case strings.Contains(s, "--"):
		return "must not contain consecutive hyphens"
	case strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-"):
		return "must not begin or end with a hyphen"
	case !ianaHasLetter.MatchString(s):
		return "must contain at least one letter"
	}
	return ""
}

func (c *checker) checkPortName(pos source.Pos, path, name string) {
	if p := ianaSvcNameProblem(name); p != "" {
		c.add(pos, path, "invalid named port %q: %s (an IANA service name, e.g. http or serve-80-tcp)", name, p)
	}
}

func (c *checker) checkPortNumber(pos source.Pos, path string, n int) bool {
	if n < 1 || n > 65535 {
		c.add(pos, path, "port %d is out of range; valid ports are 1 to 65535", n)
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
	} else if p := labelKeyProblem(r.Key); p != "" {
		c.add(r.Pos, path+".key", "invalid label key %q: %s", r.Key, p)
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
		if !labelValueOK(v) {
			c.add(r.Pos, fmt.Sprintf("%s.values[%d]", path, j), "invalid label value %q: %s", v, labelValueRule)
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
