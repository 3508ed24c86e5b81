package agent

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/bulkhead-dev/bulkhead/internal/source"
)

// document is one input file as a client sent it. Objects keep a pointer
// to the document they were read from, so that every later error about
// them cites the file, line and column the user wrote, also after a
// restart: the state dir stores documents whole.
type document struct {
	name string
	data string // the text, unless packed
	// packed is the text of a large document, compressed (pack): it is
	// needed again only to write the state file, and held as long as any
	// object it defines is in force.
	packed []byte
	// canons holds, for a packed document, the canonical forms of its
	// objects, concatenated and compressed; each object knows its place.
	canons []byte
	seq    int64 // orders documents in the state file: first applied first
}

// packMin is the size from which a document's text is held compressed.
const packMin = 64 << 10

// text is the document as the client sent it.
func (d *document) text() string {
	if d.packed == nil {
		return d.data
	}
	return string(inflate(d.packed))
}

// pack compresses a large document once it was read, before it is
// shared: its text and the canonical forms of objs, its objects, which
// then know where theirs is. A text that does not shrink by half stays
// as it is.
func (d *document) pack(objs []*object) {
	if d.packed != nil || len(d.data) < packMin {
		return
	}
	packed := deflate([]byte(d.data))
	if len(packed) > len(d.data)/2 {
		return
	}
	var all []byte
	for _, o := range objs {
		o.at = [2]uint32{uint32(len(all)), uint32(len(o.canon))}
		all = append(all, o.canon...)
	}
	d.packed, d.canons, d.data = packed, deflate(all), ""
	for _, o := range objs {
		o.canon = ""
	}
}

func deflate(b []byte) []byte {
	var out bytes.Buffer
	w, _ := flate.NewWriter(&out, flate.BestSpeed) // a valid level: no error
	_, _ = w.Write(b)                              // a bytes.Buffer does not fail
	_ = w.Close()
	return bytes.Clone(out.Bytes())
}

func inflate(b []byte) []byte {
	out, err := io.ReadAll(flate.NewReader(bytes.NewReader(b)))
	if err != nil {
		panic("agent: a packed document does not read back: " + err.Error())
	}
	return out
}

// object is one stored object: its name, the model object it decoded to
// (a Set holding exactly one object), its canonical form
// (internal/objects), which `get` prints, and the hash of that form,
// which apply compares to tell an update from no change.
type object struct {
	ref api.ObjectRef
	doc *document
	// one is the model object the object decoded to (*policy.Policy,
	// *policy.Workload, ...) when it is exactly one, as for every kind
	// today; set holds them otherwise. A Set per object would cost 150
	// bytes each.
	one any
	set *policy.Set
	// canon shares its bytes with doc.data when the document is the
	// canonical form (Sync); it is empty when doc is packed, and at says
	// where in doc.canons it is then.
	canon string
	at    [2]uint32 // offset and length
	hash  [sha256.Size]byte
}

// canonical is the object's canonical form; unpacked keeps the canonical
// forms of the packed documents met, for a listing of many objects.
func (o *object) canonical(unpacked map[*document][]byte) string {
	if o.doc == nil || o.doc.canons == nil {
		return o.canon
	}
	b, ok := unpacked[o.doc]
	if !ok {
		b = inflate(o.doc.canons)
		unpacked[o.doc] = b
	}
	return string(b[o.at[0] : o.at[0]+o.at[1]])
}

func refString(r api.ObjectRef) string { return objects.String(r) }

// parseDocument reads every object of one document with internal/objects,
// the reader `bulkhead check` and the manager use.
func parseDocument(d *document) ([]*object, source.Errors) {
	objs, errs := objects.Read(d.name, []byte(d.text()))
	if len(errs) > 0 {
		return nil, errs
	}
	out := make([]*object, len(objs))
	pool := labelPool{}
	for i, o := range objs {
		pool.shareSet(o.Set)
		out[i] = newObject(d, o)
	}
	d.pack(out)
	return out, nil
}

// labelPool makes the equal label maps of the objects of one document one
// map: the replicas of an app carry the same labels and rules name the
// same selectors, so most maps are copies. It is sound because nothing
// writes a decoded label map: the model is read-only once decoded.
type labelPool map[string]map[string]string

