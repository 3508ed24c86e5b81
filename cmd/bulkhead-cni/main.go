// Command bulkhead-cni is Bulkhead's CNI plugin: container runtimes run it
// to attach a workload's network namespace and register the workload with
// the local agent. internal/cni is the plugin; docs/cni.md its reference.
package main

import (
	"os"

	"github.com/bulkhead-dev/bulkhead/internal/cni"
)

func main() { os.Exit(cni.Main()) }
