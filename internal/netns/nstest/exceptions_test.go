package nstest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// outcomeTB records how a check ended the test it was given: the check
// ends the goroutine on Skip and Fatal, as testing does.
type outcomeTB struct {
	testing.TB
	mu      sync.Mutex
	skipped string
	failed  string
}

func (o *outcomeTB) Helper()      {}
func (o *outcomeTB) Name() string { return "TestFake" }
func (o *outcomeTB) Skipf(format string, args ...any) {
	o.mu.Lock()
	o.skipped = fmt.Sprintf(format, args...)
	o.mu.Unlock()
	runtime.Goexit()
}
func (o *outcomeTB) Fatalf(format string, args ...any) {
	o.mu.Lock()
	o.failed = fmt.Sprintf(format, args...)
	o.mu.Unlock()
	runtime.Goexit()
}

func run(check func(testing.TB)) *outcomeTB {
	o := &outcomeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(o)
	}()
	<-done
	return o
}

// A listed kernel feature that is missing is an exception, in CI too, and
// it is reported in the file scripts/test summarizes; an unlisted one fails
// in CI.
func TestKernelExceptions(t *testing.T) {
	record := filepath.Join(t.TempDir(), "exceptions")
	t.Setenv(ExceptionsEnv, record)
	t.Setenv("CI", "true")
	missing := errors.New("socket: protocol not supported")

	o := run(func(tb testing.TB) { RequireKernel(tb, "sctp", missing) })
	if o.failed != "" || !strings.Contains(o.skipped, "exception taken") || !strings.Contains(o.skipped, "CONFIG_IP_SCTP") {
		t.Fatalf("a listed feature in CI: skipped %q, failed %q", o.skipped, o.failed)
	}
	data, err := os.ReadFile(record)
	if err != nil || !strings.Contains(string(data), "nstest TestFake: kernel feature sctp") {
		t.Fatalf("the exception was not recorded: %q %v", data, err)
	}

	o = run(func(tb testing.TB) { RequireKernel(tb, "nft-queue", missing) })
	if o.skipped != "" || !strings.Contains(o.failed, "prerequisite missing in CI") {
		t.Fatalf("an unlisted feature in CI: skipped %q, failed %q", o.skipped, o.failed)
	}
	o = run(func(tb testing.TB) { RequireKernel(tb, "sctp", nil) })
	if o.skipped != "" || o.failed != "" {
		t.Fatalf("a present feature: skipped %q, failed %q", o.skipped, o.failed)
	}
	if l := KernelExceptions(); len(l) != 1 || !strings.HasPrefix(l[0], "sctp: ") {
		t.Fatalf("the list: %q", l)
	}
}