func (p labelPool) share(m map[string]string) map[string]string {
	if len(m) == 0 {
		return m
	}
	keys := slices.Sorted(maps.Keys(m))
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(m[k])
		b.WriteByte(0)
	}
	key := b.String()
	if s, ok := p[key]; ok {
		return s
	}
	p[key] = m
	return m
}

func (p labelPool) selector(s *policy.Selector) {
	if s != nil {
		s.MatchLabels = p.share(s.MatchLabels)
	}
}

// shareSet shares the label maps of set's workloads, namespaces,
// segments and policies.
func (p labelPool) shareSet(set *policy.Set) {
	for _, w := range set.Workloads {
		w.Labels = p.share(w.Labels)
	}
	for _, ns := range set.Namespaces {
		ns.Labels = p.share(ns.Labels)
	}
	for _, sg := range set.Segments {
		p.selector(sg.Namespaces.Selector)
		p.selector(sg.Workloads)
	}
	for _, pol := range set.Policies {
		p.selector(pol.Subject.Namespaces.Selector)
		p.selector(pol.Subject.Workloads)
		for _, rules := range [][]policy.Rule{pol.Ingress, pol.Egress} {
			for i := range rules {
				for j := range rules[i].Peers {
					p.selector(rules[i].Peers[j].Namespaces.Selector)
					p.selector(rules[i].Peers[j].Workloads)
				}
			}
		}
	}
}

func newObject(d *document, o *objects.Object) *object {
	canon := d.data // one copy, not two
	if string(o.Canon) != d.data {
		canon = string(o.Canon)
	}
	one, set := compactSet(o.Set)
	return &object{ref: o.Ref, doc: d, one: one, set: set, canon: canon, hash: sha256.Sum256(o.Canon)}
}

// compactSet is the one model object of s, or s when it holds more.
func compactSet(s *policy.Set) (any, *policy.Set) {
	if len(s.Namespaces)+len(s.Workloads)+len(s.Segments)+len(s.Policies)+len(s.Walls)+len(s.ConflictClasses) != 1 {
		return nil, s
	}
	switch {
	case len(s.Namespaces) == 1:
		return s.Namespaces[0], nil
	case len(s.Workloads) == 1:
		return s.Workloads[0], nil
	case len(s.Segments) == 1:
		return s.Segments[0], nil
	case len(s.Policies) == 1:
		return s.Policies[0], nil
	case len(s.Walls) == 1:
		return s.Walls[0], nil
	}
	return s.ConflictClasses[0], nil
}

// mergeInto appends the object's model objects to set.
func (o *object) mergeInto(set *policy.Set) {
	switch m := o.one.(type) {
	case *policy.Namespace:
		set.Namespaces = append(set.Namespaces, m)
	case *policy.Workload:
		set.Workloads = append(set.Workloads, m)
	case *policy.Segment:
		set.Segments = append(set.Segments, m)
	case *policy.Policy:
		set.Policies = append(set.Policies, m)
	case *policy.Wall:
		set.Walls = append(set.Walls, m)
	case *policy.ConflictClass:
		set.ConflictClasses = append(set.ConflictClasses, m)
	default:
		set.Merge(o.set)
	}
}

// policy is the policy of an object of a policy kind.
func (o *object) policy() *policy.Policy {
	if p, ok := o.one.(*policy.Policy); ok {
		return p
	}
	return o.set.Policies[0]
}

// workload is the workload of a Workload object.
func (o *object) workload() *policy.Workload {
	if w, ok := o.one.(*policy.Workload); ok {
		return w
	}
	return o.set.Workloads[0]
}

// jsonValue reads canonical JSON as JSON values, for `get`.
func jsonValue(canon string) map[string]any {
	var v map[string]any
	if err := json.Unmarshal([]byte(canon), &v); err != nil {
		panic("agent: canonical JSON does not read back: " + err.Error())
	}
	return v
}

// objectSet merges the objects, in the order given, into the policy set
// they make.
func objectSet(objs []*object) *policy.Set {
	set := &policy.Set{}
	for _, o := range objs {
		o.mergeInto(set)
	}
	return set
}

func sortedObjects(objs map[api.ObjectRef]*object) []*object {
	out := make([]*object, 0, len(objs))
	for _, o := range objs {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b *object) int { return objects.Compare(a.ref, b.ref) })
	return out
}

