package cli

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/feed"
	"github.com/bulkhead-dev/bulkhead/internal/dataplane/nft"
	"github.com/bulkhead-dev/bulkhead/internal/flows"
	"github.com/bulkhead-dev/bulkhead/internal/netns"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// managedFlags are the flags of `bulkhead agent --manager`.
type managedFlags struct {
	manager, joinToken, joinTokenFile, caHash, hostIP string
	routes                                            bool
}

// joinTokenEnv names the environment variable a join token may come in,
// which, unlike a flag's value, other users cannot read in ps.
const joinTokenEnv = "BULKHEAD_JOIN_TOKEN"

// joinToken returns the join token from --join-token-file, $BULKHEAD_JOIN_TOKEN
// or --join-token (at most one of them), warning on warn for the last: a
// command line is visible to every user of the host.
func (mf managedFlags) token(warn io.Writer) (string, error) {
	env := os.Getenv(joinTokenEnv)
	given := 0
	for _, s := range []string{mf.joinToken, mf.joinTokenFile, env} {
		if s != "" {
			given++
		}
	}
	switch {
	case given > 1:
		return "", fmt.Errorf("agent: give the join token once: --join-token-file FILE, or $%s, or --join-token", joinTokenEnv)
	case mf.joinTokenFile != "":
		data, err := os.ReadFile(mf.joinTokenFile)
		if err != nil {
			return "", fmt.Errorf("agent: --join-token-file: %w", err)
		}
		tok := strings.TrimSpace(string(data))
		if tok == "" {
			return "", fmt.Errorf("agent: --join-token-file %s is empty", mf.joinTokenFile)
		}
		return tok, nil
	case env != "":
		return strings.TrimSpace(env), nil
	case mf.joinToken != "":
		fmt.Fprintf(warn, "warning: --join-token shows the token to every user of this host (ps); use --join-token-file FILE or $%s\n", joinTokenEnv)
	}
	return mf.joinToken, nil
}

func addManagerFlags(f *pflag.FlagSet, mf *managedFlags) {
	f.StringVar(&mf.manager, "manager", "", "follow the manager at https://HOST:PORT (instead of --standalone)")
	f.StringVar(&mf.joinTokenFile, "join-token-file", "", "read the one-time join token (bulkhead token create --join --host NAME) from this file; needed only the first time (or $"+joinTokenEnv+")")
	f.StringVar(&mf.joinToken, "join-token", "", "the one-time join token itself; visible in ps: prefer --join-token-file or $"+joinTokenEnv)
	f.StringVar(&mf.caHash, "ca-hash", "", "the manager's CA hash (sha256:…, printed with the join token), to trust it when joining (or --ca FILE)")
	f.StringVar(&mf.hostIP, "host-ip", "", "this host's underlay address, which the other hosts route this host's workloads through (default: the address this host reaches the manager from, unless that is loopback)")
	f.BoolVar(&mf.routes, "routes", true, "route to the other hosts' workloads through their underlay addresses")
}

// runManagedAgent joins the manager once (the credentials stay in
// STATE-DIR/manager), then runs the agent following it until the
// command's context ends.
func runManagedAgent(cmd *cobra.Command, mf managedFlags, opts agent.Options, netnsPath string) (err error) {
	ctx := cmd.Context()
	defer func() {
		if err != nil && opts.Dataplane != nil {
			opts.Dataplane.Close()
		}
	}()
	var ca []byte
	if fl := cmd.Flags().Lookup("ca"); fl != nil && fl.Value.String() != "" { // the manager's CA (a global flag)
		if ca, err = os.ReadFile(fl.Value.String()); err != nil {
			return fmt.Errorf("agent: --ca: %w", err)
		}
	}
	if opts.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("agent: host name: %w (give one with --host)", err)
		}
		opts.Host = strings.ToLower(h)
	}
	credDir := filepath.Join(opts.StateDir, "manager")
	token, err := mf.token(cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	creds, err := feed.Join(ctx, credDir, mf.manager, ca, mf.caHash, token, opts.Host)
	if err != nil {
		return err
	}
	hostIP, err := underlayAddr(mf, netnsPath)
	if err != nil {
		return err
	}
	opts.Host, opts.Manager = creds.Host, mf.manager
	_, queues := opts.Dataplane.(*nft.Dataplane)            // the nftables dataplane queues escalations
	counters, nftDP := opts.Dataplane.(flows.CounterSource) // the nft dataplane: collect its flows
	a, err := agent.Start(ctx, opts)
	opts.Dataplane = nil // the agent owns it now, or has closed it
	if err != nil {
		return err
	}
	fo := feed.Options{Agent: a, URL: mf.manager, Dir: credDir, HostIP: hostIP, Version: Version, Logger: opts.Logger}
	if mf.routes {
		fo.Routes = feed.NewRoutes(netnsPath, opts.Logger)
	}
	f, err := feed.Start(ctx, fo)
	if err != nil {
		a.Close()
		return err
	}
	asker, err := startAsker(a, mf, credDir, netnsPath, queues, opts.Logger)
	if err != nil {
		f.Close()
		a.Close()
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "agent for host %s follows %s (underlay address %s)\n", creds.Host, mf.manager, orNone(hostIP))
	if nftDP {
		c, err := feed.StartFlows(feed.FlowOptions{Agent: a, URL: mf.manager, Dir: credDir, NetNS: netnsPath,
			Counters: counters, Logger: opts.Logger})
		if err != nil {
			if asker != nil {
				asker.Close()
			}
			f.Close()
			a.Close()
			return err
		}
		defer c.Close() // after the agent: what was read is delivered or spooled
	}
	<-ctx.Done()
	if asker != nil {
		asker.Close()
	}
	f.Close()
	return a.Close()
}

// underlayAddr is --host-ip, or the address this host (in netnsPath)
// would reach the manager from; none when that is loopback.
func underlayAddr(mf managedFlags, netnsPath string) (netip.Addr, error) {
	if mf.hostIP != "" {
		a, err := netip.ParseAddr(mf.hostIP)
		if err != nil || !a.IsGlobalUnicast() {
			return netip.Addr{}, fmt.Errorf("agent: --host-ip %q: want this host's unicast underlay address", mf.hostIP)
		}
		return a, nil
	}
	u, err := url.Parse(mf.manager)
	if err != nil || u.Host == "" {
		return netip.Addr{}, fmt.Errorf("agent: --manager %q: want https://HOST:PORT", mf.manager)
	}
	var local netip.Addr
	probe := func() error {
		// A UDP "connection" sends nothing; it asks the kernel for the route.
		c, err := net.Dial("udp", u.Host)
		if err != nil {
			return err
		}
		defer c.Close()
		local = c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		return nil
	}
	if netnsPath != "" {
		err = netns.DoPath(netnsPath, probe)
	} else {
		err = probe()
	}
	if err != nil || local.IsLoopback() || !local.IsGlobalUnicast() {
		return netip.Addr{}, nil
	}
	return local, nil
}

func orNone(a netip.Addr) string {
	if !a.IsValid() {
		return "none: single host, or give --host-ip"
	}
	return a.String()
}
