package cli

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

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
		Use:   "explain --policy P [--inventory F] --from ns/name|IP --to ns/name|IP --port 5432/tcp",
		Short: "Explain the verdict on one connection: which rule, and why",
		Example: `  bulkhead explain --inventory examples/inventory.yaml --policy examples/policies \
      --from trading/buy-signal --to trading/sell-db --port 5432/tcp`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "text" && output != "json" {
				return fmt.Errorf("-o %q: valid formats are text and json", output)
			}
			_, e, err := in.load()
			if err != nil {
				return err
			}
			proto, p, err := parsePort(port)
			if err != nil {
				return err
			}
			probe, err := newProbe(e, from, to, proto, p)
			if err != nil {
				return err
			}
			v := e.Evaluate(probe)
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(policy.NewReport(v))
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
