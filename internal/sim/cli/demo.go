package cli

import (
	"bytes"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/demo"
	"github.com/huddle-io/huddle/internal/sim/manifest"
)

func newDemo() *cobra.Command {
	f := &clusterFlags{}
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the self-hosted Sentry case: pods sharing one EBS claim hang under the stock scheduler",
		Long: `demo boots a simulated cluster of three m5.xlarge nodes in one zone and
deploys self-hosted Sentry's web, worker, cron and ingest-consumer (six pods)
all mounting one gp3 claim, sentry/sentry-data. The stock kube-scheduler
spreads them over the nodes; the volume attaches to one node, and every pod
elsewhere hangs in ContainerCreating with the attach/detach controller's
Multi-Attach error. The report shows where each pod landed and why the
stuck ones are stuck.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			profile, err := f.profile()
			if err != nil {
				return err
			}
			specs, err := f.specs(cmd, nil)
			if err != nil {
				return err
			}
			objs, err := manifest.Load([]string{"-"}, bytes.NewReader(demo.SentryManifest))
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			stderr := cmd.ErrOrStderr()
			c, err := cluster.Start(ctx, cluster.Options{Timing: profile, Nodes: specs, CacheDir: f.cacheDir, Progress: stderr})
			if err != nil {
				return interrupted(ctx, err)
			}
			defer c.Stop()
			fmt.Fprintf(stderr, "Cluster ready in %.1fs: %d nodes, timing %s\n", c.BootTime.Seconds(), len(specs), profile.Name)
			rep, err := applyAndSettle(ctx, c, objs, "default", profile.SettlePeriod, profile.RunTimeout, stderr)
			if err != nil {
				return interrupted(ctx, err)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, "\n== Self-hosted Sentry with the stock kube-scheduler ==")
			fmt.Fprintln(out)
			if err := rep.WriteTable(out); err != nil {
				return err
			}
			demo.Explain(out, rep)
			return nil
		},
	}
	f.add(cmd, "fast")
	return cmd
}
