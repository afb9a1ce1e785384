// Command huddle-sim runs the real Kubernetes control plane with simulated
// EKS nodes and EBS disks; see internal/sim/cli.
package main

import (
	"os"

	"github.com/huddle-io/huddle/internal/sim/cli"
)

func main() { os.Exit(cli.Execute()) }
