package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/manifest"
	"github.com/huddle-io/huddle/internal/sim/report"
	"github.com/huddle-io/huddle/internal/sim/timing"
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
	compare   bool
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

--compare answers "does huddle fix my manifests?": it runs them twice, each
time on a fresh cluster of the same nodes, first with the stock
kube-scheduler alone and then with huddle installed, and prints both
reports and a side-by-side summary, as the demo does for Sentry.

Objects are applied as helm install would: Helm's pre-install hooks first,
one at a time by hook weight, each Job or Pod awaited; then the release,
dependencies first; then post-install hooks (test hooks are not run). An
object the API server refuses (invalid, refused by an admission webhook)
is reported and the rest are still applied; every refusal is listed and
run exits 1. Objects of kinds the cluster does not serve (a chart's
ServiceMonitor, say) are skipped with a warning. A webhook configuration
whose Service no ready pod serves is warned about: the API server cannot
call it.

With huddle, the wait knows huddle's own timers: while a replacement of a
member stuck Unschedulable or a move is due, run keeps waiting (up to
--timeout) and says what it waits for, instead of reporting a huddle
stuck that huddle is about to fix.

Node objects in the manifests become the simulated nodes (capacity and
allocatable from their status, zone and instance type from their labels);
without them, --nodes nodes are made from the flags.

` + nodesHelp + `

The JSON report (-o json) carries schemaVersion (2), the timing profile,
whether huddle ran, how the wait ended (waitEnded: allRunning, quiet or
timeout), what huddle still had pending, the refused and skipped objects,
the nodes (zone, instance type, allocatable and requested), every claim with
its pods and its Huddle's status, and event counts. With --compare it is
{"schemaVersion", "stock": report, "huddle": report, "fixed": bool}.

Exit status: 0 if every pod is Running (Jobs: Succeeded) and nothing was
refused (with --compare: in the huddle run), 1 if not, 2 for usage errors,
3 if huddle-sim failed (a component did not start, for example; the cause
is printed in one line, with the log to read), 130 if interrupted (SIGINT
or SIGTERM). Whatever ends it, it stops every process it started and
removes its files.`,
		Example: `  helm template sentry sentry/sentry -n sentry | huddle-sim run -f - --compare
  helm template sentry sentry/sentry | huddle-sim run -f - -n sentry --huddle
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
	fs.StringVarP(&o.namespace, "namespace", "n", "default", "namespace for objects that name none, as kubectl apply -n and helm template -n")
	fs.DurationVar(&o.settle, "settle", 0, "report once nothing has changed for this long and huddle has nothing due (default: the timing profile's, 30s for eks, 8s for fast)")
	fs.DurationVar(&o.timeout, "timeout", 0, "report after this long even if things still change; also bounds each Helm hook (default: the timing profile's, 10m for eks, 3m for fast)")
	fs.BoolVar(&o.keep, "keep", false, "keep the cluster running after the report, until Ctrl-C, to inspect it with kubectl")
	fs.BoolVar(&o.compare, "compare", false, "run the manifests twice, on fresh clusters of the same nodes: with the stock kube-scheduler, then with huddle; print both reports side by side (exit status from the huddle run)")
	return cmd
}

