// Package cli is the bulkhead command line: each command parses its flags and
// calls into the packages that do the work.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/spf13/cobra"
)

// Version is the version the binary reports; set at build time.
var Version = "dev"

// ExitError carries a process exit code without printing more.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run executes the bulkhead command line with args (without the program
// name), writing to stdout and stderr. It returns the exit code.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runWith(ctx, args, os.Stdin, stdout, stderr)
}

func runWith(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := &cobra.Command{
		Use:   "bulkhead",
		Short: "Bulkhead puts every workload in its own compartment on the network",
		Long: `Bulkhead is a microsegmentation system for containers: a stateful firewall
outside every workload enforces one central policy, and walls between
segments are proven before they are applied.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().String("agent", "", "the agent to talk to: unix:///path/to/agent.sock (default $"+agentEnv+", else unix://"+client.DefaultSocket+")")
	root.AddCommand(checkCommand(), explainCommand(), verdictsCommand(),
		agentCommand(), applyCommand(), deleteCommand(), getCommand(), upCommand())
	RegisterManagerCommands(root)
	err := root.ExecuteContext(ctx)
	var exit *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &exit):
		return exit.Code
	}
	fmt.Fprintln(stderr, "bulkhead:", err)
	return 1
}
