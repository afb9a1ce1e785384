package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/manifest"
)

type upOptions struct {
	huddle        huddleFlags
	cluster       clusterFlags
	files         []string
	namespace     string
	kubeconfigOut string
}

func newUp() *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Boot a simulated cluster and keep it running until Ctrl-C",
		Long: `up boots a simulated cluster, writes an admin kubeconfig and prints its path,
then runs until SIGINT or SIGTERM, when it stops every process it started
and removes its files, and exits 0. Interrupted while it boots, it stops
what it had started, removes its files and exits 130; if it fails (a
component does not start, or dies later), it does the same, prints the
cause in one line with the log to read, and exits 3.

Nodes come from the flags, or from Node objects in -f manifests; other
objects in the manifests are applied once the cluster is up.

` + nodesHelp + `

Simulate failures by annotating nodes:
  kubectl annotate node NODE sim.huddle.io/power=off      crash / power off (no heartbeats, pods frozen)
  kubectl annotate node NODE sim.huddle.io/power=on       power back on
  kubectl annotate node NODE sim.huddle.io/shutdown=true  stopped instance: off, plus the cloud's
                                                          node.cloudprovider.kubernetes.io/shutdown taint`,
		Example: `  huddle-sim up --nodes 3
  huddle-sim up -f nodes.yaml --kubeconfig-out ./kubeconfig --timing fast`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.run(cmd) },
	}
	o.cluster.add(cmd, "eks", cluster.DefaultZones)
	o.huddle.add(cmd, true)
	fs := cmd.Flags()
	fs.StringArrayVarP(&o.files, "filename", "f", nil, "manifests: Node objects become simulated nodes, the rest is applied (repeatable, - for stdin)")
	fs.StringVarP(&o.namespace, "namespace", "n", "default", "namespace for objects that name none")
	fs.StringVar(&o.kubeconfigOut, "kubeconfig-out", "", "also write the admin kubeconfig to this path (removed on exit)")
	return cmd
}

func (o *upOptions) run(cmd *cobra.Command) error {
	profile, err := o.cluster.profile()
	if err != nil {
		return err
	}
	huddleValues, err := o.huddle.values()
	if err != nil {
		return err
	}
	var objs []manifest.Object
	if len(o.files) > 0 {
		if objs, err = manifest.Load(o.files, cmd.InOrStdin()); err != nil {
			return usageErrorf("%v", err)
		}
	}
	nodeSpecs, objs, err := manifest.NodeSpecs(objs)
	if err != nil {
		return usageErrorf("%v", err)
	}
	specs, err := o.cluster.specs(cmd, nodeSpecs)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	stderr := cmd.ErrOrStderr()
	c, err := cluster.Start(ctx, cluster.Options{Timing: profile, Nodes: specs, CacheDir: o.cluster.cacheDir, Seed: o.cluster.seed, Progress: stderr, Huddle: o.huddle.huddle, HuddleLocal: o.huddle.local, HuddleValues: huddleValues, NoSystemPods: o.cluster.noSystemPods})
	if err != nil {
		return interrupted(ctx, err)
	}
	defer c.Stop()
	if len(objs) > 0 {
		res, err := manifest.Apply(ctx, c.Admin, objs, manifest.Options{Namespace: o.namespace, Progress: stderr})
		if err != nil {
			return failed(ctx, c, err)
		}
		for _, s := range res.Skipped {
			fmt.Fprintf(stderr, "warning: %s\n", s)
		}
		for _, s := range res.Refused {
			fmt.Fprintf(stderr, "refused: %s\n", s)
		}
		fmt.Fprintf(stderr, "Applied %d objects\n", res.Applied)
	}
	kubeconfig := c.Kubeconfig
	if o.kubeconfigOut != "" {
		b, err := os.ReadFile(c.Kubeconfig)
		if err == nil {
			err = os.WriteFile(o.kubeconfigOut, b, 0o600)
		}
		if err != nil {
			return failed(ctx, c, fmt.Errorf("--kubeconfig-out: %w", err))
		}
		defer os.Remove(o.kubeconfigOut)
		kubeconfig = o.kubeconfigOut
	}
	fmt.Fprintf(stderr, "Cluster ready in %.1fs (boot, binaries cached): %d nodes, timing %s, Kubernetes components logs in %s\n",
		c.BootTime.Seconds(), len(specs), profile.Name, c.Dir)
	fmt.Fprintln(cmd.OutOrStdout(), kubeconfig)
	if o.huddle.huddle {
		if err := printHuddleAccess(ctx, c, stderr); err != nil {
			return failed(ctx, c, err)
		}
	}
	if err := waitForInterrupt(ctx, c, stderr); err != nil {
		return failed(ctx, c, err)
	}
	start := time.Now()
	c.Stop()
	fmt.Fprintf(stderr, "Stopped in %.1fs and removed %s\n", time.Since(start).Seconds(), c.Dir)
	return nil
}

// printHuddleAccess tells how to read huddle's logs and metrics: there is
// no kubelet API for kubectl logs or port-forward, so logs are files and
// metrics a forward to the leader.
func printHuddleAccess(ctx context.Context, c *cluster.Cluster, w io.Writer) error {
	if c.Huddle != nil { // the local-process path
		fmt.Fprintf(w, "huddle runs as a local process: log %s/huddle.log, metrics %s\n", c.Dir, c.HuddleMetrics)
		return nil
	}
	metrics, err := c.ForwardHuddleMetrics(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "huddle runs from its chart as release %s in namespace %s (helm values: %v).\n", cluster.HuddleRelease, cluster.HuddleNamespace, c.HuddleValues())
	fmt.Fprintf(w, "  logs (one file per container start, as /var/log/pods): %s/pods/%s_<pod>_<uid>/huddle/<restart>.log\n", c.Dir, cluster.HuddleNamespace)
	fmt.Fprintf(w, "  metrics of the leading replica: curl %s\n", metrics)
	return nil
}
