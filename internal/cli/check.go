package cli

import (
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/spf13/cobra"
)

func checkCommand() *cobra.Command {
	var in inputs
	cmd := &cobra.Command{
		Use:   "check -f FILE|DIR [-f ...] [--inventory FILE]",
		Short: "Validate policies and prove every wall",
		Long: `check validates every object (reporting every error with file, line and
field) and proves every wall against the whole policy set: it prints "holds"
for each wall, or a concrete counterexample. It exits 1 when anything is
wrong, so that a policy set that breaches a wall is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, _, err := in.load()
			if err != nil {
				return err
			}
			breaches, err := policy.ProveWalls(set)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "valid: %d policies, %d segments, %d walls, %d conflict classes, %d decision rules, %d namespaces, %d workloads\n",
				len(set.Policies), len(set.Segments), len(set.Walls), len(set.ConflictClasses), len(set.DecisionRules), len(set.Namespaces), len(set.Workloads))
			broken := map[string]bool{}
			for _, b := range breaches {
				broken[b.Wall.Name] = true
				fmt.Fprintln(cmd.ErrOrStderr(), b)
			}
			for _, w := range set.Walls {
				if !broken[w.Name] {
					fmt.Fprintf(out, "wall %q holds\n", w.Name)
				}
			}
			if len(breaches) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "refused: %d walls breached\n", len(broken))
				return &ExitError{Code: 1}
			}
			return nil
		},
	}
	in.register(cmd)
	return cmd
}
