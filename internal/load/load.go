// Package load reads policy objects and inventories from files, directories
// and streams: YAML (many documents per file) or JSON, native Bulkhead
// objects and Kubernetes objects mixed freely, a `kind: List` read as its
// items. It reports every error of a run with file, line, column and field
// path, and returns nothing when anything is wrong: never half a set.
package load

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/k8s"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds one input file.
const MaxFileSize = 64 << 20

// Paths reads every file named, and every .yaml, .yml and .json file inside
// the directories named (recursively, in name order). "-" is standard input.
func Paths(paths []string) (*policy.Set, error) {
	var errs source.Errors
	set := &policy.Set{}
	for _, p := range paths {
		files, err := Expand(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := readFile(f)
			if err != nil {
				return nil, err
			}
			s, ferrs := Bytes(f, data)
			errs = append(errs, ferrs...)
			if s != nil {
				set.Merge(s)
			}
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return set, nil
}

// Expand lists the files a path names: the file itself, or every .yaml,
// .yml and .json file below a directory, sorted; "-" stays as it is.
func Expand(p string) ([]string, error) {
	if p == "-" {
		return []string{p}, nil
	}
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if !st.IsDir() {
		return []string{p}, nil
	}
	var files []string
	err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				files = append(files, path)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("load: directory %s holds no .yaml, .yml or .json file", p)
	}
	sort.Strings(files)
	return files, nil
}

func readFile(name string) ([]byte, error) {
	var r io.Reader
	if name == "-" {
		r = os.Stdin
	} else {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("load: %w", err)
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("load: read %s: %w", name, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("load: %s is larger than %d MiB", name, MaxFileSize>>20)
	}
	return data, nil
}

// Bytes reads the documents of one file.
func Bytes(file string, data []byte) (*policy.Set, source.Errors) {
	docs, errs := documents(file, data)
	set := &policy.Set{}
	for _, doc := range docs {
		s, derrs := object(file, doc, 0)
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

// documents splits a YAML stream (or one JSON value) into its documents.
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

type envelope struct {
	APIVersion string
	Kind       string
	Items      *yaml.Node
}

func peek(doc *yaml.Node) envelope {
	var e envelope
	if doc.Kind != yaml.MappingNode {
		return e
	}
	for i := 0; i+1 < len(doc.Content); i += 2 {
		switch doc.Content[i].Value {
		case "apiVersion":
			e.APIVersion = doc.Content[i+1].Value
		case "kind":
			e.Kind = doc.Content[i+1].Value
		case "items":
			e.Items = doc.Content[i+1]
		}
	}
	return e
}

func object(file string, doc *yaml.Node, depth int) (*policy.Set, source.Errors) {
	pos := source.Pos{File: file, Line: doc.Line, Column: doc.Column}
	if doc.Kind != yaml.MappingNode {
		return nil, source.Errors{{Pos: pos, Msg: "expected an object with apiVersion and kind"}}
	}
	e := peek(doc)
	switch {
	case e.Kind == "List" || strings.HasSuffix(e.Kind, "List") && e.Items != nil:
		if depth > 0 || e.Items == nil || e.Items.Kind != yaml.SequenceNode {
			return nil, source.Errors{{Pos: pos, Path: "items", Msg: "a List holds its objects in items, and may not nest"}}
		}
		set := &policy.Set{}
		var errs source.Errors
		for _, item := range e.Items.Content {
			s, ierrs := object(file, item, depth+1)
			errs = append(errs, ierrs...)
			if s != nil {
				set.Merge(s)
			}
		}
		return set, errs
	case e.APIVersion == api.Version:
		return policy.DecodeNative(file, doc)
	case k8s.Handles(e.APIVersion, e.Kind):
		return k8s.Decode(file, doc, e.APIVersion, e.Kind)
	case e.APIVersion == "" || e.Kind == "":
		return nil, source.Errors{{Pos: pos, Msg: "every object needs apiVersion and kind; native objects use apiVersion " + api.Version}}
	}
	return nil, source.Errors{{Pos: pos, Path: "kind", Msg: fmt.Sprintf("unsupported object %s %s; valid: %s kinds %s; v1 Namespace; networking.k8s.io/v1 NetworkPolicy; policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy, BaselineAdminNetworkPolicy; policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy",
		e.APIVersion, e.Kind, api.Version, strings.Join(api.Kinds, ", "))}}
}

// Inventory reads an inventory file: namespaces and workloads.
func Inventory(file string) (*policy.Set, error) {
	data, err := readFile(file)
	if err != nil {
		return nil, err
	}
	docs, errs := documents(file, data)
	set := &policy.Set{}
	for _, doc := range docs {
		s, derrs := policy.DecodeInventory(file, doc)
		errs = append(errs, derrs...)
		if s != nil {
			set.Merge(s)
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return set, nil
}
