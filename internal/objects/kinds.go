package objects

import (
	"fmt"
	"slices"
	"strings"
)

// Kind describes one kind of object: where it comes from, whether it
// lives in a namespace, and the names a user may call it by.
type Kind struct {
	Name        string
	APIVersions []string // the apiVersions it is written with, native first
	Namespaced  bool
	Policy      bool     // a policy of some tier
	Reported    bool     // reported by agents (workloads), never applied to a manager
	Resource    string   // the plural of API routes and `get`
	Aliases     []string // more names for `get`: singular, short
}

// The one list of kinds. Adding a kind starts here, with its decoder in
// decode.go; everything that lists, names or routes kinds reads this.
var kinds = []Kind{
	{Name: "Namespace", APIVersions: []string{Version, "v1"}, Resource: "namespaces", Aliases: []string{"namespace", "ns"}},
	{Name: "Segment", APIVersions: []string{Version}, Resource: "segments", Aliases: []string{"segment", "seg"}},
	{Name: "Policy", APIVersions: []string{Version}, Namespaced: true, Policy: true, Resource: "policies", Aliases: []string{"policy", "pol"}},
	{Name: "NetworkPolicy", APIVersions: []string{"networking.k8s.io/v1"}, Namespaced: true, Policy: true, Resource: "networkpolicies", Aliases: []string{"networkpolicy", "netpol"}},
	{Name: "AdminNetworkPolicy", APIVersions: []string{"policy.networking.k8s.io/v1alpha1"}, Policy: true, Resource: "adminnetworkpolicies", Aliases: []string{"adminnetworkpolicy", "anp"}},
	{Name: "BaselineAdminNetworkPolicy", APIVersions: []string{"policy.networking.k8s.io/v1alpha1"}, Policy: true, Resource: "baselineadminnetworkpolicies", Aliases: []string{"baselineadminnetworkpolicy", "banp"}},
	{Name: "ClusterNetworkPolicy", APIVersions: []string{"policy.networking.k8s.io/v1alpha2"}, Policy: true, Resource: "clusternetworkpolicies", Aliases: []string{"clusternetworkpolicy", "cnp"}},
	{Name: "Wall", APIVersions: []string{Version}, Resource: "walls", Aliases: []string{"wall"}},
	{Name: "ConflictClass", APIVersions: []string{Version}, Resource: "conflictclasses", Aliases: []string{"conflictclass", "cc"}},
	{Name: "DecisionRule", APIVersions: []string{Version}, Resource: "decisionrules", Aliases: []string{"decisionrule", "dr"}},
	{Name: "Workload", APIVersions: []string{Version}, Namespaced: true, Reported: true, Resource: "workloads", Aliases: []string{"workload", "wl"}},
}

// Version is the apiVersion of native objects.
const Version = "bulkhead.dev/v1"

// Kinds lists every kind, in the order above.
func Kinds() []Kind { return slices.Clone(kinds) }

// Lookup returns the kind named name (exactly as written in `kind:`).
func Lookup(name string) (Kind, bool) {
	for _, k := range kinds {
		if k.Name == name {
			return k, true
		}
	}
	return Kind{}, false
}

// IsPolicy says whether kind is a policy of some tier.
func IsPolicy(kind string) bool {
	k, ok := Lookup(kind)
	return ok && k.Policy
}

// PolicyKinds lists the kinds a policy may be written as.
func PolicyKinds() []string {
	var out []string
	for _, k := range kinds {
		if k.Policy {
			out = append(out, k.Name)
		}
	}
	return out
}

// Applied lists the kinds a manager takes by apply: all but the reported.
func Applied() []string {
	var out []string
	for _, k := range kinds {
		if !k.Reported {
			out = append(out, k.Name)
		}
	}
	return out
}

// Resource is the list route a kind's objects are under: every kind of
// policy is listed under "policies".
func Resource(kind string) string {
	k, ok := Lookup(kind)
	switch {
	case !ok:
		return ""
	case k.Policy:
		return "policies"
	}
	return k.Resource
}

// Resources lists the list routes of the applied kinds, each once.
func Resources() []string {
	var out []string
	for _, k := range kinds {
		if r := Resource(k.Name); !k.Reported && !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// Resolve maps what a user types after `bulkhead get` — a kind in any
// case, its plural, or a short name; "policies" is every kind of policy —
// to the kinds it means.
func Resolve(s string) ([]string, error) {
	s = strings.ToLower(s)
	if s == "policies" || s == "policy" || s == "pol" {
		return PolicyKinds(), nil
	}
	for _, k := range kinds {
		if s == strings.ToLower(k.Name) || s == k.Resource || slices.Contains(k.Aliases, s) {
			return []string{k.Name}, nil
		}
	}
	var valid []string
	for _, k := range kinds {
		valid = append(valid, k.Resource)
	}
	return nil, fmt.Errorf("objects: unknown kind %q; valid: %s", s, strings.Join(valid, ", "))
}

// kindsOf lists the kinds written with apiVersion v.
func kindsOf(v string) []string {
	var out []string
	for _, k := range kinds {
		if slices.Contains(k.APIVersions, v) {
			out = append(out, k.Name)
		}
	}
	return out
}

// supported words the kinds a reader takes, for errors.
func supported() string {
	var b strings.Builder
	byVersion := map[string][]string{}
	var versions []string
	for _, k := range kinds {
		for _, v := range k.APIVersions {
			if _, ok := byVersion[v]; !ok {
				versions = append(versions, v)
			}
			byVersion[v] = append(byVersion[v], k.Name)
		}
	}
	for i, v := range versions {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s %s", v, strings.Join(byVersion[v], ", "))
	}
	return b.String()
}
