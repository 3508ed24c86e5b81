package manager

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/k8s"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// object is one stored policy object: its name and its native form as
// canonical JSON (sorted keys, no positions), which is what the store
// keeps, the feed sends and GET returns. Hash is the SHA-256 of JSON.
type object struct {
	Ref  api.ObjectRef
	JSON []byte
	Hash string
	pos  source.Pos // where a request wrote it; not stored
}

// refKey names an object uniquely: Kind/namespace/name.
func refKey(r api.ObjectRef) string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

func parseRefKey(k string) (api.ObjectRef, bool) {
	parts := strings.SplitN(k, "/", 3)
	if len(parts) != 3 {
		return api.ObjectRef{}, false
	}
	return api.ObjectRef{Kind: parts[0], Namespace: parts[1], Name: parts[2]}, true
}

// kindResources maps the kinds the manager keeps to the resource names of
// their list routes.
var kindResources = map[string]string{
	"Namespace":                  "namespaces",
	"Segment":                    "segments",
	"Policy":                     "policies",
	"NetworkPolicy":              "policies",
	"AdminNetworkPolicy":         "policies",
	"BaselineAdminNetworkPolicy": "policies",
	"ClusterNetworkPolicy":       "policies",
	"Wall":                       "walls",
	"ConflictClass":              "conflictclasses",
}

// defaultNamespace is where a NetworkPolicy without a namespace lives, as
// internal/k8s reads it.
const defaultNamespace = "default"

// parsedDoc is one request document: its set as load reads it (with the
// positions of the user's file) and its objects.
type parsedDoc struct {
	set     *policy.Set
	objects []object
}

// parseDocument reads one request document: the YAML is parsed once,
// and each object decoded as internal/load decodes it (native objects by
// policy.DecodeNative, Kubernetes ones by k8s.Decode), with the positions
// of the user's file. Every problem is reported with file:line:col and
// field path, as `bulkhead check` does.
func parseDocument(doc api.Document, forDelete bool) (parsedDoc, source.Errors) {
	if doc.Name == "" {
		doc.Name = "request"
	}
	out := parsedDoc{set: &policy.Set{}}
	nodes, errs := splitNodes(doc.Name, []byte(doc.Data))
	if len(errs) > 0 {
		return out, errs
	}
	for _, n := range nodes {
		o, err := nodeObject(doc.Name, n, forDelete)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out.objects = append(out.objects, o)
		if forDelete {
			continue
		}
		set, derrs := decodeNode(doc.Name, n)
		errs = append(errs, derrs...)
		if set != nil {
			out.set.Merge(set)
		}
	}
	return out, errs
}

// decodeNode decodes one object node as internal/load does.
func decodeNode(file string, n *yaml.Node) (*policy.Set, source.Errors) {
	apiVersion, kind := scalar(n, "apiVersion"), scalar(n, "kind")
	switch {
	case apiVersion == api.Version:
		return policy.DecodeNative(file, n)
	case k8s.Handles(apiVersion, kind):
		return k8s.Decode(file, n, apiVersion, kind)
	}
	return nil, source.Errors{{Pos: source.Pos{File: file, Line: n.Line, Column: n.Column}, Path: "apiVersion",
		Msg: fmt.Sprintf("unsupported object %s %s; native objects use apiVersion %s", apiVersion, kind, api.Version)}}
}

// splitNodes splits a YAML stream into its objects, reading a List as its
// items.
func splitNodes(file string, data []byte) ([]*yaml.Node, source.Errors) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var out []*yaml.Node
	for range len(data) + 1 {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, source.Errors{{Pos: source.Pos{File: file}, Msg: "syntax error: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
		}
		if len(n.Content) == 0 || n.Content[0].Tag == "!!null" {
			continue
		}
		doc := n.Content[0]
		if items := field(doc, "items"); items != nil && strings.HasSuffix(scalar(doc, "kind"), "List") {
			out = append(out, items.Content...)
			continue
		}
		out = append(out, doc)
	}
	return nil, source.Errors{{Pos: source.Pos{File: file}, Msg: "syntax error: the YAML stream does not end"}}
}

