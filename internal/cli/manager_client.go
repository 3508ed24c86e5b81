package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/manager/client"
	"github.com/bulkhead-dev/bulkhead/internal/objects"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// RegisterManagerCommands adds the manager and its client commands to
// root, with the flags that name a manager (--server, --token, --ca,
// --config).
func RegisterManagerCommands(root *cobra.Command) {
	addServerFlags(root)
	root.AddCommand(NewManagerCommand(), loginCommand(), tokenCommand(), certificateCommand(), hostCommand(),
		revisionsCommand(), auditCommand(), escalationsCommand(), flowsCommand(), alertsCommand())
}

func loginCommand() *cobra.Command {
	var tokenFile string
	cmd := &cobra.Command{
		Use:   "login --server URL --ca FILE (--token T | --token-file FILE)",
		Short: "Write the CLI's configuration: which manager to talk to, and the token to use",
		Long: `login checks that the manager answers with the token given, then writes the
configuration file (~/.config/bulkhead/config.yaml, 0600, or --config)
that every command talking to a manager reads.`,
		Example: `  bulkhead login --server https://127.0.0.1:8443 --ca /var/lib/bulkhead/ca.crt --token-file /var/lib/bulkhead/admin.token`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverConfig(cmd)
			if err != nil {
				return err
			}
			if tokenFile != "" {
				data, err := os.ReadFile(tokenFile)
				if err != nil {
					return err
				}
				c.Token = strings.TrimSpace(string(data))
				_ = cmd.Flags().Set("token", c.Token)
			}
			cl, err := serverClient(cmd)
			if err != nil {
				return err
			}
			if _, err := cl.RevisionsPage(cmd.Context(), 1, ""); err != nil {
				return fmt.Errorf("the manager refused: %w", err)
			}
			path, _ := cmd.Flags().GetString("config")
			if path == "" {
				path = DefaultConfigPath()
			}
			if err := c.Save(path); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "logged in to %s; configuration written to %s\n", c.Server, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&tokenFile, "token-file", "", "read the token from this file")
	return cmd
}

func tokenCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke API tokens and join tokens (admin)"}
	var (
		role, host string
		join       bool
		ttl        time.Duration
	)
	create := &cobra.Command{
		Use:   "create [--role ROLE] NAME | create --join --host NAME [--ttl 1h]",
		Short: "Create an API token, or a one-time join token for a host's agent",
		Long: `create makes an API token with a role — admin (everything), operator
(read, and act on workloads) or auditor (read, including the audit log) —
and prints its secret once: the manager keeps only its SHA-256. With --join
it makes a one-time join token for one host's agent instead, valid for
--ttl, and prints it with the CA hash the agent checks the manager by.`,
		Example: `  bulkhead token create --role auditor alice
  bulkhead token create --join --host node-1 --ttl 15m`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if join {
				if host == "" || len(args) > 0 {
					return fmt.Errorf("a join token is for one host: pass --host NAME and no other argument")
				}
				jt, err := c.CreateJoinToken(cmd.Context(), host, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "join token %s for host %s (one use, expires %s):\n%s\nCA hash: %s\n", jt.ID, jt.Host, jt.Expires.Format(time.RFC3339), jt.Secret, jt.CAHash)
				return nil
			}
			if len(args) != 1 {
				return fmt.Errorf("name the token: bulkhead token create --role ROLE NAME")
			}
			tok, err := c.CreateToken(cmd.Context(), args[0], role)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "token %s (%s), shown once:\n%s\n", tok.Name, tok.Role, tok.Secret)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", api.RoleOperator, "admin, operator or auditor")
	create.Flags().BoolVar(&join, "join", false, "make a one-time join token for a host's agent")
	create.Flags().StringVar(&host, "host", "", "the host a join token is for")
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long a join token is valid (at most 24h)")
	var joinList, joinRevoke bool
	list := &cobra.Command{
		Use: "list [--join]", Short: "List the API tokens, or with --join the join tokens (never their secrets)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			if joinList {
				return printJoinTokens(cmd, c)
			}
			toks, err := c.Tokens(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tROLE\tCREATED\tBY")
			for _, t := range toks {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, t.Role, t.Created.Format(time.RFC3339), t.CreatedBy)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&joinList, "join", false, "list the join tokens: id, host, state (unused, used, expired), expiry")
	revoke := &cobra.Command{
		Use: "revoke NAME | revoke --join ID", Short: "Revoke an API token, or with --join a join token: it stops working at once", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			if joinRevoke {
				if err := c.RevokeJoinToken(cmd.Context(), args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "join token %s revoked\n", args[0])
				return nil
			}
			if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "token %s revoked\n", args[0])
			return nil
		},
	}
	revoke.Flags().BoolVar(&joinRevoke, "join", false, "revoke the join token with this id (from token list --join)")
	cmd.AddCommand(create, list, revoke)
	return cmd
}

