package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/ask"
	"github.com/spf13/cobra"
)

// startAsker opens a managed agent's escalate path on its nftables
// queue (internal/agent/ask); a userspace dataplane queues nothing, and
// gets none.
func startAsker(a *agent.Agent, mf managedFlags, credDir, netnsPath string, queues bool, log *slog.Logger) (*ask.Asker, error) {
	if !queues {
		return nil, nil
	}
	return ask.Start(ask.Options{Agent: a, URL: mf.manager, Dir: credDir, NetNS: netnsPath, Logger: log})
}

func escalationsCommand() *cobra.Command {
	var (
		follow bool
		state  string
		output string
	)
	cmd := &cobra.Command{
		Use:     "escalations [--follow] [--state held|decided] [-o table|json]",
		Aliases: []string{"escalation", "esc"},
		Short:   "List, follow, approve and deny the connections the policy escalated to the manager",
		Long: `escalations lists the connections that a policy rule with action escalate
held in a host's kernel and its agent asked the manager about, the newest
first: who asked, both ends, the escalating rule, and how it was decided —
by which decision rule, by which person, or by the hold's timeout — and how
long that took. With --follow it prints each as it is held and decided,
until interrupted. A held one waits for an operator:
"bulkhead escalations approve ID" lets it through, "deny ID" drops it (the
operator and admin roles; every decision is in the audit log).`,
		Example: `  bulkhead escalations
  bulkhead escalations --follow
  bulkhead escalations --state held -o json
  bulkhead escalations approve 3f2a9c1d5be0 --reason "month-end report"`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("escalations: -o %q: valid: table, json", output)
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if follow {
				w := escalationPrinter(out, output)
				return ignoreCanceled(c.FollowEscalations(cmd.Context(), state, w))
			}
			list, err := c.Escalations(cmd.Context(), state)
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(list)
			}
			return printEscalations(out, list.Items)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "print each escalation as it is held and decided, until interrupted")
	cmd.Flags().StringVar(&state, "state", "", "only held ones (waiting for an operator) or decided ones")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, or json (with --follow: one JSON object a line)")
	cmd.AddCommand(escalationAnswerCommand(true), escalationAnswerCommand(false))
	return cmd
}

func escalationAnswerCommand(approve bool) *cobra.Command {
	use, short := "deny ID", "Drop a held escalation's connection (operator, admin)"
	if approve {
		use, short = "approve ID", "Let a held escalation's connection through (operator, admin)"
	}
	var reason string
	cmd := &cobra.Command{
		Use: use + " [--reason TEXT]", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			answer := c.DenyEscalation
			if approve {
				answer = c.ApproveEscalation
			}
			e, err := answer(cmd.Context(), args[0], reason)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "escalation %s: %s (%s)\n", e.ID, e.Outcome, e.Reason)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, for the record and the audit log")
	return cmd
}

func ignoreCanceled(err error) error {
	if err != nil && strings.Contains(err.Error(), "context canceled") {
		return nil
	}
	return err
}

// escalationPrinter prints followed escalations, one line (or JSON
// object) each.
func escalationPrinter(out io.Writer, output string) func(api.Escalation) error {
	enc := json.NewEncoder(out)
	return func(e api.Escalation) error {
		if output == "json" {
			return enc.Encode(e)
		}
		_, err := fmt.Fprintln(out, escalationLine(e))
		return err
	}
}

func endpointString(e api.EscalationEndpoint) string {
	if e.Name != "" {
		return e.Namespace + "/" + e.Name
	}
	return e.Address
}

func escalationRules(e api.Escalation) string {
	var rs []string
	for _, r := range e.Rules {
		s := r.Policy + "/" + r.Rule
		if r.Namespace != "" {
			s = r.Namespace + "/" + s
		}
		rs = append(rs, s)
	}
	if e.ConflictClass != "" {
		rs = append(rs, "conflict class "+e.ConflictClass)
	}
	return strings.Join(rs, ",")
}

func decidedBy(e api.Escalation) string {
	switch {
	case e.State == api.EscalationHeld:
		return fmt.Sprintf("waiting for an operator until %s, then %s", e.Deadline.Local().Format(time.TimeOnly), e.OnTimeout)
	case e.By != "":
		return e.By
	case e.Rule != "":
		return "rule " + e.Rule
	}
	return e.Reason
}

func escalationLine(e api.Escalation) string {
	what := e.Outcome
	if e.State == api.EscalationHeld {
		what = "HELD"
	}
	return fmt.Sprintf("%s %s %s %s -> %s %s/%d (%s): %s by %s", e.Asked.Local().Format(time.TimeOnly), e.ID, e.Host,
		endpointString(e.Source), endpointString(e.Destination), e.Protocol, e.Port, escalationRules(e), what, decidedBy(e))
}

func printEscalations(out io.Writer, items []api.Escalation) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tASKED\tHOST\tFROM\tTO\tRULE\tSTATE\tOUTCOME\tBY\tTOOK")
	for _, e := range items {
		took := "-"
		if e.Decided != nil {
			took = fmt.Sprintf("%.1fms", e.TookMs)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Asked.Local().Format(time.DateTime), e.Host,
			endpointString(e.Source), fmt.Sprintf("%s %s/%d", endpointString(e.Destination), e.Protocol, e.Port),
			escalationRules(e), e.State, dashIfEmpty(e.Outcome), decidedBy(e), took)
	}
	return w.Flush()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// printEscalationCounters prints an agent's escalate path counters.
func printEscalationCounters(out io.Writer, c *api.EscalationCounters) error {
	if c == nil {
		return nil
	}
	fmt.Fprintf(out, "escalations: queued %d, asked %d, allowed %d, denied %d (remembered %d, copies %d, timed out %d), replaced %d, held now %d, remembered now %d\n",
		c.Queued, c.Asked, c.Allowed, c.Denied, c.FromMemory, c.Settled, c.TimedOut, c.Replaced, c.Pending, c.Remembered)
	causes := make([]string, 0, len(c.FailedClosed))
	for k := range c.FailedClosed {
		causes = append(causes, k)
	}
	sort.Strings(causes)
	for _, k := range causes {
		fmt.Fprintf(out, "escalations failed closed: %s %d\n", k, c.FailedClosed[k])
	}
	return nil
}
