package policy

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The one set of rules for the values every kind of object carries —
// names, label keys and values, port names — whichever way the object
// enters: a native or a Kubernetes document, a workload report, a CNI
// configuration. They are the upstream Kubernetes rules
// (k8s.io/apimachinery/pkg/util/validation), so that what the API server
// would refuse is refused here too. Each function returns "" for a valid
// value, or what is wrong and what would be valid.

var (
	dns1123Label     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	qualifiedName    = regexp.MustCompile(`^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`)
	ianaSvcName      = regexp.MustCompile(`^[-a-z0-9]+$`)
	ianaHasLetter    = regexp.MustCompile(`[a-z]`)
)

// MaxLabels bounds the labels one object may carry. Kubernetes has no such
// bound, but its objects are bounded in size by the API server; ours enter
// from hosts and runtimes too, and one label set becomes one identity.
const MaxLabels = 64

// SubdomainProblem checks an object name: a lowercase RFC 1123 subdomain.
func SubdomainProblem(name string) string {
	switch {
	case name == "":
		return "a name is required"
	case len(name) > 253 || !dns1123Subdomain.MatchString(name):
		return "invalid name " + quote(name) + ": a lowercase RFC 1123 subdomain is required (at most 253 of a-z, 0-9, '-' and '.', starting and ending with a letter or digit, e.g. example.com)"
	}
	return ""
}

// DNSLabelProblem checks a namespace name: a lowercase RFC 1123 label.
func DNSLabelProblem(name string) string {
	switch {
	case name == "":
		return "a name is required"
	case len(name) > 63 || !dns1123Label.MatchString(name):
		return "invalid name " + quote(name) + ": a lowercase RFC 1123 label is required (at most 63 of a-z, 0-9 and '-', starting and ending with a letter or digit, e.g. my-name)"
	}
	return ""
}

// LabelKeyProblem checks a label key: an optional DNS subdomain prefix and
// '/', then a qualified name.
func LabelKeyProblem(k string) string {
	name := k
	if prefix, rest, ok := strings.Cut(k, "/"); ok {
		if prefix == "" || len(prefix) > 253 || !dns1123Subdomain.MatchString(prefix) {
			return "invalid label key " + quote(k) + ": its prefix must be a lowercase DNS subdomain (e.g. example.com/name)"
		}
		name = rest
	}
	if name == "" || len(name) > 63 || !qualifiedName.MatchString(name) {
		return "invalid label key " + quote(k) + ": a label key is an optional DNS subdomain prefix and '/', then at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit (e.g. app or example.com/app)"
	}
	return ""
}

// LabelValueProblem checks a label value.
func LabelValueProblem(v string) string {
	if v == "" || len(v) <= 63 && qualifiedName.MatchString(v) {
		return ""
	}
	return "invalid label value " + quote(v) + ": a label value is empty or at most 63 of A-Z, a-z, 0-9, '-', '_' and '.', starting and ending with a letter or digit"
}

// LabelProblems checks a label set: its size, then every key and value,
// in key order. Each problem names the key it is about ("" for the size).
func LabelProblems(labels map[string]string) []LabelProblem {
	var out []LabelProblem
	if p := LabelCountProblem(len(labels)); p != "" {
		return append(out, LabelProblem{Msg: p})
	}
	for _, k := range sortedKeys(labels) {
		if p := LabelKeyProblem(k); p != "" {
			out = append(out, LabelProblem{Key: k, Msg: p})
		}
		if p := LabelValueProblem(labels[k]); p != "" {
			out = append(out, LabelProblem{Key: k, Msg: p})
		}
	}
	return out
}

// LabelProblem is one problem of a label set.
type LabelProblem struct {
	Key string // the label it is about; "" for the set as a whole
	Msg string
}

// PortNameProblem checks a named port: an IANA service name (RFC 6335
// section 5.1), as Kubernetes container ports have.
func PortNameProblem(s string) string {
	var p string
	switch {
	case len(s) > 15:
		p = "must be no more than 15 characters"
	case !ianaSvcName.MatchString(s):
		p = "must contain only lowercase letters, digits and '-'"
	case strings.Contains(s, "--"):
		p = "must not contain consecutive hyphens"
	case strings.HasPrefix(s, "-") || strings.HasSuffix(s, "-"):
		p = "must not begin or end with a hyphen"
	case !ianaHasLetter.MatchString(s):
		p = "must contain at least one letter"
	default:
		return ""
	}
	return "invalid port name " + quote(s) + ": " + p + " (an IANA service name, e.g. http or serve-80-tcp)"
}

// PortProblem checks a port number.
func PortProblem(n int) string {
	if n < 1 || n > 65535 {
		return "port " + itoa(n) + " is out of range; valid ports are 1 to 65535"
	}
	return ""
}

func quote(s string) string { return strconv.Quote(s) }

func itoa(n int) string { return strconv.Itoa(n) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// LabelCountProblem checks how many labels an object carries.
func LabelCountProblem(n int) string {
	if n > MaxLabels {
		return "too many labels: " + itoa(n) + "; at most " + itoa(MaxLabels) + " are allowed"
	}
	return ""
}
