package cli

import (
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/bulkhead-dev/bulkhead/api"
)

func alertsCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "alerts [-o json]",
		Short: "Show the alerts the manager raised: suspicious flows, and what it found wrong with its store",
		Long: `alerts lists this manager's alerts since it started, the latest first: scans,
new edges between namespaces, traffic at new hours and rises in denials
found in the flows the agents send (docs/flows.md), and what the manager
found wrong with its own store or its clients.`,
		Example: `  bulkhead alerts
  bulkhead alerts -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "" && output != "json" && output != "table" {
				return fmt.Errorf("alerts: -o %q: valid: table, json", output)
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			var list api.AlertList
			if err := c.Do(cmd.Context(), "GET", "/v1/alerts", nil, &list); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "LAST\tKIND\tOBJECT\tCOUNT\tMESSAGE")
			for _, a := range list.Items {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", a.Last.Format("2006-01-02T15:04:05Z"), a.Kind, a.Object, a.Count, a.Message)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "table or json")
	return cmd
}
