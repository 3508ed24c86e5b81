package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/bulkhead-dev/bulkhead/api"
	"github.com/bulkhead-dev/bulkhead/internal/agent"
	"github.com/bulkhead-dev/bulkhead/internal/agent/client"
	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// agentEnv names the environment variable that --agent defaults to.
const agentEnv = "BULKHEAD_AGENT"

// agentClient is a client for the agent --agent (or $BULKHEAD_AGENT, or
// the default socket) names.
func agentClient(cmd *cobra.Command) (*client.Client, error) {
	target, _ := cmd.Flags().GetString("agent")
	if target == "" {
		target = os.Getenv(agentEnv)
	}
	if target == "" {
		target = "unix://" + client.DefaultSocket
	}
	return client.New(target)
}

// useManager reports whether apply, delete and get go to a manager: one
// is configured (bulkhead login, bulkhead up) and no agent was asked for
// by --agent or $BULKHEAD_AGENT.
func useManager(cmd *cobra.Command) bool {
	return !cmd.Flags().Changed("agent") && os.Getenv(agentEnv) == "" && serverConfigured(cmd)
}

// readDocuments reads the files named, and the .yaml, .yml and .json files
// inside the directories named (recursively, in name order), whole.
func readDocuments(paths []string, stdin io.Reader) ([]api.Document, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("no file given: pass -f FILE or DIR (repeatable; - for standard input)")
	}
	var out []api.Document
	for _, p := range paths {
		if p == "-" {
			data, err := io.ReadAll(io.LimitReader(stdin, load.MaxFileSize+1))
			if err != nil {
				return nil, fmt.Errorf("read standard input: %w", err)
			}
			out = append(out, api.Document{Name: "(stdin)", Data: string(data)})
			continue
		}
		files, err := load.Expand(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if len(data) > load.MaxFileSize {
				return nil, fmt.Errorf("%s is larger than %d MiB", f, load.MaxFileSize>>20)
			}
			out = append(out, api.Document{Name: f, Data: string(data)})
		}
	}
	return out, nil
}

