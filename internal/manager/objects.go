package manager

import (
	"fmt"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/revisions"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

func refKey(r api.ObjectRef) string { return objects.Key(r) }

func parseRefKey(k string) (api.ObjectRef, bool) { return objects.ParseKey(k) }

// parsedDoc is one request document: its set as internal/objects reads it
// (with the positions of the user's file) and its objects.
type parsedDoc struct {
	set     *policy.Set
	objects []revisions.Object
}

// parseDocument reads one request document with internal/objects, the
// reader `bulkhead check` and the agents use, so that every problem is
// reported with file:line:col and field path, and what is stored is the
// canonical form of what was validated. For a delete only each object's
// kind and name are read.
func parseDocument(doc api.Document, forDelete bool) (parsedDoc, source.Errors) {
	if doc.Name == "" {
		doc.Name = "request"
	}
	out := parsedDoc{set: &policy.Set{}}
	if forDelete {
		refs, errs := objects.Names(doc.Name, []byte(doc.Data))
		for _, r := range refs {
			if err := kept(r.Ref, r.Pos); err != nil {
				errs = append(errs, err)
				continue
			}
			out.objects = append(out.objects, revisions.Object{Ref: r.Ref, Pos: r.Pos})
		}
		return out, errs
	}
	objs, errs := objects.Read(doc.Name, []byte(doc.Data))
	for _, o := range objs {
		if err := kept(o.Ref, o.Pos); err != nil {
			errs = append(errs, err)
			continue
		}
		out.objects = append(out.objects, revisions.Object{Ref: o.Ref, JSON: o.Canon, Hash: o.Hash, Pos: o.Pos})
		out.set.Merge(o.Set)
	}
	return out, errs
}

// kept refuses the kinds a manager does not take by apply.
func kept(r api.ObjectRef, pos source.Pos) *source.Error {
	if k, ok := objects.Lookup(r.Kind); ok && k.Reported {
		return &source.Error{Pos: pos, Path: "kind", Msg: fmt.Sprintf("%s objects are reported by the agents of their hosts, not applied; apply %s",
			r.Kind, strings.Join(objects.Applied(), ", "))}
	}
	return nil
}

// decodeStored reads a stored object into its set.
func decodeStored(o revisions.Object) (*policy.Set, error) {
	s, err := objects.Stored(o.Ref, o.JSON)
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	return s.Set, nil
}