func printJoinTokens(cmd *cobra.Command, c *client.Client) error {
	jts, err := c.JoinTokens(cmd.Context())
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tSTATE\tCREATED\tBY\tEXPIRES")
	for _, j := range jts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Host, j.State, j.Created.Format(time.RFC3339), j.CreatedBy, j.Expires.Format(time.RFC3339))
	}
	return tw.Flush()
}

func certificateCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "certificate", Aliases: []string{"cert"}, Short: "List and revoke the agents' certificates"}
	list := &cobra.Command{
		Use: "list", Short: "List the agents' certificates, each under the one it was renewed from", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			certs, err := c.Certificates(cmd.Context())
			if err != nil {
				return err
			}
			return printCertificates(cmd.OutOrStdout(), certs)
		},
	}
	var host string
	revoke := &cobra.Command{
		Use:   "revoke SERIAL | revoke --host NAME",
		Short: "Revoke an agent's certificate and those renewed from it, or all of a host's: refused from the next request on",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (host == "") == (len(args) == 0) {
				return fmt.Errorf("name one certificate (SERIAL, from bulkhead certificate list) or one host (--host NAME)")
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if host != "" {
				res, err := c.RevokeHost(cmd.Context(), host)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "host %s: %d certificates and %d unused join tokens revoked\n", res.Host, len(res.Certificates), len(res.JoinTokens))
				return nil
			}
			ce, err := c.RevokeCertificate(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "certificate %s of host %s revoked, with every certificate renewed from it\n", ce.Serial, ce.Host)
			return nil
		},
	}
	revoke.Flags().StringVar(&host, "host", "", "revoke every certificate of this host, and its unused join tokens")
	cmd.AddCommand(list, revoke)
	return cmd
}

