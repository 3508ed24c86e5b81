package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/spf13/cobra"
)

func explainCommand() *cobra.Command {
	var (
		in             inputs
		from, to, port string
		output         string
	)
	cmd := &cobra.Command{
		Use:   "explain [FROM TO] --port 5432/tcp [-f P --inventory F | --agent unix://PATH]",
		Short: "Explain the verdict on one connection: which rule, and why",
		Long: `explain judges one connection from FROM to TO (namespace/name or an IP
address, as arguments or --from and --to) and says which rule of which
policy decided each side, or which wall forbids it. With -f it judges the
files given (offline); without, it asks the agent (--agent, $BULKHEAD_AGENT
or the default socket) about the objects and workloads in force there.`,
		Example: `  bulkhead explain --inventory examples/inventory.yaml --policy examples/policies \
      --from trading/buy-signal --to trading/sell-db --port 5432/tcp
  bulkhead --agent unix:///run/bulkhead/agent.sock explain trading/buy-signal trading/sell-db --port 5432/tcp`,
		Args: cobra.MatchAll(cobra.MaximumNArgs(2), func(_ *cobra.Command, args []string) error {
			if len(args) == 1 {
				return fmt.Errorf("give both FROM and TO (or --from and --to)")
			}
			return nil
		}),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: valid formats are text and json", output)
			}
			if len(args) == 2 {
				if from != "" || to != "" {
					return fmt.Errorf("give FROM and TO either as arguments or as --from and --to, not both")
				}
				from, to = args[0], args[1]
			}
			proto, p, err := parsePort(port)
			if err != nil {
				return err
			}
			if len(in.policies) == 0 {
				if in.inventory != "" {
					return fmt.Errorf("--inventory needs --policy (-f): the agent judges with its own workloads")
				}
				return explainRemote(cmd, from, to, proto, p, output)
			}
			_, e, err := in.load()
			if err != nil {
				return err
			}
			probe, err := newProbe(e, from, to, proto, p)
			if err != nil {
				return err
			}
			v := e.Evaluate(probe)
			if output == "json" {
				return writeReport(cmd.OutOrStdout(), policy.NewReport(v))
			}
			policy.WriteText(cmd.OutOrStdout(), probe, v)
			return nil
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&from, "from", "", "source: namespace/name or an IP address")
	cmd.Flags().StringVar(&to, "to", "", "destination: namespace/name or an IP address")
	cmd.Flags().StringVar(&port, "port", "", "destination port and protocol: 5432/tcp, 53/udp, 8/icmp (ICMP type)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func writeReport(w io.Writer, r policy.Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// explainRemote asks the agent to judge the connection against its state.
func explainRemote(cmd *cobra.Command, from, to string, proto policy.Protocol, port int, output string) error {
	if from == "" || to == "" {
		return fmt.Errorf("both FROM and TO are required (namespace/name or an IP address)")
	}
	c, err := agentClient(cmd)
	if err != nil {
		return err
	}
	req := api.ExplainRequest{From: from, To: to, Port: port, Protocol: proto.String()}
	if !proto.HasPorts() {
		req.Port, req.Code = port>>8, port&0xff
	}
	raw, err := c.Explain(cmd.Context(), req)
	if err != nil {
		return err
	}
	var res agent.ExplainResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return fmt.Errorf("explain: the agent's answer does not read: %w", err)
	}
	if output == "json" {
		return writeReport(cmd.OutOrStdout(), res.Report)
	}
	_, err = io.WriteString(cmd.OutOrStdout(), res.Text)
	return err
}

func newProbe(e *policy.Engine, from, to string, proto policy.Protocol, port int) (policy.Probe, error) {
	if from == "" || to == "" {
		return policy.Probe{}, fmt.Errorf("both --from and --to are required")
	}
	f, err := e.Endpoint(from)
	if err != nil {
		return policy.Probe{}, fmt.Errorf("from: %w", err)
	}
	t, err := e.Endpoint(to)
	if err != nil {
		return policy.Probe{}, fmt.Errorf("to: %w", err)
	}
	return policy.Probe{From: f, To: t, Protocol: proto, Port: port}, nil
}

// parsePort reads PORT/PROTOCOL (protocol tcp by default). For icmp and
// icmpv6 the number is the ICMP type.
func parsePort(s string) (policy.Protocol, int, error) {
	num, name, found := strings.Cut(s, "/")
	if !found {
		name = "tcp"
	}
	proto, ok := policy.ParseProtocol(name)
	if !ok {
		return 0, 0, fmt.Errorf("--port %q: unknown protocol %q; valid: tcp, udp, sctp, icmp, icmpv6", s, name)
	}
	return portNumber(proto, num, -1)
}

// portNumber checks a port (or an ICMP type with code) and returns the
// value a Probe carries.
func portNumber(proto policy.Protocol, num string, code int) (policy.Protocol, int, error) {
	n, err := strconv.Atoi(num)
	if !proto.HasPorts() {
		if num == "" {
			n, err = 0, nil
		}
		if err != nil || n < 0 || n > 255 || code > 255 {
			return 0, 0, fmt.Errorf("ICMP type %q: want 0-255 (and a code 0-255)", num)
		}
		return proto, n<<8 | max(code, 0), nil
	}
	if err != nil || n < 1 || n > 65535 {
		return 0, 0, fmt.Errorf("port %q: want a number 1-65535", num)
	}
	return proto, n, nil
}
