package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/spf13/cobra"
)

// probeInput is one probe of a --probes file.
type probeInput struct {
	From     string          `json:"from"`
	To       string          `json:"to"`
	Port     json.RawMessage `json:"port"`
	Protocol string          `json:"protocol"`
	Code     *int            `json:"code,omitempty"`
}

// verdictLine is one line of `verdicts` output: the probe, then the verdict.
type verdictLine struct {
	From     string          `json:"from"`
	To       string          `json:"to"`
	Port     json.RawMessage `json:"port"`
	Protocol string          `json:"protocol"`
	policy.Report
}

func verdictsCommand() *cobra.Command {
	var (
		in     inputs
		probes string
	)
	cmd := &cobra.Command{
		Use:   "verdicts --inventory F --policy P [--policy P ...] --probes F",
		Short: "Judge many connections at once: a what-if matrix, one JSON line per probe",
		Long: `verdicts reads probes (a JSON array of {"from", "to", "port", "protocol"},
each endpoint namespace/name or an IP address) and prints, one JSON object per
line and in order, the probe's fields, "verdict" (allow, deny or escalate) and
the deciding rule on each side. It exits 0 when every verdict was computed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if probes == "" {
				return fmt.Errorf("--probes is required: a JSON array of {\"from\", \"to\", \"port\", \"protocol\"}")
			}
			_, e, err := in.load()
			if err != nil {
				return err
			}
			list, err := readProbes(probes)
			if err != nil {
				return err
			}
			lines := make([]verdictLine, len(list))
			for i, p := range list {
				probe, err := p.resolve(e)
				if err != nil {
					return fmt.Errorf("%s: probe %d: %w", probes, i, err)
				}
				lines[i] = verdictLine{From: p.From, To: p.To, Port: p.Port, Protocol: p.Protocol,
					Report: policy.NewReport(e.Evaluate(probe))}
			}
			w := bufio.NewWriter(cmd.OutOrStdout())
			enc := json.NewEncoder(w)
			for _, l := range lines {
				if err := enc.Encode(l); err != nil {
					return err
				}
			}
			return w.Flush()
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&probes, "probes", "", "probes file: a JSON array of {from, to, port, protocol} (- for standard input)")
	return cmd
}

func readProbes(name string) ([]probeInput, error) {
	var r io.Reader = os.Stdin
	if name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var list []probeInput
	if err := dec.Decode(&list); err != nil {
		return nil, fmt.Errorf("%s: want a JSON array of {\"from\", \"to\", \"port\", \"protocol\"}: %w", name, err)
	}
	return list, nil
}

func (p probeInput) resolve(e *policy.Engine) (policy.Probe, error) {
	name := p.Protocol
	if name == "" {
		name = "tcp"
	}
	proto, ok := policy.ParseProtocol(name)
	if !ok {
		return policy.Probe{}, fmt.Errorf("protocol %q: valid: tcp, udp, sctp, icmp, icmpv6", p.Protocol)
	}
	num := string(bytes.Trim(p.Port, `"`))
	if _, err := strconv.Atoi(num); err != nil && len(p.Port) > 0 && proto.HasPorts() {
		return policy.Probe{}, fmt.Errorf("port %s: want a number 1-65535", p.Port)
	}
	code := -1
	if p.Code != nil {
		code = *p.Code
	}
	proto, port, err := portNumber(proto, num, code)
	if err != nil {
		return policy.Probe{}, err
	}
	return newProbe(e, p.From, p.To, proto, port)
}
