package objects

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects/k8s"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"github.com/bulkhead-dev/bulkhead/internal/strict"
	"go.yaml.in/yaml/v3"
)

// Object is one object as Bulkhead keeps it. Canon is its canonical form
// — JSON written from the values the decoder read and the validator
// checked, so that it decodes to the same model — and it is what the
// store keeps, the feed sends, `get` prints and Hash names. Set is the
// model: exactly one namespace, segment, policy, wall, conflict class,
// decision rule or workload.
type Object struct {
	Ref   api.ObjectRef
	Pos   source.Pos // where it was written; zero for a stored object
	Set   *policy.Set
	Canon []byte
	Hash  string // hex SHA-256 of Canon
}

// Read reads every object of a document: a YAML stream or JSON value,
// native and Kubernetes objects mixed, Lists read as their items. It
// reports every problem, each with file:line:col and field path, and
// returns no object when there is any; an object given twice is one.
func Read(file string, data []byte) ([]*Object, source.Errors) {
	if objs, errs, ok := readParallel(file, data); ok {
		return objs, errs
	}
	return readSequential(file, data)
}

// readSequential reads the documents of a stream one after the other.
func readSequential(file string, data []byte) ([]*Object, source.Errors) {
	nodes, errs := Split(file, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return merge([][]decoded{decodeAll(file, nodes)})
}

// decodeAll decodes each object mapping of nodes.
func decodeAll(file string, nodes []*yaml.Node) []decoded {
	out := make([]decoded, len(nodes))
	for i, n := range nodes {
		o, errs := Decode(file, n)
		out[i] = decoded{o: o, errs: errs}
	}
	return out
}

// merge gathers the objects and errors of runs of decoded mappings, in
// their order, and refuses an object given twice.
func merge(runs [][]decoded) ([]*Object, source.Errors) {
	var (
		out  []*Object
		errs source.Errors
	)
	seen := map[api.ObjectRef]source.Pos{}
	for _, run := range runs {
		for _, d := range run {
			errs = append(errs, d.errs...)
			o := d.o
			if o == nil {
				continue
			}
			if first, dup := seen[o.Ref]; dup {
				errs.Add(o.Pos, "metadata.name", "%s is given twice (first at %s); give each object once", String(o.Ref), first)
				continue
			}
			seen[o.Ref] = o.Pos
			out = append(out, o)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

// Decode reads one object mapping.
func Decode(file string, n *yaml.Node) (*Object, source.Errors) {
	pos := nodePos(file, n)
	if n.Kind != yaml.MappingNode {
		return nil, source.Errors{{Pos: pos, Msg: "expected an object with apiVersion and kind"}}
	}
	apiVersion, kind := scalar(n, "apiVersion"), scalar(n, "kind")
	var (
		set  *policy.Set
		wire any
		errs source.Errors
	)
	switch k, ok := Lookup(kind); {
	case apiVersion == "" || kind == "":
		return nil, source.Errors{{Pos: pos, Msg: "every object needs apiVersion and kind; native objects use apiVersion " + Version}}
	case !ok || !slices.Contains(k.APIVersions, apiVersion):
		return nil, source.Errors{{Pos: pos, Path: "kind", Msg: fmt.Sprintf("unsupported object %s %s; valid: %s", apiVersion, kind, supported())}}
	case apiVersion == Version:
		set, wire, errs = decodeNative(file, n)
	default:
		set, wire, errs = k8s.DecodeWire(file, n, apiVersion, kind)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return newObject(pos, set, wire)
}

func newObject(pos source.Pos, set *policy.Set, wire any) (*Object, source.Errors) {
	ref, ok := refOf(set)
	if !ok || wire == nil {
		return nil, source.Errors{{Pos: pos, Msg: "objects: internal error: a document did not decode to one object"}}
	}
	canon, err := strict.Encode(wire)
	if err != nil {
		return nil, source.Errors{{Pos: pos, Msg: "objects: internal error: " + err.Error()}}
	}
	sum := sha256.Sum256(canon)
	return &Object{Ref: ref, Pos: pos, Set: set, Canon: canon, Hash: hex.EncodeToString(sum[:])}, nil
}

// refOf names the one object of a set.
func refOf(s *policy.Set) (api.ObjectRef, bool) {
	var refs []api.ObjectRef
	for _, o := range s.Namespaces {
		refs = append(refs, api.ObjectRef{Kind: "Namespace", Name: o.Name})
	}
	for _, o := range s.Segments {
		refs = append(refs, api.ObjectRef{Kind: "Segment", Name: o.Name})
	}
	for _, o := range s.Policies {
		refs = append(refs, api.ObjectRef{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name})
	}
	for _, o := range s.Walls {
		refs = append(refs, api.ObjectRef{Kind: "Wall", Name: o.Name})
	}
	for _, o := range s.ConflictClasses {
		refs = append(refs, api.ObjectRef{Kind: "ConflictClass", Name: o.Name})
	}
	for _, o := range s.DecisionRules {
		refs = append(refs, api.ObjectRef{Kind: "DecisionRule", Name: o.Name})
	}
	for _, o := range s.Workloads {
		refs = append(refs, api.ObjectRef{Kind: "Workload", Namespace: o.Namespace, Name: o.Name})
	}
	if len(refs) != 1 {
		return api.ObjectRef{}, false
	}
	return refs[0], true
}

// Stored decodes an object from its canonical form, as the store keeps it
// and the feed sends it — JSON, read without a YAML parser by the same
// strict decoder and validator as a document — and checks that it is the
// object ref names. Errors name the object, since stored objects have no
// file.
func Stored(ref api.ObjectRef, canon []byte) (*Object, error) {
	file := "stored " + String(ref)
	n, err := jsonNodes(canon)
	if err != nil {
		return nil, fmt.Errorf("objects: %s: %w", file, err)
	}
	o, errs := Decode(file, n)
	if len(errs) > 0 {
		return nil, fmt.Errorf("objects: %w", errs.Err())
	}
	if o.Ref != ref {
		return nil, fmt.Errorf("objects: %s holds %s", file, String(o.Ref))
	}
	o.Pos = source.Pos{}
	return o, nil
}

// Named is an object's name and where it was written.
type Named struct {
	Ref api.ObjectRef
	Pos source.Pos
}

// Names reads only the kind and name of each object of a document, as a
// delete needs: the rest of each object is not checked. A NetworkPolicy
// without a namespace is in "default", as Kubernetes reads it.
func Names(file string, data []byte) ([]Named, source.Errors) {
	nodes, errs := Split(file, data)
	if len(errs) > 0 {
		return nil, errs
	}
	var out []Named
	for _, n := range nodes {
		pos := nodePos(file, n)
		kind, meta := scalar(n, "kind"), field(n, "metadata")
		ref := api.ObjectRef{Kind: kind, Name: scalar(meta, "name"), Namespace: scalar(meta, "namespace")}
		switch _, ok := Lookup(kind); {
		case !ok:
			errs.Add(pos, "kind", "unsupported kind %q; valid: %s", kind, supported())
			continue
		case ref.Name == "":
			errs.Add(pos, "metadata.name", "every object needs a name")
			continue
		}
		if kind == "NetworkPolicy" && ref.Namespace == "" {
			ref.Namespace = "default"
		}
		out = append(out, Named{Ref: ref, Pos: pos})
	}
	return out, errs
}