func field(n *yaml.Node, name string) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i+1]
		}
	}
	return nil
}

func scalar(n *yaml.Node, name string) string {
	if f := field(n, name); f != nil && f.Kind == yaml.ScalarNode {
		return f.Value
	}
	return ""
}

// nodeObject names one object and encodes it as canonical JSON. For a
// delete only apiVersion, kind and metadata are needed.
func nodeObject(file string, n *yaml.Node, forDelete bool) (object, *source.Error) {
	pos := source.Pos{File: file, Line: n.Line, Column: n.Column}
	kind, meta := scalar(n, "kind"), field(n, "metadata")
	ref := api.ObjectRef{Kind: kind, Name: scalar(meta, "name"), Namespace: scalar(meta, "namespace")}
	switch {
	case kind == "Workload":
		return object{}, &source.Error{Pos: pos, Path: "kind", Msg: "workloads are reported by the agents of their hosts, not applied; apply namespaces, segments, policies, walls and conflict classes"}
	case kindResources[kind] == "":
		return object{}, &source.Error{Pos: pos, Path: "kind", Msg: fmt.Sprintf("kind %q is not kept by the manager; valid: %s", kind, strings.Join(keptKinds(), ", "))}
	case ref.Name == "":
		return object{}, &source.Error{Pos: pos, Path: "metadata.name", Msg: "every object needs a name"}
	}
	if kind == "NetworkPolicy" && ref.Namespace == "" {
		ref.Namespace = defaultNamespace
	}
	if forDelete {
		return object{Ref: ref, pos: pos}, nil
	}
	var v any
	if err := n.Decode(&v); err != nil {
		return object{}, &source.Error{Pos: pos, Msg: err.Error()}
	}
	data, err := json.Marshal(v)
	if err != nil {
		return object{}, notJSON(file, n, "", err)
	}
	o := newObject(ref, data)
	o.pos = pos
	return o, nil
}

// notJSON finds what in n JSON cannot carry — an infinite or NaN number,
// or a mapping key that is not a string — and says where and why.
func notJSON(file string, n *yaml.Node, path string, err error) *source.Error {
	pos := source.Pos{File: file, Line: n.Line, Column: n.Column}
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for i, c := range n.Content {
			p := path
			if n.Kind == yaml.SequenceNode {
				p = fmt.Sprintf("%s[%d]", path, i)
			}
			if e := notJSON(file, c, p, nil); e != nil {
				return e
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
				return &source.Error{Pos: source.Pos{File: file, Line: k.Line, Column: k.Column}, Path: path,
					Msg: fmt.Sprintf("mapping key %q (%s) is not a string; quote it", k.Value, strings.TrimPrefix(k.ShortTag(), "!!"))}
			}
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if e := notJSON(file, v, p, nil); e != nil {
				return e
			}
		}
	case yaml.ScalarNode:
		var f float64
		if n.ShortTag() == "!!float" && n.Decode(&f) == nil && (math.IsInf(f, 0) || math.IsNaN(f)) {
			return &source.Error{Pos: pos, Path: path,
				Msg: fmt.Sprintf("%s is not a number JSON can carry; give a finite number, or quote it if it is text", n.Value)}
		}
	}
	if err != nil {
		return &source.Error{Pos: pos, Path: path, Msg: "cannot be written as JSON: " + err.Error()}
	}
	return nil
}

func newObject(ref api.ObjectRef, data []byte) object {
	sum := sha256.Sum256(data)
	return object{Ref: ref, JSON: data, Hash: hex.EncodeToString(sum[:])}
}

func keptKinds() []string {
	return []string{"Namespace", "Segment", "Policy", "Wall", "ConflictClass", "NetworkPolicy",
		"AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy"}
}

// decodeStored reads a stored object into a set, naming it in errors.
func decodeStored(o object) (*policy.Set, error) {
	set, errs := load.Bytes("stored "+refKey(o.Ref), o.JSON)
	if len(errs) > 0 {
		return nil, errs.Err()
	}
	return set, nil
}
