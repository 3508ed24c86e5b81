package cli

import (
	"errors"

	"github.com/spf13/cobra"
)

// errNoKernelDataplane stands until the nftables dataplane is wired in.
var errNoKernelDataplane = errors.New("agent: the nftables dataplane is not in this build yet")

func agentCleanupCommand() *cobra.Command {
	return &cobra.Command{Use: "cleanup", Short: "Remove everything Bulkhead created in the kernel",
		RunE: func(*cobra.Command, []string) error { return errNoKernelDataplane }}
}

func agentDumpCommand() *cobra.Command {
	return &cobra.Command{Use: "dump", Short: "Print Bulkhead's live nftables table in readable form",
		RunE: func(*cobra.Command, []string) error { return errNoKernelDataplane }}
}
