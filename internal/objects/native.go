package objects

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
	"go.yaml.in/yaml/v3"
)

// DefaultPriority is the priority of a native policy that names none.
const DefaultPriority = 1000

// nativeObject is a native object as its canonical form writes it: the
// envelope with the spec its kind decoded.
type nativeObject struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   api.Metadata `json:"metadata"`
	Spec       any          `json:"spec"`
}

// decodeNative reads one native document (apiVersion bulkhead.dev/v1)
// into a Set holding the one object it defines, and returns the object as
// its wire types read it. file names the document in errors.
func decodeNative(file string, doc *yaml.Node) (*policy.Set, *nativeObject, source.Errors) {
	var obj api.Object
	errs := strict.Decode(file, doc, "", &obj)
	if len(errs) > 0 {
		return nil, nil, errs
	}
	c := &converter{file: file}
	wire := &nativeObject{APIVersion: obj.APIVersion, Kind: obj.Kind, Metadata: obj.Metadata}
	m := obj.Metadata
	if m.Pos.Line == 0 {
		m.Pos = obj.Pos // metadata is missing: point at the object
	}
	c.name("metadata.name", m.Pos, m.Name)
	c.labels("metadata.labels", m.Pos, m.Labels)
	set := &policy.Set{}
	spec := obj.Spec
	if spec == nil {
		spec = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", Line: obj.Pos.Line, Column: obj.Pos.Column}
	}
	switch obj.Kind {
	case "Namespace":
		c.noNamespace(m)
		if obj.Spec != nil && len(obj.Spec.Content) > 0 {
			c.errs.Add(c.pos(obj.Spec), "spec", "a Namespace has no spec; put its labels in metadata.labels")
		}
		set.Namespaces = append(set.Namespaces, &policy.Namespace{Name: m.Name, Labels: m.Labels, Pos: obj.Pos})
	case "Segment":
		c.noNamespace(m)
		var s api.SegmentSpec
		c.decode(spec, &s)
		wire.Spec = &s
		set.Segments = append(set.Segments, c.segment(m, s, obj.Pos))
	case "Policy":
		var s api.PolicySpec
		c.decode(spec, &s)
		wire.Spec = &s
		set.Policies = append(set.Policies, c.policyObject(m, s, obj.Pos))
	case "Wall":
		c.noNamespace(m)
		var s api.WallSpec
		c.decode(spec, &s)
		wire.Spec = &s
		set.Walls = append(set.Walls, c.wall(m, s, obj.Pos))
	case "ConflictClass":
		c.noNamespace(m)
		var s api.ConflictClassSpec
		c.decode(spec, &s)
		wire.Spec = &s
		set.ConflictClasses = append(set.ConflictClasses, c.conflictClass(m, s, obj.Pos))
	case "DecisionRule":
		c.noNamespace(m)
		var s api.DecisionRuleSpec
		c.decode(spec, &s)
		wire.Spec = &s
		if len(c.errs) == 0 { // a spec that did not decode has nothing to check
			set.DecisionRules = append(set.DecisionRules, c.decisionRule(m, s, obj.Pos, spec))
		}
	case "Workload":
		var s api.WorkloadSpec
		c.decode(spec, &s)
		wire.Spec = &s
		ns := m.Namespace
		if ns == "" {
			ns = "default"
		}
		set.Workloads = append(set.Workloads, c.workload(api.InventoryWorkload{
			Namespace: ns, Name: m.Name, Labels: m.Labels, IPs: s.IPs, Ports: s.Ports, Host: s.Host, Pos: obj.Pos,
		}, "spec.", false))
	default:
		c.errs.Add(obj.Pos, "kind", "unknown kind %q for apiVersion %s; valid kinds: %s", obj.Kind, api.Version, strings.Join(kindsOf(Version), ", "))
	}
	if len(c.errs) > 0 {
		return nil, nil, c.errs
	}
	return set, wire, nil
}

