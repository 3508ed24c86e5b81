package cli

import (
	"fmt"

	"github.com/bulkhead-dev/bulkhead/internal/load"
	"github.com/bulkhead-dev/bulkhead/internal/policy"
	"github.com/spf13/cobra"
)

// inputs are the flags every offline command shares.
type inputs struct {
	inventory string
	policies  []string
}

func (in *inputs) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&in.inventory, "inventory", "", "inventory file: namespaces and workloads (YAML or JSON)")
	cmd.Flags().StringArrayVarP(&in.policies, "policy", "f", nil, "policy file or directory (repeatable; - for standard input)")
}

// load reads the inventory and the policies into one set and builds its engine.
func (in *inputs) load() (*policy.Set, *policy.Engine, error) {
	if len(in.policies) == 0 {
		return nil, nil, fmt.Errorf("no policy given: pass --policy FILE or DIR (or -f)")
	}
	set, err := load.Paths(in.policies)
	if err != nil {
		return nil, nil, err
	}
	if in.inventory != "" {
		inv, err := load.Inventory(in.inventory)
		if err != nil {
			return nil, nil, err
		}
		set.Merge(inv)
	}
	e, err := policy.NewEngine(set)
	if err != nil {
		return nil, nil, err
	}
	return set, e, nil
}