func (o *runOptions) run(cmd *cobra.Command) error {
	if len(o.files) == 0 {
		return usageErrorf("run needs at least one -f FILE (or -f - for stdin)")
	}
	if o.output != "table" && o.output != "json" {
		return usageErrorf("--output %q: use table or json", o.output)
	}
	if o.compare && o.keep {
		return usageErrorf("--keep cannot be used with --compare, which runs two clusters one after the other; keep one with --keep --huddle, or --keep alone for the stock scheduler")
	}
	if o.compare && o.huddle.huddle {
		return usageErrorf("--compare runs with and without huddle; drop --huddle (--huddle-set and --huddle-values apply to the huddle run)")
	}
	if o.compare {
		o.huddle.huddle = true // for its values; the stock arm runs without
	}
	if errs := validation.IsDNS1123Label(o.namespace); len(errs) > 0 {
		return usageErrorf("--namespace %q: %s", o.namespace, strings.Join(errs, "; "))
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
	stderr, out := cmd.ErrOrStderr(), cmd.OutOrStdout()
	a := arm{profile: profile, specs: specs, flags: &o.cluster, huddle: o.huddle, values: huddleValues,
		namespace: o.namespace, settle: o.settle, timeout: o.timeout, keep: o.keep}
	if !o.compare {
		rep, err := a.run(ctx, objs, o.huddle.huddle, stderr)
		if err != nil {
			return err
		}
		if o.output == "json" {
			err = rep.WriteJSON(out)
		} else {
			err = rep.WriteTable(out)
		}
		if err != nil {
			return err
		}
		if !rep.AllRunning || len(rep.Refused) > 0 {
			return &exitError{code: exitNotRunning, err: errSilent}
		}
		return nil
	}
	fmt.Fprintln(stderr, "== 1/2: the stock kube-scheduler ==")
	stock, err := a.run(ctx, manifest.Copy(objs), false, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "== 2/2: with huddle ==")
	withHuddle, err := a.run(ctx, objs, true, stderr)
	if err != nil {
		return err
	}
	cmp := report.Comparison{SchemaVersion: report.SchemaVersion, Stock: stock, Huddle: withHuddle, Fixed: withHuddle.AllRunning && len(withHuddle.Refused) == 0}
	if o.output == "json" {
		err = cmp.WriteJSON(out)
	} else {
		err = cmp.WriteTable(out)
	}
	if err != nil {
		return err
	}
	if !cmp.Fixed {
		return &exitError{code: exitNotRunning, err: errSilent}
	}
	return nil
}

// arm is one run of manifests on a fresh cluster.
type arm struct {
	profile         timing.Profile
	specs           []kubelet.NodeSpec
	flags           *clusterFlags
	huddle          huddleFlags
	values          map[string]any
	namespace       string
	settle, timeout time.Duration
	keep            bool
}

// run boots a cluster (with huddle or not), applies objs, waits for them
// to settle and returns the report; the cluster is stopped after, or kept
// until Ctrl-C with --keep.
func (a arm) run(ctx context.Context, objs []manifest.Object, withHuddle bool, stderr io.Writer) (*report.Report, error) {
	opts := cluster.Options{Timing: a.profile, Nodes: a.specs, CacheDir: a.flags.cacheDir, Seed: a.flags.seed, Progress: stderr, NoSystemPods: a.flags.noSystemPods}
	if withHuddle {
		opts.Huddle, opts.HuddleLocal, opts.HuddleValues = true, a.huddle.local, a.values
	}
	c, err := cluster.Start(ctx, opts)
	if err != nil {
		return nil, interrupted(ctx, err)
	}
	defer c.Stop()
	fmt.Fprintf(stderr, "Cluster ready in %.1fs: %d nodes, timing %s, huddle %v\n", c.BootTime.Seconds(), len(a.specs), a.profile.Name, withHuddle)
	rep, err := applyAndSettle(ctx, c, objs, a.namespace, a.settle, a.timeout, stderr)
	if err != nil {
		return nil, failed(ctx, c, err)
	}
	if a.keep {
		if err := waitForInterrupt(ctx, c, stderr); err != nil {
			return nil, failed(ctx, c, err)
		}
	}
	return rep, nil
}

// applyAndSettle applies objs, waits for them to settle and gathers the
// report. Refusals are reported, not fatal: the rest still runs.
func applyAndSettle(ctx context.Context, c *cluster.Cluster, objs []manifest.Object, namespace string, settle, timeout time.Duration, progress io.Writer) (*report.Report, error) {
	fmt.Fprintf(progress, "Applying %d objects\n", len(objs))
	if err := addExistingVolumes(ctx, c, objs, progress); err != nil {
		return nil, err
	}
	res, err := manifest.Apply(ctx, c.Admin, objs, manifest.Options{Namespace: namespace, Progress: progress, HookTimeout: timeout})
	if err != nil {
		return nil, err
	}
	for _, s := range res.Skipped {
		fmt.Fprintf(progress, "warning: %s\n", s)
	}
	for _, s := range res.Refused {
		fmt.Fprintf(progress, "refused: %s\n", s)
	}
	var dyn dynamic.Interface
	wait := report.Wait{Quiet: settle, Timeout: timeout, Progress: progress}
	if c.HuddleInstalled() {
		if dyn, err = dynamic.NewForConfig(c.Admin); err != nil {
			return nil, err
		}
		timers := report.HuddleTimers{Client: c.Client, Huddles: dyn, Namespaces: res.Namespaces, Slack: settle}
		if timers.UnschedulableDeadline, err = c.HuddleDuration("unschedulableDeadline"); err != nil {
			return nil, err
		}
		if timers.MoveDeadline, err = c.HuddleDuration("moveDeadline"); err != nil {
			return nil, err
		}
		wait.Pending = timers.Pending
	}
	fmt.Fprintf(progress, "Applied %d objects in namespaces %v; waiting for pods to settle (report when all run or after %s without change)\n", res.Applied, res.Namespaces, settle)
	took, outcome, pending, err := report.Settle(ctx, c.Client, res.Namespaces, wait)
	if err != nil {
		return nil, err
	}
	if outcome == report.Timeout {
		fmt.Fprintf(progress, "warning: still changing after %s (--timeout); reporting the current state\n", timeout)
	}
	rep, err := report.Gather(ctx, c.Client, dyn, res.Namespaces)
	if err != nil {
		return nil, err
	}
	rep.Timing, rep.WaitEnded, rep.Pending = c.Timing.Name, outcome, pending
	rep.Refused, rep.Skipped = res.Refused, res.Skipped
	rep.SettledAfterSeconds = took.Round(100 * time.Millisecond).Seconds()
	warnings, err := unservedWebhooks(ctx, c, objs)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		fmt.Fprintf(progress, "warning: %s\n", w)
	}
	rep.Warnings = warnings
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
