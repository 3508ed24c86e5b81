// Package k8s reads Kubernetes network policy objects exactly as upstream
// defines them — v1 Namespace, networking.k8s.io/v1 NetworkPolicy,
// policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and
// BaselineAdminNetworkPolicy, and policy.networking.k8s.io/v1alpha2
// ClusterNetworkPolicy — validates them as the API server would, and
// converts them to Bulkhead's native model with the upstream semantics:
//
//   - AdminNetworkPolicy and ClusterNetworkPolicy of tier Admin go to the
//     environment tier, ordered by spec.priority; Pass skips to the next tier.
//   - NetworkPolicy goes to the application tier: its rules all allow, and a
//     pod it selects is isolated in each direction of its policyTypes, so
//     what no NetworkPolicy allows is denied at the end of that tier.
//   - BaselineAdminNetworkPolicy and ClusterNetworkPolicy of tier Baseline
//     go to the baseline tier.
//
// It imports nothing from Kubernetes: the wire types are written by hand and
// decoded strictly.
package k8s

import (
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
	"go.yaml.in/yaml/v3"
)

// The API versions this package reads.
const (
	coreV1        = "v1"
	networkingV1  = "networking.k8s.io/v1"
	policyV1alpha = "policy.networking.k8s.io/v1alpha1"
	policyV1alph2 = "policy.networking.k8s.io/v1alpha2"
)

// The kinds, as Policy.Kind records them.
const (
	KindNamespace                  = "Namespace"
	KindNetworkPolicy              = "NetworkPolicy"
	KindAdminNetworkPolicy         = "AdminNetworkPolicy"
	KindBaselineAdminNetworkPolicy = "BaselineAdminNetworkPolicy"
	KindClusterNetworkPolicy       = "ClusterNetworkPolicy"
	kindList                       = "List"
)

var handled = map[[2]string]bool{
	{coreV1, KindNamespace}:                         true,
	{coreV1, kindList}:                              true,
	{networkingV1, KindNetworkPolicy}:               true,
	{policyV1alpha, KindAdminNetworkPolicy}:         true,
	{policyV1alpha, KindBaselineAdminNetworkPolicy}: true,
	{policyV1alph2, KindClusterNetworkPolicy}:       true,
}

// Handles reports whether Decode reads objects of this apiVersion and kind.
// A v1 List (what `kubectl get -o yaml` writes) is read when its items are.
func Handles(apiVersion, kind string) bool { return handled[[2]string{apiVersion, kind}] }

// Decode reads one object (doc is its whole mapping, with apiVersion, kind
// and metadata) of a kind that Handles accepts, validates it as the API
// server would and converts it. It reports every problem, each with its
// position in file and its field path; the set is nil when there is any.
func Decode(file string, doc *yaml.Node, apiVersion, kind string) (*policy.Set, source.Errors) {
	set, _, errs := DecodeWire(file, doc, apiVersion, kind)
	return set, errs
}

// DecodeWire is Decode that also returns the object as its wire type
// read it (nil for a List): what strict.Encode writes as its canonical
// form.
func DecodeWire(file string, doc *yaml.Node, apiVersion, kind string) (*policy.Set, any, source.Errors) {
	if doc != nil && doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	c := &checker{}
	set := &policy.Set{}
	c.object(file, doc, apiVersion, kind, set)
	if len(c.errs) > 0 {
		return nil, nil, c.errs
	}
	return set, c.wire, nil
}

