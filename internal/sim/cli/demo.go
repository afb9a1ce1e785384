package cli

import (
	"bytes"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/demo"
	"github.com/huddle-io/huddle/internal/sim/manifest"
	"github.com/huddle-io/huddle/internal/sim/report"
)

func newDemo() *cobra.Command {
	f := &clusterFlags{}
	hf := &huddleFlags{huddle: true}
	var stockOnly bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Show the self-hosted Sentry case twice: the stock scheduler, then huddle",
		Long: `demo deploys self-hosted Sentry's web, worker, cron and ingest-consumer (six
pods, all mounting one gp3 claim, sentry/sentry-data) on three m5.xlarge
nodes in one zone (over three zones, each node would be alone in its zone,
and the volume's zone alone would keep the pods on one node), twice, each
time on a fresh simulated cluster:

  1. with the stock kube-scheduler only: the pods spread over the nodes, the
     volume attaches to one, and every pod elsewhere hangs in
     ContainerCreating with the attach/detach controller's Multi-Attach error;
  2. with huddle, installed from its Helm chart (charts/huddle): every pod
     runs on the node that holds the volume.

It prints both placement reports and a side-by-side summary: where each pod
ran, how many hung, and how long until all were Running.`,
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
			huddleValues, err := hf.values()
			if err != nil {
				return err
			}
			ctx, cancel := signalContext()
			defer cancel()
			out, stderr := cmd.OutOrStdout(), cmd.ErrOrStderr()
			run := func(withHuddle bool) (*report.Report, error) {
				objs, err := manifest.Load([]string{"-"}, bytes.NewReader(demo.SentryManifest))
				if err != nil {
					return nil, err
				}
				c, err := cluster.Start(ctx, cluster.Options{Timing: profile, Nodes: specs, CacheDir: f.cacheDir, Seed: f.seed, Progress: stderr, Huddle: withHuddle, HuddleValues: huddleValues, NoSystemPods: f.noSystemPods})
				if err != nil {
					return nil, interrupted(ctx, err)
				}
				defer c.Stop()
				fmt.Fprintf(stderr, "Cluster ready in %.1fs: %d nodes, timing %s, huddle %v\n", c.BootTime.Seconds(), len(specs), profile.Name, withHuddle)
				rep, err := applyAndSettle(ctx, c, objs, "default", profile.SettlePeriod, profile.RunTimeout, stderr)
				if err != nil {
					return nil, failed(ctx, c, err)
				}
				return rep, nil
			}
			fmt.Fprintln(stderr, "== 1/2: the stock kube-scheduler ==")
			stock, err := run(false)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, "\n== Self-hosted Sentry with the stock kube-scheduler ==")
			fmt.Fprintln(out)
			if err := stock.WriteTable(out); err != nil {
				return err
			}
			demo.Explain(out, stock)
			if stockOnly {
				return nil
			}
			fmt.Fprintln(stderr, "== 2/2: with huddle ==")
			withHuddle, err := run(true)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, "\n== Self-hosted Sentry with huddle ==")
			fmt.Fprintln(out)
			if err := withHuddle.WriteTable(out); err != nil {
				return err
			}
			demo.Compare(out, stock, withHuddle)
			return nil
		},
	}
	// One zone: over three zones, the volume's zone alone would keep the
	// pods of three nodes on one, and the stock run would show nothing.
	f.add(cmd, "fast", []string{"us-east-1a"})
	hf.add(cmd, false)
	cmd.Flags().BoolVar(&stockOnly, "stock-only", false, "show only the stock scheduler's run")
	return cmd
}
