package agent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// document is one input file as a client sent it. Objects keep a pointer
// to the document they were read from, so that every later error about
// them cites the file, line and column the user wrote, also after a
// restart: the state dir stores documents whole.
type document struct {
	name, data string
	seq        int64 // orders documents in the state file: first applied first
}

// object is one stored object: its name, the model object it decoded to
// (a Set holding exactly one object) and its canonical form, which both
// `get` prints and apply compares to tell an update from no change.
type object struct {
	ref   api.ObjectRef
	key   string // refKey(ref), the sort key
	doc   *document
	set   *policy.Set
	value map[string]any // the document as written, as JSON values
	canon []byte         // value as JSON, map keys sorted
}

// refKey orders refs: kind, namespace, name.
func refKey(r api.ObjectRef) string { return r.Kind + "\x00" + r.Namespace + "\x00" + r.Name }

func refString(r api.ObjectRef) string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}

// parseDocument reads every object of one document with internal/load, the
// same reader `bulkhead check` uses, and pairs each model object with the
// YAML node it came from (by position) for its canonical form.
func parseDocument(d *document) ([]*object, source.Errors) {
	set, errs := load.Bytes(d.name, []byte(d.data))
	if len(errs) > 0 {
		return nil, errs
	}
	nodes, err := objectNodes([]byte(d.data))
	if err != nil {
		return nil, source.Errors{{Pos: source.Pos{File: d.name}, Msg: err.Error()}}
	}
	var out []*object
	seen := map[api.ObjectRef]source.Pos{}
	for _, m := range split(set) {
		if first, dup := seen[m.ref]; dup {
			errs.Add(m.pos, "metadata.name", "%s is given twice (first at %s); give each object once", refString(m.ref), first)
			continue
		}
		seen[m.ref] = m.pos
		n, ok := nodes[[2]int{m.pos.Line, m.pos.Column}]
		if !ok {
			errs.Add(m.pos, "", "agent: internal error: no document at the position of %s", refString(m.ref))
			continue
		}
		var v map[string]any
		if err := n.Decode(&v); err != nil {
			errs.Add(m.pos, "", "agent: %s: %v", refString(m.ref), err)
			continue
		}
		canon, err := json.Marshal(v)
		if err != nil {
			errs.Add(m.pos, "", "%s cannot be written as JSON: %v", refString(m.ref), err)
			continue
		}
		out = append(out, &object{ref: m.ref, key: refKey(m.ref), doc: d, set: m.set, value: jsonValue(canon), canon: canon})
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// jsonValue re-reads canonical JSON, so that values print as JSON types
// (YAML timestamps and the like become strings).
func jsonValue(canon []byte) map[string]any {
	var v map[string]any
	if err := json.Unmarshal(canon, &v); err != nil {
		panic("agent: canonical JSON does not read back: " + err.Error())
	}
	return v
}

// objectNodes indexes the object mappings of a YAML stream by line and
// column: each document, and each item of a List.
func objectNodes(data []byte) (map[[2]int]*yaml.Node, error) {
	out := map[[2]int]*yaml.Node{}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for range len(data) + 1 {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("syntax error: %w", err)
		}
		if len(n.Content) == 0 {
			continue
		}
		doc := n.Content[0]
		out[[2]int{doc.Line, doc.Column}] = doc
		if items := mapValue(doc, "items"); items != nil && items.Kind == yaml.SequenceNode {
			for _, it := range items.Content {
				out[[2]int{it.Line, it.Column}] = it
			}
		}
	}
	return nil, errors.New("the YAML stream does not end")
}

func mapValue(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

type modelObject struct {
	ref api.ObjectRef
	pos source.Pos
	set *policy.Set
}

// split cuts a set into one-object sets, each with the name the agent
// stores it under. A v1 Namespace and a native Namespace are the same
// object: the one applied last wins.
func split(s *policy.Set) []modelObject {
	var out []modelObject
	for _, o := range s.Namespaces {
		out = append(out, modelObject{api.ObjectRef{Kind: "Namespace", Name: o.Name}, o.Pos, &policy.Set{Namespaces: []*policy.Namespace{o}}})
	}
	for _, o := range s.Segments {
		out = append(out, modelObject{api.ObjectRef{Kind: "Segment", Name: o.Name}, o.Pos, &policy.Set{Segments: []*policy.Segment{o}}})
	}
	for _, o := range s.Policies {
		out = append(out, modelObject{api.ObjectRef{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name}, o.Pos, &policy.Set{Policies: []*policy.Policy{o}}})
	}
	for _, o := range s.Walls {
		out = append(out, modelObject{api.ObjectRef{Kind: "Wall", Name: o.Name}, o.Pos, &policy.Set{Walls: []*policy.Wall{o}}})
	}
	for _, o := range s.ConflictClasses {
		out = append(out, modelObject{api.ObjectRef{Kind: "ConflictClass", Name: o.Name}, o.Pos, &policy.Set{ConflictClasses: []*policy.ConflictClass{o}}})
	}
	for _, o := range s.Workloads {
		out = append(out, modelObject{api.ObjectRef{Kind: "Workload", Namespace: o.Namespace, Name: o.Name}, o.Pos, &policy.Set{Workloads: []*policy.Workload{o}}})
	}
	return out
}

// objectSet merges the objects, in the order given, into the policy set
// they make.
func objectSet(objs []*object) *policy.Set {
	set := &policy.Set{}
	for _, o := range objs {
		set.Merge(o.set)
	}
	return set
}

func sortedObjects(objs map[api.ObjectRef]*object) []*object {
	out := make([]*object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// maxPatch is the largest change merged into the sorted lists in force;
// a larger one sorts the whole set again.
const maxPatch = 64

// changedList is the sorted list of next, the object set a change made
// of the one whose sorted list is prev: a copy of prev with the change
// merged in, without going through every object.
func changedList(prev []*object, next map[api.ObjectRef]*object, res api.ApplyResult) []*object {
	if len(res.Created)+len(res.Updated)+len(res.Deleted) > maxPatch {
		return sortedObjects(next)
	}
	var upserted []*object
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			upserted = append(upserted, next[ref])
		}
	}
	return patchSorted(prev, func(o *object) api.ObjectRef { return o.ref }, res.Deleted, upserted)
}

// changedSet is the policy set of the objects in nextList, for a change
// of policies alone to the objects whose set is prev: it shares all but
// the list of policies with prev, and that list is patched, not rebuilt.
func changedSet(prev *policy.Set, next map[api.ObjectRef]*object, nextList []*object, res api.ApplyResult) *policy.Set {
	n := len(res.Created) + len(res.Updated) + len(res.Deleted)
	if n > maxPatch || !policiesOnly(res) {
		return objectSet(nextList)
	}
	var upserted []*policy.Policy
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			upserted = append(upserted, next[ref].set.Policies[0])
		}
	}
	set := *prev
	set.Policies = patchSorted(prev.Policies, policyRef, res.Deleted, upserted)
	return &set
}

