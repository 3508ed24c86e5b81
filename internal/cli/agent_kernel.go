package cli

import (
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/spf13/cobra"
)

func agentCleanupCommand() *cobra.Command {
	var netns string
	cmd := &cobra.Command{
		Use:   "cleanup [--netns PATH]",
		Short: "Remove everything Bulkhead created in the kernel",
		Long: `cleanup deletes Bulkhead's nftables table (inet ` + nft.TableName + `) from the network
namespace, which ends enforcement: every connection is allowed again. Stop
the agent first, or it puts the table back at its next change. A table of
that name that Bulkhead did not make is left alone, with an error.`,
		Example: `  sudo bulkhead agent cleanup
  sudo bulkhead agent cleanup --netns /run/netns/host1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := nft.Cleanup(netns); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), "removed Bulkhead's nftables table (if there was one)")
			return nil
		},
	}
	cmd.Flags().StringVar(&netns, "netns", "", "network namespace path (default: this process's)")
	return cmd
}

func agentDumpCommand() *cobra.Command {
	var netns string
	cmd := &cobra.Command{
		Use:   "dump [--netns PATH]",
		Short: "Print Bulkhead's live nftables table in readable form",
		Long: `dump reads Bulkhead's nftables table back from the kernel and prints its
chains, its maps with every element decoded, and its counters (Debian's
nft cannot print the concatenated lookups the table is made of). It reads
every element: seconds at 100,000 rules.`,
		Example: `  sudo bulkhead agent dump | less`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return nft.DumpNS(netns, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&netns, "netns", "", "network namespace path (default: this process's)")
	return cmd
}