func (c *checker) object(file string, doc *yaml.Node, apiVersion, kind string, set *policy.Set) {
	if doc == nil {
		c.errs.Add(source.Pos{File: file}, c.prefix, "empty document")
		return
	}
	decode := func(out any) bool {
		errs := strict.Decode(file, doc, c.prefix, out)
		c.errs = append(c.errs, errs...)
		c.wire = out
		return len(errs) == 0
	}
	switch [2]string{apiVersion, kind} {
	case [2]string{coreV1, KindNamespace}:
		var o namespace
		if decode(&o) {
			set.Namespaces = append(set.Namespaces, c.namespace(&o))
		}
	case [2]string{coreV1, kindList}:
		var o list
		if decode(&o) {
			c.list(file, &o, set)
		}
		c.wire = nil
	case [2]string{networkingV1, KindNetworkPolicy}:
		var o networkPolicy
		if decode(&o) {
			set.Policies = append(set.Policies, c.networkPolicy(&o))
		}
	case [2]string{policyV1alpha, KindAdminNetworkPolicy}:
		var o adminNetworkPolicy
		if decode(&o) {
			set.Policies = append(set.Policies, c.adminNetworkPolicy(&o))
		}
	case [2]string{policyV1alpha, KindBaselineAdminNetworkPolicy}:
		var o baselineAdminNetworkPolicy
		if decode(&o) {
			set.Policies = append(set.Policies, c.baselineAdminNetworkPolicy(&o))
		}
	case [2]string{policyV1alph2, KindClusterNetworkPolicy}:
		var o clusterNetworkPolicy
		if decode(&o) {
			set.Policies = append(set.Policies, c.clusterNetworkPolicy(&o))
		}
	default:
		c.errs.Add(source.Pos{File: file, Line: doc.Line, Column: doc.Column}, c.prefix,
			"%s %s is not a Kubernetes object this reader knows; known: v1 Namespace, networking.k8s.io/v1 NetworkPolicy, policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy and BaselineAdminNetworkPolicy, policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy", apiVersion, kind)
	}
}

// list reads the items of a v1 List, each by its own apiVersion and kind.
func (c *checker) list(file string, l *list, set *policy.Set) {
	outer := c.prefix
	defer func() { c.prefix = outer }()
	for i, item := range l.Items {
		c.prefix = joinPath(outer, fmt.Sprintf("items[%d]", i))
		if item == nil {
			c.add(l.Pos, "", "an item must be an object with apiVersion and kind, found null")
			continue
		}
		apiVersion, kind := typeOf(item)
		if kind == kindList {
			c.add(source.Pos{File: file, Line: item.Line, Column: item.Column}, "kind", "a List may not contain a List")
			continue
		}
		c.object(file, item, apiVersion, kind, set)
	}
}

func typeOf(n *yaml.Node) (apiVersion, kind string) {
	if n.Kind != yaml.MappingNode {
		return "", ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "apiVersion":
			apiVersion = n.Content[i+1].Value
		case "kind":
			kind = n.Content[i+1].Value
		}
	}
	return apiVersion, kind
}

func joinPath(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "." + b
}

// namespace converts a Namespace. Kubernetes labels every namespace with
// kubernetes.io/metadata.name=<name> (and overwrites any other value), and
// policies select on it.
func (c *checker) namespace(o *namespace) *policy.Namespace {
	metaPos(&o.Metadata, o.Pos)
	c.checkLabel(o.Metadata.Pos, "metadata.name", o.Metadata.Name)
	c.checkLabels(o.Metadata.Pos, "metadata.labels", o.Metadata.Labels)
	labels := make(map[string]string, len(o.Metadata.Labels)+1)
	for k, v := range o.Metadata.Labels {
		labels[k] = v
	}
	labels[policy.MetadataNameLabel] = o.Metadata.Name
	return &policy.Namespace{Name: o.Metadata.Name, Labels: labels, Pos: o.Pos}
}

// meta checks the metadata every policy kind shares: a name that is a DNS
// subdomain, and valid labels.
func (c *checker) meta(m *objectMeta, objPos source.Pos) {
	metaPos(m, objPos)
	c.checkSubdomain(m.Pos, "metadata.name", m.Name)
	c.checkLabels(m.Pos, "metadata.labels", m.Labels)
}

// metaPos gives a missing metadata the position of its object, so that
// errors about it have one.
func metaPos(m *objectMeta, objPos source.Pos) {
	if m.Pos == (source.Pos{}) {
		m.Pos = objPos
	}
}
