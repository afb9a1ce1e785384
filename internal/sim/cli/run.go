package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/manifest"
	"github.com/huddle-io/huddle/internal/sim/report"
)

type runOptions struct {
	huddle    huddleFlags
	cluster   clusterFlags
	files     []string
	output    string
	namespace string
	settle    time.Duration
	timeout   time.Duration
	keep      bool
}

func newRun() *cobra.Command {
	o := &runOptions{}
	cmd := &cobra.Command{
		Use:   "run -f FILE|- [-f FILE ...]",
		Short: "Boot a cluster, apply manifests, wait until they settle and print where every pod landed",
		Long: `run boots a simulated cluster, applies the manifests, waits until every pod
is Running (Jobs: Succeeded) or nothing has changed for the settle period,
and prints a placement report: for every PersistentVolumeClaim, its volume,
the node(s) it is attached to, and every pod that mounts it with its node,
phase, readiness and — if it is stuck — the reason, in the words of the
component that stopped it (Multi-Attach error, FailedScheduling, OutOfcpu).

Node objects in the manifests become the simulated nodes (capacity and
allocatable from their status, zone and instance type from their labels);
without them, --nodes nodes are made from the flags. Objects of kinds the
cluster does not serve (a chart's ServiceMonitor, say) are skipped with a
warning.

` + nodesHelp + `

Exit status: 0 if every pod is Running (Jobs: Succeeded), 1 if not, 2 for
usage errors, 3 if huddle-sim failed (a component did not start, for
example; the cause is printed in one line, with the log to read), 130 if
interrupted (SIGINT or SIGTERM). Whatever ends it, it stops every process
it started and removes its files.`,
		Example: `  helm template sentry sentry/sentry | huddle-sim run -f -
  huddle-sim run -f app.yaml -f nodes.yaml --output json
  huddle-sim run -f app.yaml --nodes 5 --zones us-east-1a,us-east-1b --timing fast
  huddle-sim run -f app.yaml --nodes 6 --instance-type r5.large`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	o.cluster.add(cmd, "eks", cluster.DefaultZones)
	o.huddle.add(cmd, true)
	fs := cmd.Flags()
	fs.StringArrayVarP(&o.files, "filename", "f", nil, "manifest file to apply, - for stdin (repeatable)")
	fs.StringVarP(&o.output, "output", "o", "table", "report format: table or json")
	fs.StringVarP(&o.namespace, "namespace", "n", "default", "namespace for objects that name none")
	fs.DurationVar(&o.settle, "settle", 0, "report once nothing has changed for this long (default: the timing profile's, 30s for eks, 8s for fast)")
	fs.DurationVar(&o.timeout, "timeout", 0, "report after this long even if things still change (default: the timing profile's, 10m for eks)")
	fs.BoolVar(&o.keep, "keep", false, "keep the cluster running after the report, until Ctrl-C, to inspect it with kubectl")
	return cmd
}

func (o *runOptions) run(cmd *cobra.Command) error {
	if len(o.files) == 0 {
		return usageErrorf("run needs at least one -f FILE (or -f - for stdin)")
	}
	if o.output != "table" && o.output != "json" {
		return usageErrorf("--output %q: use table or json", o.output)
	}
	profile, err := o.cluster.profile()
	if err != nil {
		return err
	}
	huddleValues, err := o.huddle.values()
	if err != nil {
		return err
	}
	objs, err := manifest.Load(o.files, cmd.InOrStdin())
	if err != nil {
		return usageErrorf("%v", err)
	}
	nodeSpecs, objs, err := manifest.NodeSpecs(objs)
	if err != nil {
		return usageErrorf("%v", err)
	}
	specs, err := o.cluster.specs(cmd, nodeSpecs)
	if err != nil {
		return err
	}
	if o.settle == 0 {
		o.settle = profile.SettlePeriod
	}
	if o.timeout == 0 {
		o.timeout = profile.RunTimeout
	}
	ctx, cancel := signalContext()
	defer cancel()
	stderr := cmd.ErrOrStderr()
	c, err := cluster.Start(ctx, cluster.Options{Timing: profile, Nodes: specs, CacheDir: o.cluster.cacheDir, Seed: o.cluster.seed, Progress: stderr, Huddle: o.huddle.huddle, HuddleLocal: o.huddle.local, HuddleValues: huddleValues, NoSystemPods: o.cluster.noSystemPods})
	if err != nil {
		return interrupted(ctx, err)
	}
	defer c.Stop()
	fmt.Fprintf(stderr, "Cluster ready in %.1fs: %d nodes, timing %s\n", c.BootTime.Seconds(), len(specs), profile.Name)

	rep, err := applyAndSettle(ctx, c, objs, o.namespace, o.settle, o.timeout, stderr)
	if err != nil {
		return failed(ctx, c, err)
	}
	out := cmd.OutOrStdout()
	if o.output == "json" {
		err = rep.WriteJSON(out)
	} else {
		err = rep.WriteTable(out)
	}
	if err != nil {
		return failed(ctx, c, err)
	}
	if o.keep {
		if err := waitForInterrupt(ctx, c, stderr); err != nil {
			return failed(ctx, c, err)
		}
	}
	if !rep.AllRunning {
		return &exitError{code: exitNotRunning, err: errSilent}
	}
	return nil
}

// applyAndSettle applies objs, waits for them to settle and gathers the
// report.
func applyAndSettle(ctx context.Context, c *cluster.Cluster, objs []manifest.Object, namespace string, settle, timeout time.Duration, progress io.Writer) (*report.Report, error) {
	fmt.Fprintf(progress, "Applying %d objects\n", len(objs))
	if err := addExistingVolumes(ctx, c, objs, progress); err != nil {
		return nil, err
	}
	res, err := manifest.Apply(ctx, c.Admin, objs, namespace, progress)
	if err != nil {
		return nil, err
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(progress, "warning: %s\n", s)
	}
	fmt.Fprintf(progress, "Applied %d objects in namespaces %v; waiting for pods to settle (report when all run or after %s without change)\n", res.Applied, res.Namespaces, settle)
	took, outcome, err := report.Settle(ctx, c.Client, res.Namespaces, settle, timeout, progress)
	if err != nil {
		return nil, err
	}
	if outcome == report.Timeout {
		fmt.Fprintf(progress, "warning: still changing after %s (--timeout); reporting the current state\n", timeout)
	}
	rep, err := report.Gather(ctx, c.Client, res.Namespaces)
	if err != nil {
		return nil, err
	}
	rep.SettledAfterSeconds = took.Round(100 * time.Millisecond).Seconds()
	return rep, nil
}

// waitForInterrupt keeps the cluster up until Ctrl-C, telling the user how
// to reach it. It returns an error if a component of the cluster exits.
func waitForInterrupt(ctx context.Context, c *cluster.Cluster, w io.Writer) error {
	fmt.Fprintf(w, "\nThe cluster keeps running. Use it with:\n  export KUBECONFIG=%s\n  %s get pods -A\nPress Ctrl-C to stop it.\n", c.Kubeconfig, c.Binaries.Kubectl)
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(w, "Stopping the cluster")
			return nil
		case <-t.C:
			if err := c.Check(); err != nil {
				return err
			}
		}
	}
}