// printCertificates prints the certificates host by host, each renewal
// chain as a tree: a renewed certificate indented under its parent.
func printCertificates(w io.Writer, certs []api.Certificate) error {
	children := map[string][]api.Certificate{}
	known := map[string]bool{}
	for _, ce := range certs {
		known[ce.Serial] = true
	}
	var roots []api.Certificate
	for _, ce := range certs {
		if ce.RenewedFrom != "" && known[ce.RenewedFrom] {
			children[ce.RenewedFrom] = append(children[ce.RenewedFrom], ce)
		} else {
			roots = append(roots, ce)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tSERIAL\tFROM\tISSUED\tEXPIRES\tREVOKED")
	var row func(ce api.Certificate, depth int)
	row = func(ce api.Certificate, depth int) {
		revoked, from := "-", "join"
		if ce.Revoked != nil {
			revoked = ce.Revoked.Format(time.RFC3339) + " by " + ce.RevokedBy
		}
		if ce.RenewedFrom != "" {
			from = "renewed " + ce.RenewedFrom
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%s\t%s\t%s\t%s\n", ce.Host, strings.Repeat("  ", depth), ce.Serial, from,
			ce.Issued.Format(time.RFC3339), ce.NotAfter.Format(time.RFC3339), revoked)
		if depth < 64 { // a chain is acyclic by construction; bound it anyway
			for _, child := range children[ce.Serial] {
				row(child, depth+1)
			}
		}
	}
	for _, ce := range roots {
		row(ce, 0)
	}
	return tw.Flush()
}

func revisionsCommand() *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use: "revisions [--limit N]", Aliases: []string{"revision", "rev"}, Short: "List, diff and roll back the manager's policy revisions",
		Long: `revisions lists the newest --limit policy revisions (0: all of them), newest
first, reading the manager's history page by page.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			revs, err := c.NewestRevisions(cmd.Context(), limit)
			if err != nil {
				return err
			}
			if err := printServerTable(cmd.OutOrStdout(), revs); err != nil {
				return err
			}
			if revs.Next != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "(the newest %d; --limit 0 lists all)\n", len(revs.Items))
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "list at most this many revisions, newest first (0: all)")
	diff := &cobra.Command{
		Use: "diff [FROM [TO]]", Short: "Show the objects that changed between two revisions (default: the head and its parent)",
		Args: cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var revs [2]int64
			for i, a := range args {
				n, err := strconv.ParseInt(a, 10, 64)
				if err != nil {
					return fmt.Errorf("revision %q: want a number from `bulkhead revisions`", a)
				}
				revs[i] = n
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			d, err := c.Diff(cmd.Context(), revs[0], revs[1])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "revision %d → %d: %d objects changed\n", d.From, d.To, len(d.Changes))
			for _, ch := range d.Changes {
				verb := "changed"
				switch {
				case ch.Before == nil:
					verb = "created"
				case ch.After == nil:
					verb = "deleted"
				}
				fmt.Fprintf(out, "%s %s\n", verb, refString(ch.ObjectRef))
				if ch.Before != nil && ch.After != nil {
					fmt.Fprintf(out, "  - %s\n  + %s\n", ch.Before, ch.After)
				}
			}
			return nil
		},
	}
	var wait time.Duration
	rollback := &cobra.Command{
		Use: "rollback REV", Short: "Make revision REV's objects the head again, as a new revision", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rev, err := strconv.ParseInt(args[0], 10, 64)
			if err != nil {
				return fmt.Errorf("revision %q: want a number from `bulkhead revisions`", args[0])
			}
			c, err := serverClient(cmd)
			if err != nil {
				return err
			}
			req := api.RollbackRequest{}
			if wait > 0 {
				req.Wait = wait.String()
			}
			res, err := c.Rollback(cmd.Context(), rev, req)
			if err != nil {
				return err
			}
			return printManagerResult(cmd.OutOrStdout(), res, false)
		},
	}
	rollback.Flags().DurationVar(&wait, "wait", 0, "wait until every host has realized the new revision, at most this long")
	cmd.AddCommand(diff, rollback)
	return cmd
}

// serverApply sends documents to the manager (for apply and delete with
// a manager configured); wait > 0 waits for the hosts.
func serverApply(cmd *cobra.Command, docs []api.Document, dryRun, del bool, wait time.Duration) error {
	c, err := serverClient(cmd)
	if err != nil {
		return err
	}
	req := api.ManagerApplyRequest{Documents: docs, DryRun: dryRun}
	if wait > 0 {
		req.Wait = wait.String()
	}
	var res api.ManagerApplyResult
	if del {
		res, err = c.Delete(cmd.Context(), req)
	} else {
		res, err = c.Apply(cmd.Context(), req)
	}
	if err != nil {
		return err
	}
	if err := printManagerResult(cmd.OutOrStdout(), res, dryRun); err != nil {
		return err
	}
	if len(res.NotRealized) > 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "not realized within %s by %d hosts: %s\n", wait, len(res.NotRealized), strings.Join(res.NotRealized, ", "))
		return &ExitError{Code: 2}
	}
	return nil
}

func printManagerResult(out io.Writer, res api.ManagerApplyResult, dryRun bool) error {
	prefix := ""
	if dryRun {
		prefix = "(dry run) "
	}
	for _, g := range []struct {
		refs []api.ObjectRef
		verb string
	}{{res.Created, "created"}, {res.Updated, "updated"}, {res.Unchanged, "unchanged"}, {res.Deleted, "deleted"}} {
		for _, r := range g.refs {
			fmt.Fprintf(out, "%s%s %s\n", prefix, refString(r), g.verb)
		}
	}
	switch {
	case dryRun:
		fmt.Fprintln(out, "valid, and every wall holds; nothing was changed (dry run)")
	case res.Revision == 0:
		fmt.Fprintln(out, "nothing to change")
	default:
		fmt.Fprintf(out, "revision %d\n", res.Revision)
		if len(res.Realized) > 0 {
			fmt.Fprintf(out, "realized by %d hosts: %s\n", len(res.Realized), strings.Join(res.Realized, ", "))
		}
	}
	return nil
}

// serverResources are what serverGet lists: the manager's own records,
// then every kind of object.
func serverResources() []string {
	return append([]string{"workloads", "hosts", "identities", "revisions", "tokens", "certificates", "objects"}, objects.Resources()...)
}

// serverGet prints a resource of the manager: output "table", "json" or
// "yaml".
func serverGet(cmd *cobra.Command, resource, output string) error {
	c, err := serverClient(cmd)
	if err != nil {
		return err
	}
	resource = strings.ToLower(resource)
	var v any
	switch resource {
	case "workloads", "workload", "wl":
		v, err = c.Workloads(cmd.Context(), "")
	case "hosts", "host":
		v, err = c.Hosts(cmd.Context())
	case "identities", "identity":
		v, err = c.Identities(cmd.Context())
	case "revisions", "revision":
		v, err = c.Revisions(cmd.Context())
	case "tokens":
		v, err = c.Tokens(cmd.Context())
	case "certificates":
		v, err = c.Certificates(cmd.Context())
	case "objects", "all":
		v, err = c.Objects(cmd.Context(), "")
	default:
		kinds, kerr := objects.Resolve(resource)
		if kerr != nil {
			return fmt.Errorf("unknown resource %q; valid: %s", resource, strings.Join(serverResources(), ", "))
		}
		v, err = c.Objects(cmd.Context(), strings.Join(kinds, ","))
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	if l, ok := v.(api.ObjectList); ok && output != "table" && output != "wide" && output != "" {
		// Objects print as a List, as `kubectl get -o yaml` and an agent
		// print them, so that a backup applies back.
		return printObjects(out, output, l, nil)
	}
	switch output {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		data, _ := json.Marshal(v)
		var generic any
		_ = json.Unmarshal(data, &generic)
		return yaml.NewEncoder(out).Encode(generic)
	case "", "table", "wide":
		return printServerTable(out, v)
	}
	return fmt.Errorf("output %q: want table, json or yaml", output)
}

func printServerTable(out io.Writer, v any) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	switch x := v.(type) {
	case api.WorkloadList:
		fmt.Fprintln(tw, "HOST\tNAMESPACE\tNAME\tIDENTITY\tIPS\tLABELS")
		for _, w := range x.Items {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", w.Host, w.Namespace, w.Name, w.Identity, strings.Join(w.IPs, ","), serverLabelString(w.Labels))
		}
	case api.HostList:
		fmt.Fprintln(tw, "HOST\tHEALTH\tREALIZED\tWORKLOADS\tLAST SEEN")
		for _, h := range x.Items {
			seen := "never"
			if !h.LastSeen.IsZero() {
				seen = h.LastSeen.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", h.Name, h.Health, h.Realized, h.Workloads, seen)
		}
	case api.IdentityList:
		fmt.Fprintln(tw, "ID\tNAMESPACE\tLABELS\tADDRESSES")
		for _, id := range x.Items {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", id.ID, id.Namespace, serverLabelString(id.Labels), strings.Join(id.Addresses, ","))
		}
	case api.RevisionList:
		fmt.Fprintln(tw, "REVISION\tPARENT\tTIME\tACTOR\tOBJECTS\tMESSAGE")
		for _, r := range x.Items {
			msg := r.Message
			if r.RollbackOf != 0 {
				msg = strings.TrimSpace(fmt.Sprintf("rollback to %d %s", r.RollbackOf, msg))
			}
			head := ""
			if r.Revision == x.Head {
				head = " (head)"
			}
			fmt.Fprintf(tw, "%d%s\t%d\t%s\t%s\t%d\t%s\n", r.Revision, head, r.Parent, r.Time.Format(time.RFC3339), r.Actor, r.Objects, msg)
		}
	case []api.Token, []api.Certificate:
		data, _ := json.MarshalIndent(x, "", "  ")
		fmt.Fprintln(tw, string(data))
	case api.ObjectList:
		fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME")
		type row struct{ kind, ns, name string }
		var rows []row
		for _, it := range x.Items {
			md, _ := it["metadata"].(map[string]any)
			ns, _ := md["namespace"].(string)
			name, _ := md["name"].(string)
			kind, _ := it["kind"].(string)
			rows = append(rows, row{kind, ns, name})
		}
		sort.Slice(rows, func(i, j int) bool {
			return rows[i].kind+rows[i].ns+rows[i].name < rows[j].kind+rows[j].ns+rows[j].name
		})
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.kind, r.ns, r.name)
		}
		fmt.Fprintf(tw, "(revision %d)\n", x.Revision)
	}
	return tw.Flush()
}

func serverLabelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for i, k := range keys {
		keys[i] = k + "=" + l[k]
	}
	return strings.Join(keys, ",")
}
