// Command bulkhead is Bulkhead's command line: check, explain and what-if
// policies offline, run the standalone host agent, and apply, get, delete
// and explain against it (internal/cli does the work).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/bulkhead-dev/bulkhead/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
