package objects

import (
	"cmp"
	"slices"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
)

// Key names an object uniquely, as Kind/namespace/name: the one spelling
// of a ref that the store, the feed and the agents use. Keys are for
// naming, not ordering ('-' sorts before '/'): order refs with Compare.
func Key(r api.ObjectRef) string { return r.Kind + "/" + r.Namespace + "/" + r.Name }

// ParseKey reads a Key back.
func ParseKey(k string) (api.ObjectRef, bool) {
	parts := strings.SplitN(k, "/", 3)
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
		return api.ObjectRef{}, false
	}
	return api.ObjectRef{Kind: parts[0], Namespace: parts[1], Name: parts[2]}, true
}

// Compare orders refs as their keys sort, without building them.
func Compare(a, b api.ObjectRef) int {
	return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
}

// String words a ref for people: "Policy shop/web", "Wall buy-sell".
func String(r api.ObjectRef) string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}

// SortRefs sorts refs by Compare.
func SortRefs(refs []api.ObjectRef) { slices.SortFunc(refs, Compare) }