// objectsAfter is the object set a planned change makes: the set in force
// with the change laid over it, so that planning a change of one object
// costs that object, not a copy of every object held. The set in force is
// changed only by commit, once the change is enforced and recorded.
type objectsAfter struct {
	base map[api.ObjectRef]*object // in force; read-only until commit
	put  map[api.ObjectRef]*object // created or updated
	del  map[api.ObjectRef]bool    // deleted (unless in put)
	n    int                       // len of the resulting set
}

func newObjectsAfter(base map[api.ObjectRef]*object) *objectsAfter {
	return &objectsAfter{base: base, put: map[api.ObjectRef]*object{}, del: map[api.ObjectRef]bool{}, n: len(base)}
}

func (v *objectsAfter) get(ref api.ObjectRef) (*object, bool) {
	if o, ok := v.put[ref]; ok {
		return o, true
	}
	if v.del[ref] {
		return nil, false
	}
	o, ok := v.base[ref]
	return o, ok
}

func (v *objectsAfter) set(o *object) {
	if _, ok := v.get(o.ref); !ok {
		v.n++
	}
	v.put[o.ref] = o
}

func (v *objectsAfter) delete(ref api.ObjectRef) {
	if _, ok := v.get(ref); ok {
		v.n--
	}
	delete(v.put, ref)
	v.del[ref] = true
}

// all is the resulting set as a map of its own.
func (v *objectsAfter) all() map[api.ObjectRef]*object {
	m := make(map[api.ObjectRef]*object, v.n)
	for ref, o := range v.base {
		if !v.del[ref] {
			m[ref] = o
		}
	}
	maps.Copy(m, v.put)
	return m
}

// commit makes the change in base, the set in force, and returns it.
func (v *objectsAfter) commit() map[api.ObjectRef]*object {
	for ref := range v.del {
		delete(v.base, ref)
	}
	maps.Copy(v.base, v.put)
	return v.base
}

// maxPatch is the largest change merged into the sorted lists in force;
// a larger one sorts the whole set again.
const maxPatch = 64

// changedList is the sorted list of next, the object set a change made
// of the one whose sorted list is prev: a copy of prev with the change
// merged in, without going through every object.
func changedList(prev []*object, next *objectsAfter, res api.ApplyResult) []*object {
	if len(res.Created)+len(res.Updated)+len(res.Deleted) > maxPatch {
		return sortedObjects(next.all())
	}
	var upserted []*object
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			o, _ := next.get(ref)
			upserted = append(upserted, o)
		}
	}
	return patchSorted(prev, func(o *object) api.ObjectRef { return o.ref }, res.Deleted, upserted)
}

// changedSet is the policy set of the objects in nextList, for a change
// of policies alone to the objects whose set is prev: it shares all but
// the list of policies with prev, and that list is patched, not rebuilt.
func changedSet(prev *policy.Set, next *objectsAfter, nextList []*object, res api.ApplyResult) *policy.Set {
	n := len(res.Created) + len(res.Updated) + len(res.Deleted)
	if n > maxPatch || !policiesOnly(res) {
		return objectSet(nextList)
	}
	var upserted []*policy.Policy
	for _, refs := range [][]api.ObjectRef{res.Created, res.Updated} {
		for _, ref := range refs {
			o, _ := next.get(ref)
			upserted = append(upserted, o.policy())
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
			if !objects.IsPolicy(ref.Kind) {
				return false
			}
		}
	}
	return true
}

// patchSorted returns a copy of list, sorted by the refs of its elements
// in objects.Compare order, without the deleted refs and with each upserted
// element in the place of the one with its ref, or inserted in order.
func patchSorted[T any](list []T, ref func(T) api.ObjectRef, deleted []api.ObjectRef, upserted []T) []T {
	out := make([]T, len(list), len(list)+len(upserted))
	copy(out, list)
	find := func(r api.ObjectRef) (int, bool) {
		return slices.BinarySearchFunc(out, r, func(e T, r api.ObjectRef) int { return objects.Compare(ref(e), r) })
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

func sortRefs(refs []api.ObjectRef) { objects.SortRefs(refs) }

// ResolveKind maps what a user types after `bulkhead get` to the kinds it
// means (objects.Resolve).
func ResolveKind(s string) ([]string, error) { return objects.Resolve(s) }
