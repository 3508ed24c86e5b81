package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/spf13/cobra"
)

// hostCommand groups what an admin sets about a host.
func hostCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "host", Short: "Show and set what a host may claim in its reports"}
	var b api.HostBounds
	var clear bool
	bounds := &cobra.Command{
		Use:   "bounds HOST [--range CIDR]... [--host-ip CIDR]... [--namespace NS]... | bounds HOST --clear",
		Short: "Show, or set (admin), a host's address ranges, underlay prefixes and namespaces",
		Long: `Without flags, print what HOST may claim and the addresses held for it.
With flags, set all three lists at once (a list left out becomes empty,
which sets no bound of its kind: see docs/security.md, "What a host may
claim"). The manager refuses ranges that overlap another host's, and
bounds that workloads already stored would break.`,
		Example: "  bulkhead host bounds node-1 --range 10.1.0.0/24 --host-ip 192.0.2.1/32 --namespace trading",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			host := args[0]
			set := clear || len(b.Ranges)+len(b.HostIPs)+len(b.Namespaces) > 0
			if clear && len(b.Ranges)+len(b.HostIPs)+len(b.Namespaces) > 0 {
				return fmt.Errorf("host bounds: --clear takes no other flag")
			}
			var got api.HostBounds
			if set {
				got, err = c.SetHostBounds(cmd.Context(), host, b)
			} else {
				got, err = c.HostBounds(cmd.Context(), host)
			}
			if err != nil {
				return err
			}
			printBounds(cmd.OutOrStdout(), host, got)
			return nil
		},
	}
	bounds.Flags().StringArrayVar(&b.Ranges, "range", nil, "a prefix the host's workload addresses must lie in (repeat)")
	bounds.Flags().StringArrayVar(&b.HostIPs, "host-ip", nil, "a prefix the host's underlay address must lie in (repeat)")
	bounds.Flags().StringArrayVar(&b.Namespaces, "namespace", nil, "a namespace the host may run workloads in (repeat)")
	bounds.Flags().BoolVar(&clear, "clear", false, "remove every bound: trust the host as docs/security.md says")
	cmd.AddCommand(bounds)
	return cmd
}

func printBounds(w io.Writer, host string, b api.HostBounds) {
	list := func(s []string) string {
		if len(s) == 0 {
			return "(no bound)"
		}
		return strings.Join(s, ", ")
	}
	fmt.Fprintf(w, "host %s\n  ranges:     %s\n  host IPs:   %s\n  namespaces: %s\n", host, list(b.Ranges), list(b.HostIPs), list(b.Namespaces))
	if len(b.Held) > 0 {
		fmt.Fprintf(w, "  held:       %s (deleted by an operator; released by the host's next report)\n", strings.Join(b.Held, ", "))
	}
}