func policyRef(p *policy.Policy) api.ObjectRef {
	return api.ObjectRef{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name}
}

// policiesOnly says whether a change creates, updates or deletes policies
// and nothing else.
func policiesOnly(res api.ApplyResult) bool {
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated, res.Deleted} {
		for _, ref := range refs {
			if !slices.Contains(policyKinds, ref.Kind) {
				return false
			}
		}
	}
	return true
}

// patchSorted returns a copy of list, sorted by the refs of its elements
// in refKey order, without the deleted refs and with each upserted
// element in the place of the one with its ref, or inserted in order.
func patchSorted[T any](list []T, ref func(T) api.ObjectRef, deleted []api.ObjectRef, upserted []T) []T {
	out := make([]T, len(list), len(list)+len(upserted))
	copy(out, list)
	find := func(r api.ObjectRef) (int, bool) {
		return slices.BinarySearchFunc(out, r, func(e T, r api.ObjectRef) int { return compareRefs(ref(e), r) })
	}
	for _, r := range deleted {
		if i, ok := find(r); ok {
			out = slices.Delete(out, i, i+1)
		}
	}
	for _, e := range upserted {
		if i, ok := find(ref(e)); ok {
			out[i] = e
		} else {
			out = slices.Insert(out, i, e)
		}
	}
	return out
}

// compareRefs orders refs as their refKeys sort, without building them.
func compareRefs(a, b api.ObjectRef) int {
	return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

func sortRefs(refs []api.ObjectRef) {
	sort.Slice(refs, func(i, j int) bool { return refKey(refs[i]) < refKey(refs[j]) })
}

// policyKinds are the kinds a policy may be written as.
var policyKinds = []string{"Policy", "NetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"}

var kindAliases = map[string][]string{
	"policy": policyKinds, "policies": policyKinds, "pol": policyKinds,
	"networkpolicy": {"NetworkPolicy"}, "networkpolicies": {"NetworkPolicy"}, "netpol": {"NetworkPolicy"},
	"adminnetworkpolicy": {"AdminNetworkPolicy"}, "adminnetworkpolicies": {"AdminNetworkPolicy"}, "anp": {"AdminNetworkPolicy"},
	"baselineadminnetworkpolicy": {"BaselineAdminNetworkPolicy"}, "baselineadminnetworkpolicies": {"BaselineAdminNetworkPolicy"}, "banp": {"BaselineAdminNetworkPolicy"},
	"clusternetworkpolicy": {"ClusterNetworkPolicy"}, "clusternetworkpolicies": {"ClusterNetworkPolicy"}, "cnp": {"ClusterNetworkPolicy"},
	"namespace": {"Namespace"}, "namespaces": {"Namespace"}, "ns": {"Namespace"},
	"segment": {"Segment"}, "segments": {"Segment"}, "seg": {"Segment"},
	"wall": {"Wall"}, "walls": {"Wall"},
	"conflictclass": {"ConflictClass"}, "conflictclasses": {"ConflictClass"}, "cc": {"ConflictClass"},
	"workload": {"Workload"}, "workloads": {"Workload"}, "wl": {"Workload"},
}

// ResolveKind maps what a user types after `bulkhead get` (a kind in any
// case, its plural, or a short name; "policies" is every kind of policy)
// to the kinds it means.
func ResolveKind(s string) ([]string, error) {
	if kinds, ok := kindAliases[strings.ToLower(s)]; ok {
		return kinds, nil
	}
	return nil, fmt.Errorf("agent: unknown kind %q; valid: policies, networkpolicies, adminnetworkpolicies, baselineadminnetworkpolicies, clusternetworkpolicies, namespaces, segments, walls, conflictclasses, workloads", s)
}