func applyCommand() *cobra.Command {
	var (
		files  []string
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [-f ...] [--dry-run]",
		Short: "Add or update objects on the agent; returns once the kernel enforces them",
		Long: `apply sends native and Kubernetes objects (as check reads them, v1 Namespace
objects with their labels included) to the agent. The agent validates the
whole resulting set — what it holds and what you send — and proves every
wall; when anything is wrong nothing changes and every problem is printed
with its file, line, column and field. Otherwise apply returns once the
kernel enforces the result, and prints what was created, updated and left
unchanged, and how long enforcing took.`,
		Example: `  bulkhead --agent unix:///run/bulkhead/agent.sock apply -f examples/policies
  kubectl get networkpolicies -A -o yaml | bulkhead apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return changeObjects(cmd, files, dryRun, false)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or directory of objects (repeatable; - for standard input)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "validate and prove the walls on the agent without changing anything")
	cmd.Flags().Duration("wait", 0, "with a manager: wait until every host has realized the revision, at most this long")
	return cmd
}

func deleteCommand() *cobra.Command {
	var files []string
	cmd := &cobra.Command{
		Use:   "delete -f FILE|DIR [-f ...]",
		Short: "Remove the objects the files name from the agent; returns once enforced",
		Long: `delete removes the objects that the files define (by kind, namespace and
name) and returns once the kernel enforces the result. The set that
remains is validated first: deleting a segment a policy still names is
refused. Objects that are not there are reported, not an error.`,
		Example: `  bulkhead delete -f examples/policies/30-payments.yaml`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return changeObjects(cmd, files, false, true)
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "file or directory of objects (repeatable; - for standard input)")
	cmd.Flags().Duration("wait", 0, "with a manager: wait until every host has realized the revision, at most this long")
	return cmd
}

func changeObjects(cmd *cobra.Command, files []string, dryRun, del bool) error {
	docs, err := readDocuments(files, cmd.InOrStdin())
	if err != nil {
		return err
	}
	if useManager(cmd) {
		wait, _ := cmd.Flags().GetDuration("wait")
		return serverApply(cmd, docs, dryRun, del, wait)
	}
	c, err := agentClient(cmd)
	if err != nil {
		return err
	}
	req := api.ApplyRequest{Documents: docs, DryRun: dryRun}
	var res api.ApplyResult
	if del {
		res, err = c.Delete(cmd.Context(), req)
	} else {
		res, err = c.Apply(cmd.Context(), req)
	}
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	prefix := ""
	if dryRun {
		prefix = "(dry run) "
	}
	for _, g := range []struct {
		refs []api.ObjectRef
		verb string
	}{{res.Created, "created"}, {res.Updated, "updated"}, {res.Unchanged, "unchanged"}, {res.Deleted, "deleted"}, {res.NotFound, "not found"}} {
		for _, r := range g.refs {
			fmt.Fprintf(out, "%s%s %s\n", prefix, refString(r), g.verb)
		}
	}
	switch {
	case dryRun:
		fmt.Fprintln(out, "valid, and every wall holds; nothing was changed (dry run)")
	case len(res.Created)+len(res.Updated)+len(res.Deleted) == 0:
		fmt.Fprintf(out, "nothing to change (revision %d)\n", res.Revision)
	default:
		fmt.Fprintf(out, "enforced in %s (revision %d)\n", time.Duration(res.EnforcedMicros)*time.Microsecond, res.Revision)
	}
	return nil
}

func refString(r api.ObjectRef) string {
	if r.Namespace != "" {
		return r.Kind + " " + r.Namespace + "/" + r.Name
	}
	return r.Kind + " " + r.Name
}

func getCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get [KIND] [-o table|yaml|json]",
		Short: "List the objects and workloads the agent holds",
		Long: `get lists what the agent holds, of one kind when KIND is given: policies
(every kind of policy), networkpolicies, adminnetworkpolicies,
baselineadminnetworkpolicies, clusternetworkpolicies, namespaces, segments,
walls, conflictclasses or workloads (short names: pol, netpol, anp, banp,
cnp, ns, seg, cc, wl). Workloads include the ones registered by
attachments (the CNI plugin). -o yaml and -o json print the objects as a
List that apply reads back; registered workloads appear as Workload
objects annotated bulkhead.dev/registered.

With a manager configured (bulkhead login, bulkhead up) and no --agent,
get, apply and delete go to the manager: get lists workloads, hosts,
identities, revisions, tokens, certificates, namespaces, segments,
policies, walls, conflictclasses or objects.`,
		Example: `  bulkhead get policies
  bulkhead get -o yaml > backup.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "table" && output != "yaml" && output != "json" {
				return fmt.Errorf("-o %q: valid formats are table, yaml and json", output)
			}
			if useManager(cmd) {
				resource := "objects"
				if len(args) == 1 {
					resource = args[0]
				}
				return serverGet(cmd, resource, output)
			}
			kind := ""
			workloads := true
			if len(args) == 1 {
				kinds, err := agent.ResolveKind(args[0])
				if err != nil {
					return err
				}
				kind = args[0]
				workloads = len(kinds) == 1 && kinds[0] == "Workload"
			}
			c, err := agentClient(cmd)
			if err != nil {
				return err
			}
			l, err := c.Objects(cmd.Context(), kind)
			if err != nil {
				return err
			}
			var regs []api.WorkloadRegistration
			if workloads {
				if regs, err = c.Workloads(cmd.Context()); err != nil {
					return err
				}
			}
			return printObjects(cmd.OutOrStdout(), output, l, regs)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, yaml or json")
	return cmd
}

// registeredObject renders a registration as the Workload object it
// stands for.
func registeredObject(r api.WorkloadRegistration) map[string]any {
	spec := map[string]any{"ips": r.IPs}
	if len(r.Ports) > 0 {
		spec["ports"] = r.Ports
	}
	annotations := map[string]any{"bulkhead.dev/registered": "true", "bulkhead.dev/interface": r.Interface}
	if r.RuntimeName != "" {
		annotations["bulkhead.dev/runtime-name"] = r.RuntimeName
	}
	meta := map[string]any{"name": r.Name, "namespace": r.Namespace, "annotations": annotations}
	if len(r.Labels) > 0 {
		meta["labels"] = r.Labels
	}
	return map[string]any{"apiVersion": api.Version, "kind": "Workload", "metadata": meta, "spec": spec}
}

func printObjects(w io.Writer, output string, l api.ObjectList, regs []api.WorkloadRegistration) error {
	switch output {
	case "json", "yaml":
		items := append([]map[string]any{}, l.Items...)
		for _, r := range regs {
			items = append(items, registeredObject(r))
		}
		list := map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
		if output == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(list)
		}
		// Through JSON, so that YAML keys are the JSON field names.
		data, err := json.Marshal(list)
		if err != nil {
			return err
		}
		var v any
		if err := yaml.Unmarshal(data, &v); err != nil {
			return err
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(v); err != nil {
			return err
		}
		return enc.Close()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tNAMESPACE\tNAME\tDETAIL")
	for _, it := range l.Items {
		meta, _ := it["metadata"].(map[string]any)
		fmt.Fprintf(tw, "%v\t%v\t%v\t%s\n", it["kind"], orDash(meta["namespace"]), meta["name"], detail(it))
	}
	for _, r := range regs {
		shown := ""
		if r.RuntimeName != "" {
			shown = fmt.Sprintf(" (runtime name %q)", r.RuntimeName)
		}
		fmt.Fprintf(tw, "Workload\t%s\t%s\tregistered on %s: %s%s\n", r.Namespace, r.Name, r.Interface, strings.Join(r.IPs, ", "), shown)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.Items)+len(regs) == 0 {
		fmt.Fprintf(w, "nothing here (revision %d)\n", l.Revision)
	}
	return nil
}

func orDash(v any) any {
	if v == nil || v == "" {
		return "-"
	}
	return v
}

// detail summarises an object in a few words.
func detail(it map[string]any) string {
	spec, _ := it["spec"].(map[string]any)
	switch it["kind"] {
	case "Policy":
		tier := spec["tier"]
		if tier == nil {
			tier = "application"
		}
		return fmt.Sprintf("tier %v, %d ingress, %d egress rules", tier, length(spec["ingress"]), length(spec["egress"]))
	case "Wall":
		return fmt.Sprintf("segments %v", spec["segments"])
	case "Workload":
		return fmt.Sprintf("applied: %v", spec["ips"])
	case "NetworkPolicy", "AdminNetworkPolicy", "BaselineAdminNetworkPolicy", "ClusterNetworkPolicy":
		return fmt.Sprintf("%d ingress, %d egress rules", length(spec["ingress"]), length(spec["egress"]))
	}
	return ""
}

func length(v any) int {
	l, _ := v.([]any)
	return len(l)
}
