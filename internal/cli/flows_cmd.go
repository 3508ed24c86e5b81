package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/spf13/cobra"
)

func flowsCommand() *cobra.Command {
	var (
		workload, namespace, host, verdict, rule, output string
		port, limit                                      int
		since                                            time.Duration
		from, until                                      string
		follow                                           bool
	)
	cmd := &cobra.Command{
		Use:   "flows [--workload W] [--namespace NS] [--verdict V] [--rule ID] [--port N] [--since 1h | --from T] [--until T] [--follow] [-o json]",
		Short: "Show the flows the agents saw, with the rule that decided each",
		Long: `flows asks the manager for the newest flows that match every filter given
(--workload and --namespace match either end, --port the destination),
oldest first, at most --limit. --since is a duration back from now, --from
and --until times in RFC 3339. --follow goes on printing each new flow
that matches as it arrives, until interrupted. "flows counts" shows what
the agents reported lost and suppressed, and each rule's hits.`,
		Example: `  bulkhead flows --workload web --since 1h
  bulkhead flows --verdict deny --follow
  bulkhead flows --namespace app --port 5432 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"workload": workload, "namespace": namespace, "host": host,
				"verdict": verdict, "rule": rule, "until": until} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if port != 0 {
				q.Set("port", strconv.Itoa(port))
			}
			if limit != 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			switch {
			case from != "" && since != 0:
				return fmt.Errorf("flows: give --since or --from, not both")
			case from != "":
				q.Set("since", from)
			case since != 0:
				q.Set("since", time.Now().Add(-since).UTC().Format(time.RFC3339Nano))
			}
			if output != "" && output != "json" && output != "table" {
				return fmt.Errorf("flows: -o %q: valid: table, json", output)
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if follow {
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				enc := json.NewEncoder(out)
				return c.FollowFlows(cmd.Context(), q, func(f api.Flow) error {
					if output == "json" {
						return enc.Encode(f)
					}
					printFlow(tw, &f)
					return tw.Flush()
				})
			}
			list, err := c.Flows(cmd.Context(), q)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			printFlows(out, list.Flows)
			if list.Truncated {
				fmt.Fprintf(cmd.ErrOrStderr(), "(the newest %d; more matched: narrow the filters or raise --limit)\n", len(list.Flows))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&workload, "workload", "", "either end's workload")
	f.StringVar(&namespace, "namespace", "", "either end's namespace")
	f.StringVar(&host, "host", "", "the host that saw it")
	f.StringVar(&verdict, "verdict", "", "allow, deny, reject, escalate, would-deny, wall, spoofed or no-entry")
	f.StringVar(&rule, "rule", "", "the rule that decided (its id)")
	f.IntVar(&port, "port", 0, "the destination port")
	f.DurationVar(&since, "since", 0, "flows that ended within this long before now (e.g. 1h)")
	f.StringVar(&from, "from", "", "flows that ended at or after this time (RFC 3339)")
	f.StringVar(&until, "until", "", "flows that ended before this time (RFC 3339)")
	f.IntVar(&limit, "limit", 0, "at most this many, the newest (default 1000, at most 10000)")
	f.BoolVar(&follow, "follow", false, "go on printing new flows as they arrive")
	f.StringVarP(&output, "output", "o", "", "table or json")
	cmd.AddCommand(flowCountsCommand())
	return cmd
}

func flowCountsCommand() *cobra.Command {
	var output string
	return &cobra.Command{
		Use: "counts [-o json]", Short: "Show what was lost and suppressed by host and cause, and each rule's hits",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			n, err := c.FlowCounts(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(n)
			}
			fmt.Fprintf(out, "stored %d flows in %d batches (%d redelivered, counted once); dropped by age %d, by size %d\n",
				n.Stored, n.Batches, n.Duplicates, n.Expired, n.Evicted)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RULE\tFLOWS\tSUPPRESSED")
			for _, r := range flowKeys(n.Rules) {
				fmt.Fprintf(tw, "%s\t%d\t%d\n", r, n.Rules[r].Flows, n.Rules[r].Suppressed)
			}
			tw.Flush()
			for _, h := range flowKeys(n.Lost) {
				for _, cause := range flowKeys(n.Lost[h]) {
					fmt.Fprintf(out, "lost on %s: %d %s\n", h, n.Lost[h][cause], cause)
				}
			}
			return nil
		},
	}
}

func flowKeys[M ~map[K]V, K ~string, V any](m M) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func printFlows(w io.Writer, fs []api.Flow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "END\tVERDICT\tSOURCE\tDESTINATION\tPROTO\tRULE\tHOST\tPACKETS\tBYTES")
	for i := range fs {
		printFlow(tw, &fs[i])
	}
	tw.Flush()
}

func printFlow(tw io.Writer, f *api.Flow) {
	end := f.End
	if end.IsZero() {
		end = f.Start
	}
	fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\n", end.Local().Format("2006-01-02 15:04:05"), f.Verdict,
		flowEnd(f.Src, false), flowEnd(f.Dst, true), protoName(f.Proto), dashIfEmpty(f.Rule), f.Host,
		f.Orig.Packets+f.Reply.Packets, f.Orig.Bytes+f.Reply.Bytes)
}

func flowEnd(e flows.Endpoint, port bool) string {
	s := e.Addr.String()
	if e.Workload != "" {
		s = e.Namespace + "/" + e.Workload + " (" + s + ")"
	}
	if port && e.Port != 0 {
		s += ":" + strconv.Itoa(int(e.Port))
	}
	return s
}

func protoName(p uint8) string {
	switch p {
	case 1:
		return "icmp"
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}
