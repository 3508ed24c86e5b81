package nstest

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
)

// kernelExceptions is the one list of kernel features that the machines
// this project's developers and CI run on cannot have: nothing a script can
// install brings them (netfilter there is built in, with no loadable
// modules). A test that needs one of them and finds it missing takes the
// exception: it is skipped, in CI too, and the exception is reported (in
// the test's log and in the summary scripts/test prints). Any other missing feature is a missing
// prerequisite: a failure in CI. Keep the list short and say why for each.
var kernelExceptions = map[string]string{
	"sctp": "this project's machine kind runs Linux built without CONFIG_IP_SCTP (no SCTP sockets)",
}

// ExceptionsEnv names a file to which every exception taken is appended,
// one line each, so that a run of many test binaries can report them
// together (scripts/test sets it and prints the summary).
const ExceptionsEnv = "BULKHEAD_TEST_EXCEPTIONS"

// KernelExceptions returns the listed features and why each is missing
// here, in name order, as "feature: reason" lines.
func KernelExceptions() []string {
	out := make([]string, 0, len(kernelExceptions))
	for f, why := range kernelExceptions {
		out = append(out, f+": "+why)
	}
	sort.Strings(out)
	return out
}

// RequireKernel checks a kernel feature that a test needs, given err, the
// result of probing it (nil: present). A missing feature named in the list
// of exceptions skips t and reports the exception; any other missing
// feature is Missing: a skip outside CI, a failure in it.
func RequireKernel(t testing.TB, feature string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	why, ok := kernelExceptions[feature]
	if !ok {
		Missing(t, fmt.Sprintf("kernel feature %s: %v", feature, err))
		return
	}
	line := fmt.Sprintf("%s %s: kernel feature %s: %s (%v)", testDir(), t.Name(), feature, why, err)
	recordException(line)
	t.Skipf("exception taken (listed in internal/netns/nstest/exceptions.go): %s", line)
}

var exceptionsMu sync.Mutex

// recordException appends one exception taken to the file named by
// ExceptionsEnv, for a summary that a run which hides skipped tests' logs
// (go test over many packages) still shows.
func recordException(line string) {
	exceptionsMu.Lock()
	defer exceptionsMu.Unlock()
	path := os.Getenv(ExceptionsEnv)
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "nstest: record a test exception in %s: %v\n", path, err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

// testDir names the package under test by its directory (go test runs a
// test binary in its package's directory): the last two path elements.
func testDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	return filepath.Join(filepath.Base(filepath.Dir(wd)), filepath.Base(wd))
}
