package objects

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// MaxDocumentSize bounds one document (a file, a request's document).
const MaxDocumentSize = 64 << 20

// Split cuts a YAML stream (or one JSON value) into the mappings of its
// objects: each document, and each item of a List (`kind: List`, or any
// kind ending in List with items, as kubectl writes them). Empty
// documents are skipped; a List may not nest.
func Split(file string, data []byte) ([]*yaml.Node, source.Errors) {
	if len(data) > MaxDocumentSize {
		return nil, source.Errors{{Pos: source.Pos{File: file}, Msg: fmt.Sprintf("the document is larger than %d MiB", MaxDocumentSize>>20)}}
	}
	docs, errs := documents(file, data)
	if len(errs) > 0 {
		return nil, errs
	}
	return expandLists(file, docs)
}

// expandLists replaces each List among docs by its items.
func expandLists(file string, docs []*yaml.Node) ([]*yaml.Node, source.Errors) {
	var (
		out  []*yaml.Node
		errs source.Errors
	)
	for _, doc := range docs {
		if !isList(doc) {
			out = append(out, doc)
			continue
		}
		items := field(doc, "items")
		if items == nil || items.Kind != yaml.SequenceNode {
			errs.Add(nodePos(file, doc), "items", "a List holds its objects in items, a list of objects")
			continue
		}
		for i, it := range items.Content {
			if isList(it) {
				errs.Add(nodePos(file, it), fmt.Sprintf("items[%d].kind", i), "a List may not contain a List")
				continue
			}
			out = append(out, it)
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

func isList(n *yaml.Node) bool {
	kind := scalar(n, "kind")
	return kind == "List" || strings.HasSuffix(kind, "List") && field(n, "items") != nil
}

// documents splits a stream into its documents.
func documents(file string, data []byte) ([]*yaml.Node, source.Errors) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var docs []*yaml.Node
	// A stream cannot hold more documents than bytes: the bound guards
	// against a decoder that stops advancing on malformed input.
	for range len(data) + 1 {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, source.Errors{syntaxError(file, err)}
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue // an empty document, as between two "---"
		}
		docs = append(docs, n.Content[0])
	}
	return nil, source.Errors{{Pos: source.Pos{File: file}, Msg: "syntax error: the YAML stream does not end"}}
}

func syntaxError(file string, err error) *source.Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	pos := source.Pos{File: file}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		var line int
		if _, scanErr := fmt.Sscanf(rest, "%d:", &line); scanErr == nil {
			pos.Line = line
			msg = strings.TrimSpace(rest[strings.Index(rest, ":")+1:])
		}
	}
	return &source.Error{Pos: pos, Msg: "syntax error: " + msg}
}

func nodePos(file string, n *yaml.Node) source.Pos {
	return source.Pos{File: file, Line: n.Line, Column: n.Column}
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
