package cli

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/up"
	"github.com/spf13/cobra"
)

type upFlags struct {
	demo       bool
	cleanup    bool
	dataDir    string
	listen     string
	host       string
	socket     string
	netns      string
	demoPrefix string
	demoSubnet string
	demoEvery  time.Duration
	logLevel   string
}

// upCommand is `bulkhead up`: a manager and this host's agent in one
// process, the CLI configured, and with --demo a trading floor to watch.
func upCommand() *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up [--demo] [--data-dir DIR] [--listen ADDR]",
		Short: "Run Bulkhead on this machine: a manager and this host's agent in one process",
		Long: `up starts a manager with the embedded store and an agent for this host in
one process (the agent joins its own manager), installs a default-deny
baseline the first time, and writes the CLI's configuration (server, CA,
an admin token) so that "bulkhead get workloads" works in another
terminal at once.

With --demo it attaches a trading floor as workloads in network
namespaces (bhdemo-*): buy-side and sell-side signals and databases with a
wall between the sides, a payment processor with two databases in a
conflict class, a web front end; their clients try allowed and denied
connections every few seconds, printed as they happen with what the
kernel logged about them. Ctrl-C stops it and removes the demo; the
host's enforcement stays unless --cleanup. docs/up.md explains it.`,
		Example: `  sudo bulkhead up --demo
  bulkhead get workloads            # in another terminal
  sudo bulkhead up --data-dir /var/lib/bulkhead --listen 0.0.0.0:8443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runUp(cmd, f) },
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.demo, "demo", false, "attach the demo trading floor and show its connections")
	fl.BoolVar(&f.cleanup, "cleanup", false, "on stop, also remove Bulkhead's nftables table (enforcement ends)")
	fl.StringVar(&f.dataDir, "data-dir", "/var/lib/bulkhead", "the manager's store and files, and the agent's state (agent/)")
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8443", "the manager's address")
	fl.StringVar(&f.host, "host", "", "this host's name (default: the system's)")
	fl.StringVar(&f.socket, "socket", client.DefaultSocket, "the agent's local socket, for the CNI plugin and `bulkhead agent status` (\"\": none)")
	fl.StringVar(&f.netns, "netns", "", "network namespace path to treat as this host (default: this process's); for tests and trials")
	fl.StringVar(&f.demoPrefix, "demo-prefix", "bhdemo-", "prefix of the demo's namespace names")
	fl.StringVar(&f.demoSubnet, "demo-subnet", "10.213.0.0/24", "the demo workloads' addresses")
	fl.DurationVar(&f.demoEvery, "demo-every", 5*time.Second, "how often the demo's clients try their connections")
	fl.StringVar(&f.logLevel, "log-level", "warn", "the components' logs on stderr: debug, info, warn or error")
	return cmd
}

func runUp(cmd *cobra.Command, f upFlags) error {
	stderr, out := cmd.ErrOrStderr(), cmd.OutOrStdout()
	if err := up.CheckPrivileges(); err != nil {
		fmt.Fprintf(stderr, "%v\n  try: sudo bulkhead up --demo\n", err)
		return &ExitError{Code: 1}
	}
	log, err := newLogger(stderr, f.logLevel)
	if err != nil {
		return err
	}
	subnet, err := netip.ParsePrefix(f.demoSubnet)
	if err != nil || !subnet.Addr().Is4() || subnet.Bits() > 24 {
		return fmt.Errorf("up: --demo-subnet %q: want an IPv4 prefix of /24 or larger, such as 10.213.0.0/24", f.demoSubnet)
	}
	fmt.Fprintln(out, "starting Bulkhead: a manager and this host's agent…")
	u, err := up.Start(cmd.Context(), up.Options{DataDir: f.dataDir, Listen: f.listen, NetNS: f.netns, Socket: f.socket,
		Host: f.host, Demo: f.demo, DemoPrefix: f.demoPrefix, DemoSubnet: subnet, DemoEvery: f.demoEvery,
		Version: Version, Out: out, Logger: log})
	if err != nil {
		return err
	}
	configs, err := writeUpConfig(cmd, u)
	if err == nil {
		printUpBanner(out, u, f, configs)
		u.StartClients()
		<-cmd.Context().Done()
		fmt.Fprintln(out, "\nstopping…")
	}
	errs := []error{err, u.Close()}
	if f.cleanup {
		errs = append(errs, nft.Cleanup(f.netns))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	switch {
	case f.cleanup:
		fmt.Fprintln(out, "stopped; the demo and Bulkhead's nftables table are removed")
	case f.demo:
		fmt.Fprintln(out, "stopped; the demo is removed. The host's policy stays enforced: `bulkhead up` again resumes it, `bulkhead agent cleanup` removes it")
	default:
		fmt.Fprintln(out, "stopped. The host's policy stays enforced: `bulkhead up` again resumes it, `bulkhead agent cleanup` removes it")
	}
	return nil
}

// writeUpConfig writes the CLI's configuration (and the CA beside it),
// and, under sudo, the invoking user's too: it returns the files written.
func writeUpConfig(cmd *cobra.Command, u *up.Up) ([]string, error) {
	path := ""
	if fl := cmd.Flags().Lookup("config"); fl != nil {
		path = fl.Value.String()
	}
	explicit := path != "" || os.Getenv(configEnv) != ""
	if path == "" {
		path = DefaultConfigPath()
	}
	written := []string{path}
	if err := saveUpConfig(path, u, -1, -1); err != nil {
		return nil, err
	}
	uid, uerr := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, gerr := strconv.Atoi(os.Getenv("SUDO_GID"))
	if explicit || uerr != nil || gerr != nil || uid == 0 {
		return written, nil
	}
	usr, err := user.LookupId(strconv.Itoa(uid))
	if err != nil || usr.HomeDir == "" {
		return written, nil
	}
	userPath := filepath.Join(usr.HomeDir, ".config", "bulkhead", "config.yaml")
	if userPath == path {
		return written, nil
	}
	if err := saveUpConfig(userPath, u, uid, gid); err != nil {
		return nil, fmt.Errorf("up: write the configuration of user %s: %w", usr.Username, err)
	}
	return append(written, userPath), nil
}

// saveUpConfig writes one configuration with the CA next to it, owned by
// uid:gid when they are not -1.
func saveUpConfig(path string, u *up.Up, uid, gid int) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, u.CA(), 0o644); err != nil {
		return fmt.Errorf("up: %w", err)
	}
	if err := (ClientConfig{Server: u.URL(), CA: ca, Token: u.AdminToken()}).Save(path); err != nil {
		return err
	}
	if uid >= 0 {
		for _, p := range []string{filepath.Dir(dir), dir, ca, path} {
			if err := os.Chown(p, uid, gid); err != nil {
				return fmt.Errorf("up: %w", err)
			}
		}
	}
	return nil
}

func printUpBanner(out io.Writer, u *up.Up, f upFlags, configs []string) {
	fmt.Fprintf(out, "\nBulkhead is up on host %s (ready in %s)\n", u.Host(), u.Ready().Round(time.Millisecond))
	fmt.Fprintf(out, "  API:      %s  (JSON over HTTPS; api/openapi.yaml describes it)\n", u.URL())
	fmt.Fprintf(out, "  console:  not yet: the web console is a later release; the CLI and the API work now\n")
	fmt.Fprintf(out, "  CLI:      configured with an admin token in %s\n", configs[0])
	for _, c := range configs[1:] {
		fmt.Fprintf(out, "            and for you in %s\n", c)
	}
	fmt.Fprintf(out, "            try, in another terminal: bulkhead get workloads; bulkhead get hosts; bulkhead get policies\n")
	where := "this host's network namespace"
	if f.netns != "" {
		where = "namespace " + f.netns
	}
	fmt.Fprintf(out, "  agent:    enforcing in nftables (table inet %s) in %s", nft.TableName, where)
	if f.socket != "" {
		fmt.Fprintf(out, "; local API unix://%s", f.socket)
	}
	fmt.Fprintln(out)
	if !f.demo {
		fmt.Fprintf(out, "  policy:   default-deny baseline; add yours with bulkhead apply -f FILE\n\nCtrl-C stops.\n")
		return
	}
	fmt.Fprintf(out, "  policy:   the demo trading floor (examples/demo): default deny, wall buy-sell, conflict class payment-datasets, escalations decided on the manager\n")
	fmt.Fprintf(out, "  demo:     workloads, each in its own network namespace:\n%s", u.Demo())
	fmt.Fprintf(out, "\nConnections as the demo's clients try them (every %s); Ctrl-C stops and removes the demo:\n", f.demoEvery)
}
