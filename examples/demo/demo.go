// Package demo holds the policies of `bulkhead up --demo`: the trading
// floor of examples/policies — a default-deny baseline, a wall between
// the buy and the sell side, a conflict class between the payment
// processor's two databases, a Kubernetes NetworkPolicy for the web front
// end — embedded so that the binary carries them. The files are copies
// of examples/policies (a test keeps them equal); apply them by hand with
// `bulkhead apply -f examples/demo`. decisions/ adds the demo's
// escalations: a policy rule that escalates and the decision rules that
// answer (`bulkhead apply -f examples/demo/decisions`).
package demo

import (
	"embed"
	"io/fs"
	"sort"
)

//go:embed *.yaml decisions/*.yaml
var files embed.FS

// Baseline is the default-deny baseline `bulkhead up` installs.
const Baseline = "00-baseline.yaml"

// File is one policy file.
type File struct {
	Name string
	Data []byte
}

// Files returns the demo's policy files in name order.
func Files() []File {
	names, _ := fs.Glob(files, "*.yaml")
	sort.Strings(names)
	out := make([]File, 0, len(names))
	for _, n := range names {
		data, _ := files.ReadFile(n)
		out = append(out, File{Name: n, Data: data})
	}
	return out
}

// Decisions returns the demo's escalations (decisions/): a policy that
// escalates, and the decision rules that answer on the manager. They are
// the demo's own, not a copy of examples/policies.
func Decisions() []File {
	names, _ := fs.Glob(files, "decisions/*.yaml")
	sort.Strings(names)
	out := make([]File, 0, len(names))
	for _, n := range names {
		data, _ := files.ReadFile(n)
		out = append(out, File{Name: n, Data: data})
	}
	return out
}

// Read returns one file.
func Read(name string) (File, error) {
	data, err := files.ReadFile(name)
	return File{Name: name, Data: data}, err
}
