package cli

import (
	"context"
	"fmt"
	"io"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/manifest"
)

// addExistingVolumes creates in the simulated cloud the EBS volumes the
// static PersistentVolumes of objs name, before they are applied: they
// stand for disks the user already has.
func addExistingVolumes(ctx context.Context, c *cluster.Cluster, objs []manifest.Object, progress io.Writer) error {
	pvs, err := manifest.PersistentVolumes(objs)
	if err != nil || len(pvs) == 0 {
		return err
	}
	warnings, err := c.AddExistingVolumes(ctx, pvs)
	for _, w := range warnings {
		fmt.Fprintf(progress, "warning: %s\n", w)
	}
	return err
}