// ReadInventory reads an inventory file: one or more documents, each
// `namespaces: [{name, labels}]` and `workloads: [{namespace, name,
// labels, ips, ports}]`.
func ReadInventory(file string, data []byte) (*policy.Set, source.Errors) {
	docs, errs := documents(file, data)
	set := &policy.Set{}
	for _, doc := range docs {
		s, derrs := DecodeInventory(file, doc)
		errs = append(errs, derrs...)
		if s != nil {
			set.Merge(s)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return set, nil
}

// CheckWorkload checks a workload and converts it to the model, whichever
// way it is reported — an inventory, an agent's registration, a host's
// report to its manager — with the rules native documents are read by:
// the one validator for workloads. path prefixes the field names in
// errors ("" or "workloads[3]." and the like).
func CheckWorkload(w api.InventoryWorkload, path string) (*policy.Workload, source.Errors) {
	c := &converter{file: w.Pos.File}
	if p := policy.DNSLabelProblem(w.Namespace); p != "" {
		c.errs.Add(w.Pos, path+"namespace", "%s", p)
	}
	out := c.workload(w, path, true)
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return out, nil
}

// DecodeInventory reads an inventory document: `namespaces: [{name,
// labels}]` and `workloads: [{namespace, name, labels, ips, ports}]`.
func DecodeInventory(file string, doc *yaml.Node) (*policy.Set, source.Errors) {
	var inv api.Inventory
	if errs := strict.Decode(file, doc, "", &inv); len(errs) > 0 {
		return nil, errs
	}
	c := &converter{file: file}
	set := &policy.Set{}
	for i, n := range inv.Namespaces {
		p := fmt.Sprintf("namespaces[%d].", i)
		c.name(p+"name", n.Pos, n.Name)
		c.labels(p+"labels", n.Pos, n.Labels)
		set.Namespaces = append(set.Namespaces, &policy.Namespace{Name: n.Name, Labels: n.Labels, Pos: n.Pos})
	}
	for i, w := range inv.Workloads {
		p := fmt.Sprintf("workloads[%d].", i)
		c.name(p+"namespace", w.Pos, w.Namespace)
		set.Workloads = append(set.Workloads, c.workload(w, p, true))
	}
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	return set, nil
}

type converter struct {
	file string
	errs source.Errors
}

func (c *converter) pos(n *yaml.Node) policy.Pos {
	return policy.Pos{File: c.file, Line: n.Line, Column: n.Column}
}

func (c *converter) decode(n *yaml.Node, out any) {
	c.errs = append(c.errs, strict.Decode(c.file, n, "spec", out)...)
}

func (c *converter) name(path string, pos policy.Pos, name string) {
	if p := policy.SubdomainProblem(name); p != "" {
		c.errs.Add(pos, path, "%s", p)
	}
}

func (c *converter) noNamespace(m api.Metadata) {
	if m.Namespace != "" {
		c.errs.Add(m.Pos, "metadata.namespace", "this kind is cluster-wide; remove metadata.namespace")
	}
}

func (c *converter) labels(path string, pos policy.Pos, labels map[string]string) {
	for _, p := range policy.LabelProblems(labels) {
		lp := path
		if p.Key != "" {
			lp += "." + p.Key
		}
		c.errs.Add(pos, lp, "%s", p.Msg)
	}
}

func (c *converter) selector(path string, s *api.Selector) *policy.Selector {
	if s == nil {
		return nil
	}
	c.labels(path+".matchLabels", s.Pos, s.MatchLabels)
	out := &policy.Selector{MatchLabels: s.MatchLabels}
	for i, r := range s.MatchExpressions {
		p := fmt.Sprintf("%s.matchExpressions[%d]", path, i)
		if msg := policy.LabelKeyProblem(r.Key); msg != "" {
			c.errs.Add(r.Pos, p+".key", "%s", msg)
		}
		for j, v := range r.Values {
			if msg := policy.LabelValueProblem(v); msg != "" {
				c.errs.Add(r.Pos, fmt.Sprintf("%s.values[%d]", p, j), "%s", msg)
			}
		}
		switch r.Operator {
		case "In", "NotIn":
			if len(r.Values) == 0 {
				c.errs.Add(r.Pos, p+".values", "operator %s needs at least one value", r.Operator)
			}
		case "Exists", "DoesNotExist":
			if len(r.Values) > 0 {
				c.errs.Add(r.Pos, p+".values", "operator %s takes no values", r.Operator)
			}
		default:
			c.errs.Add(r.Pos, p+".operator", "unknown operator %q; valid: In, NotIn, Exists, DoesNotExist", r.Operator)
		}
		out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{Key: r.Key, Operator: r.Operator, Values: r.Values})
	}
	return out
}

func (c *converter) namespaces(path string, pos policy.Pos, names []string, sel *api.Selector) policy.NamespaceMatch {
	for i, n := range names {
		c.name(fmt.Sprintf("%s.namespaces[%d]", path, i), pos, n)
	}
	return policy.NamespaceMatch{Names: names, Selector: c.selector(path+".namespaceSelector", sel)}
}

// ParsePrefix accepts a CIDR ("10.0.0.0/8") or a bare address (a /32 or /128).
func ParsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return p, err
	}
	if p.Addr().Is4In6() {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

func (c *converter) cidr(path string, pos policy.Pos, cidr string, except []string) (policy.CIDR, bool) {
	p, err := ParsePrefix(cidr)
	if err != nil {
		c.errs.Add(pos, path+".cidr", "invalid CIDR %q: write an address block such as 10.0.0.0/8 or 2001:db8::/32", cidr)
		return policy.CIDR{}, false
	}
	out := policy.CIDR{Prefix: p}
	for i, e := range except {
		ep, err := ParsePrefix(e)
		ip := fmt.Sprintf("%s.except[%d]", path, i)
		switch {
		case err != nil:
			c.errs.Add(pos, ip, "invalid CIDR %q", e)
		case !p.Contains(ep.Addr()) || ep.Bits() < p.Bits():
			c.errs.Add(pos, ip, "exception %s is not inside %s", ep, p)
		default:
			out.Except = append(out.Except, ep)
		}
	}
	return out, true
}

func (c *converter) segment(m api.Metadata, s api.SegmentSpec, pos policy.Pos) *policy.Segment {
	seg := &policy.Segment{Name: m.Name, Pos: pos}
	if s.Selector == nil && len(s.CIDRs) == 0 {
		c.errs.Add(pos, "spec", "a segment needs a selector (workloads), cidrs (addresses), or both")
	}
	if s.Selector == nil && (len(s.Namespaces) > 0 || s.NamespaceSelector != nil) {
		c.errs.Add(pos, "spec.selector", "namespaces and namespaceSelector narrow the selector; add a selector ({} for every workload)")
	}
	seg.Namespaces = c.namespaces("spec", pos, s.Namespaces, s.NamespaceSelector)
	seg.Workloads = c.selector("spec.selector", s.Selector)
	for i, b := range s.CIDRs {
		if cidr, ok := c.cidr(fmt.Sprintf("spec.cidrs[%d]", i), b.Pos, b.CIDR, b.Except); ok {
			seg.CIDRs = append(seg.CIDRs, cidr)
		}
	}
	return seg
}

func (c *converter) wall(m api.Metadata, s api.WallSpec, pos policy.Pos) *policy.Wall {
	seen := map[string]bool{}
	for i, n := range s.Segments {
		if seen[n] {
			c.errs.Add(pos, fmt.Sprintf("spec.segments[%d]", i), "segment %q is named twice", n)
		}
		seen[n] = true
	}
	if len(seen) < 2 {
		c.errs.Add(pos, "spec.segments", "a wall needs at least two different segments")
	}
	return &policy.Wall{Name: m.Name, Segments: s.Segments, Pos: pos}
}

// maxWindow bounds a conflict class's window.
const maxWindow = 366 * 24 * time.Hour

func (c *converter) conflictClass(m api.Metadata, s api.ConflictClassSpec, pos policy.Pos) *policy.ConflictClass {
	cc := &policy.ConflictClass{Name: m.Name, Subjects: s.Subjects, Scope: s.Scope, Pos: pos}
	switch s.Scope {
	case "":
		cc.Scope = "lifecycle"
	case "lifecycle", "permanent", "window", "session":
	default:
		c.errs.Add(pos, "spec.scope", "unknown scope %q; valid: lifecycle, permanent, window, session", s.Scope)
	}
	switch {
	case cc.Scope == "window" && s.Window == "":
		c.errs.Add(pos, "spec.window", "scope window needs the window's length, such as 8h")
	case cc.Scope != "window" && cc.Scope != "session" && s.Window != "":
		c.errs.Add(pos, "spec.window", "a window is for scope window or session, not %s; remove it", cc.Scope)
	default:
		cc.Window = c.duration(pos, "spec.window", s.Window, maxWindow)
	}
	if len(s.Datasets) < 2 {
		c.errs.Add(pos, "spec.datasets", "a conflict class needs at least two datasets")
	}
	seen := map[string]bool{}
	for i, d := range s.Datasets {
		p := fmt.Sprintf("spec.datasets[%d]", i)
		c.name(p+".name", d.Pos, d.Name)
		if seen[d.Name] {
			c.errs.Add(d.Pos, p+".name", "dataset %q is named twice", d.Name)
		}
		seen[d.Name] = true
		if d.Segment == "" {
			c.errs.Add(d.Pos, p+".segment", "a dataset needs the segment that holds it")
		}
		cc.Datasets = append(cc.Datasets, policy.Dataset{Name: d.Name, Segment: d.Segment})
	}
	return cc
}

// workload converts a workload; checkMeta says whether its name and labels
// are still to be checked (a native document's metadata already is).
func (c *converter) workload(w api.InventoryWorkload, path string, checkMeta bool) *policy.Workload {
	if checkMeta {
		c.name(path+"name", w.Pos, w.Name)
		c.labels(path+"labels", w.Pos, w.Labels)
	}
	out := &policy.Workload{Namespace: w.Namespace, Name: w.Name, Labels: w.Labels, Host: w.Host, Pos: w.Pos}
	seen := map[netip.Addr]bool{}
	for i, s := range w.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			c.errs.Add(w.Pos, fmt.Sprintf("%sips[%d]", path, i), "invalid IP address %q: write an address without a zone, such as 10.0.0.1 or fd00::1", s)
			continue
		}
		if a = a.Unmap(); seen[a] {
			c.errs.Add(w.Pos, fmt.Sprintf("%sips[%d]", path, i), "address %s is given twice", a)
			continue
		}
		seen[a] = true
		out.IPs = append(out.IPs, a)
	}
	for i, p := range w.Ports {
		pp := fmt.Sprintf("%sports[%d]", path, i)
		if p.Name != "" { // an unnamed port never matches a named one
			if msg := policy.PortNameProblem(p.Name); msg != "" {
				c.errs.Add(p.Pos, pp+".name", "%s", msg)
			}
		}
		if msg := policy.PortProblem(p.Port); msg != "" {
			c.errs.Add(p.Pos, pp+".port", "%s", msg)
		}
		proto := policy.TCP
		if p.Protocol != "" {
			var ok bool
			if proto, ok = policy.ParseProtocol(p.Protocol); !ok || !proto.HasPorts() {
				c.errs.Add(p.Pos, pp+".protocol", "invalid protocol %q; valid: TCP, UDP, SCTP", p.Protocol)
			}
		}
		out.Ports = append(out.Ports, policy.NamedPort{Name: p.Name, Port: p.Port, Protocol: proto})
	}
	return out
}
