package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/spf13/cobra"
)

// DefaultStateDir is where a standalone agent keeps its objects unless
// told otherwise.
const DefaultStateDir = "/var/lib/bulkhead/agent"

// dataplaneKind builds one dataplane implementation for the namespace at
// netns ("" for the agent's own).
type dataplaneKind struct {
	about string
	open  func(netns string, log *slog.Logger) (dataplane.Dataplane, error)
}

// dataplanes are the implementations --dataplane chooses from.
var dataplanes = map[string]dataplaneKind{
	"nft": {
		about: "one nftables table in the host namespace, programmed through netlink",
		open: func(netns string, log *slog.Logger) (dataplane.Dataplane, error) {
			return nft.New(nft.Options{NetNS: netns, Logger: log})
		},
	},
	"userspace": {
		about: "judges in Go and enforces nothing in the kernel: for trying policies and for tests",
		open: func(string, *slog.Logger) (dataplane.Dataplane, error) {
			return dataplane.NewUserspace(), nil
		},
	},
}

func dataplaneNames() string {
	var names []string
	for n, k := range dataplanes {
		names = append(names, n+" ("+k.about+")")
	}
	sort.Strings(names)
	return strings.Join(names, "; ")
}

func agentCommand() *cobra.Command {
	var (
		standalone                 bool
		socket, stateDir, host, dp string
		netns, logLevel            string
		mf                         managedFlags
	)
	cmd := &cobra.Command{
		Use:   "agent --standalone | --manager URL [--join-token-file FILE --ca-hash H] [--socket PATH] [--state-dir DIR] [--host NAME]",
		Short: "Run the host agent: enforce the policy on this host",
		Long: `agent runs Bulkhead's host agent. With --standalone it needs no manager: it
keeps the objects applied to it in --state-dir, serves the local API on
--socket (mode 0600; only root and the agent's own user may call it), and
enforces the policy in the network namespace it runs in, which it treats as
the host. It stops on SIGINT or SIGTERM and leaves enforcement in the
kernel; a restarted agent adopts it. "bulkhead agent cleanup" removes it.

With --manager it follows a manager instead: it joins once with a one-time
join token, read from --join-token-file or $BULKHEAD_JOIN_TOKEN (the
client certificate stays in STATE-DIR/manager, 0600) and
then speaks mutual TLS only; it enforces the manager's policy, reports the
workloads attached here (the CNI plugin registers them on --socket) and
the revision it realized, and routes to the other hosts' workloads. With
the manager gone it keeps enforcing what it last had (docs/up.md).`,
		Example: `  sudo bulkhead agent --standalone --socket /run/bulkhead/agent.sock --state-dir /var/lib/bulkhead/agent
  sudo ip netns exec host1 bulkhead agent --standalone --socket /run/bulkhead/host1.sock --state-dir /tmp/host1
  sudo bulkhead agent --manager https://10.0.0.1:8443 --join-token-file /root/node-1.token --ca-hash sha256:...`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if standalone == (mf.manager != "") {
				return errors.New("agent: give --standalone (no manager: objects come on the socket) or --manager URL (follow a manager), one of the two")
			}
			kind, ok := dataplanes[dp]
			if !ok {
				return fmt.Errorf("agent: --dataplane %q: valid: %s", dp, dataplaneNames())
			}
			log, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			d, err := kind.open(netns, log)
			if err != nil {
				return err
			}
			opts := agent.Options{StateDir: stateDir, Socket: socket, Host: host, Dataplane: d, Logger: log}
			if mf.manager != "" {
				return runManagedAgent(cmd, mf, opts, netns)
			}
			return agent.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&standalone, "standalone", false, "run without a manager")
	f.StringVar(&socket, "socket", client.DefaultSocket, "unix socket of the local API; its directory is created")
	f.StringVar(&stateDir, "state-dir", DefaultStateDir, "directory for the objects and registered workloads (created, mode 0700)")
	f.StringVar(&host, "host", "", "this host's name (default: the system's host name)")
	f.StringVar(&dp, "dataplane", "nft", "dataplane: nft or userspace")
	f.StringVar(&netns, "netns", "", "network namespace path to enforce in (default: the agent's own)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	addManagerFlags(f, &mf)
	cmd.AddCommand(agentCleanupCommand(), agentDumpCommand(), agentStatusCommand(), agentCountersCommand())
	return cmd
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: valid: debug, info, warn, error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func agentStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show a running agent's state: revision, counts, kernel features, memory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "host:      %s\nrevision:  %d\npolicies:  %d\nworkloads: %d\nmemory:    %.1f MiB\n",
				st.Host, st.Revision, st.Policies, st.Workloads, float64(st.MemoryBytes)/(1<<20))
			if st.NetNS != nil {
				// Compare with `stat -L -c '%d %i' /proc/PID/ns/net` of the runtime.
				fmt.Fprintf(out, "netns:     net:[%d] (dev %d): workloads must be attached in it\n", st.NetNS.Ino, st.NetNS.Dev)
			}
			for _, k := range sortedKeys(st.Features) {
				fmt.Fprintf(out, "feature:   %s: %s\n", k, st.Features[k])
			}
			for _, k := range sortedKeys(st.Elements) {
				fmt.Fprintf(out, "elements:  %s: %d\n", k, st.Elements[k])
			}
			return nil
		},
	}
}

func agentCountersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "counters",
		Short: "Show what each rule decided on this host, as the kernel counted it",
		Long: `Show the dataplane's counters: packets and bytes of the connections each
rule decided (the new connections, not their later packets), each wall
denied, and the packets dropped because their source address was not their
interface's workload's.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			cs, err := c.Counters(cmd.Context())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "WHAT\tPACKETS\tBYTES")
			for _, k := range sortedKeys(cs.Rules) {
				fmt.Fprintf(w, "rule %s\t%d\t%d\n", k, cs.Rules[k].Packets, cs.Rules[k].Bytes)
			}
			for _, k := range sortedKeys(cs.Walls) {
				fmt.Fprintf(w, "wall %s\t%d\t%d\n", k, cs.Walls[k].Packets, cs.Walls[k].Bytes)
			}
			fmt.Fprintf(w, "spoofed\t%d\t%d\n", cs.Spoofed.Packets, cs.Spoofed.Bytes)
			if err := w.Flush(); err != nil {
				return err
			}
			return printEscalationCounters(cmd.OutOrStdout(), cs.Escalations)
		},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
