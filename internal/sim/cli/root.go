// Package cli implements the huddle-sim command: one file per verb (up,
// run, demo) and the cluster flags they share.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/getter"
	"k8s.io/klog/v2"

	"github.com/huddle-io/huddle/internal/instancetype"
	"github.com/huddle-io/huddle/internal/sim/binaries"
	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

// Exit codes.
const (
	exitOK         = 0
	exitNotRunning = 1 // run worked, but not every pod is running
	exitUsage      = 2
	exitFailed     = 3 // huddle-sim failed: the cause is printed in one line
	exitSignaled   = 130
)

// exitError carries an exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// Execute runs huddle-sim with os.Args and returns the exit code.
func Execute() int { return Run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr) }

// Run runs huddle-sim with args and returns the exit code.
func Run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	steps := &stepWriter{w: stderr}
	root := newRoot(stdin, stdout, steps)
	root.SetArgs(args)
	return finish(root.Execute(), steps.last(), stderr)
}

// finish tells how a command ended, in one line on stderr, and returns the
// exit code; step is the last step it began.
func finish(err error, step string, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		if strings.HasPrefix(err.Error(), "unknown command") || strings.HasPrefix(err.Error(), "unknown flag") {
			ee = &exitError{code: exitUsage, err: err}
		} else {
			ee = &exitError{code: exitFailed, err: err}
		}
	}
	var stop *interruption
	switch {
	case errors.As(ee.err, &stop):
		at := ""
		if step != "" {
			at = fmt.Sprintf(" at step %q", step)
		}
		fmt.Fprintf(stderr, "huddle-sim: %v%s; stopped everything it had started and removed its files\n", stop.cause, at)
	case ee.err != errSilent:
		fmt.Fprintf(stderr, "huddle-sim: %s\n", oneLine(ee.err.Error()))
	}
	if ee.code == exitUsage {
		fmt.Fprintln(stderr, "Run 'huddle-sim --help' for usage.")
	}
	return ee.code
}

// oneLine joins the lines of a message, so that the cause of a failure is
// one line however the error was built.
func oneLine(msg string) string {
	return strings.Join(strings.Fields(msg), " ")
}

// errSilent ends a command with its exit code and nothing more to say.
var errSilent = errors.New("")

func newRoot(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "huddle-sim",
		Short: "The real Kubernetes control plane with simulated EKS nodes and EBS disks",
		Long: `huddle-sim runs the real Kubernetes control plane — etcd, kube-apiserver,
kube-controller-manager (attach/detach, PV binder, Deployment, StatefulSet,
Job, node lifecycle, ...) and kube-scheduler, built from pinned Go modules —
with simulated kubelets and a simulated EBS CSI driver. Everything that
decides where pods go and when volumes attach is the real code; only the
nodes and the disks are simulated, and they follow EKS's rules (an EBS
volume attaches to one instance at a time, in one zone; a pod starts only
after its volume is attached).

Use it to see, before production, where every pod of your manifests lands
and which would hang:

  helm template my-release my-chart | huddle-sim run -f -

The first run builds the control plane (about 13 minutes on 2 cores) into
the cache directory; later runs boot in seconds.

However it ends, huddle-sim stops every process it started and removes
its directory. Exit status: 0 on success, 1 when run finds pods not
running, 2 for usage errors, 3 when huddle-sim fails (the cause in one
line, with the log to read when a component failed), 130 when interrupted
by SIGINT or SIGTERM (up: while it boots; once up, that is how it stops,
with 0).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &exitError{code: exitUsage, err: err} })
	gf := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(gf)
	root.PersistentFlags().AddGoFlag(gf.Lookup("v"))
	root.AddCommand(newUp(), newRun(), newDemo(), newBuild())
	return root
}

// nodesHelp explains, in the help of up and run, what a node is.
const nodesHelp = `Each node is an EKS node of --instance-type (default m5.xlarge) and
reports what one does: its capacity, and an allocatable smaller by the
EKS AMI's kube-reserved and the kubelet's 100Mi eviction threshold (an
m5.xlarge: 4 CPU, 3920m allocatable; about 15.3Gi of memory, 993Mi less
allocatable; 58 pods), and in its CSINode the EBS CSI driver's attach
limit (26). --node-cpu and --node-memory replace the type's capacity, and
allocatable follows by the same formulas. As on EKS, every node also runs
the add-ons' DaemonSet pods (aws-node, kube-proxy, ebs-csi-node,
eks-pod-identity-agent: 180m CPU, 104Mi and 4 pods of each node), and two
nodes run CoreDNS (100m, 70Mi each), unless --no-system-pods. Nodes go round-robin over
--zones, by default three, as an EKS node group over three subnets. A
Node object in -f keeps exactly the capacity and allocatable it gives.`

// clusterFlags are the flags that shape the simulated cluster.
type clusterFlags struct {
	nodes        int
	cpu, memory  string
	zones        []string
	instanceType string
	timing       string
	seed         uint64
	cacheDir     string
	noSystemPods bool
}

func (f *clusterFlags) add(cmd *cobra.Command, defaultTiming string, defaultZones []string) {
	fs := cmd.Flags()
	fs.IntVar(&f.nodes, "nodes", 3, "number of simulated nodes (when -f gives Node objects, only these unless --nodes is set)")
	fs.StringVar(&f.instanceType, "instance-type", instancetype.Default, "EC2 instance type of each node; it sets the node's capacity, its allocatable (capacity less the EKS AMI's kube-reserved and eviction threshold), max pods (the VPC CNI's ENI limit) and EBS attach limit: m5, m6i, m7g (arm64), c5, c6i, r5 or r6i, large to 4xlarge, or t3, large to 2xlarge")
	fs.StringVar(&f.cpu, "node-cpu", "", "CPU capacity of each node, in place of the instance type's vCPUs; allocatable is derived from it by the EKS formulas (default: the instance type's)")
	fs.StringVar(&f.memory, "node-memory", "", "memory capacity of each node as the kubelet reports it (the OS-visible memory, a little under the instance's nominal GiB), in place of the instance type's; allocatable is derived from it by the EKS formulas (default: the instance type's)")
	fs.StringSliceVar(&f.zones, "zones", defaultZones, "availability zones, used round-robin")
	fs.StringVar(&f.timing, "timing", defaultTiming, "timing profile: eks (the real defaults: 50s node monitor grace, 300s not-ready toleration, 6-minute max wait for unmount) or fast (the same mechanisms, compressed)")
	fs.Uint64Var(&f.seed, "seed", 0, "seed of the simulated EBS attach, detach and provisioning times, which are drawn from distributions with a tail (0: a random seed, printed at boot); the same seed draws the same times")
	fs.StringVar(&f.cacheDir, "cache-dir", binaries.DefaultCacheDir(), "where the built control-plane binaries are kept ($HUDDLE_SIM_CACHE)")
	fs.BoolVar(&f.noSystemPods, "no-system-pods", false, "leave out the EKS add-ons' pods (aws-node, kube-proxy, ebs-csi-node and eks-pod-identity-agent on every node, CoreDNS): nodes then offer workloads all of their allocatable, which no EKS node does")
}

// specs returns the nodes to register: those given as Node objects, plus
// --nodes of them from the flags when no Node objects were given or
// --nodes was set explicitly.
func (f *clusterFlags) specs(cmd *cobra.Command, fromManifests []kubelet.NodeSpec) ([]kubelet.NodeSpec, error) {
	specs := append([]kubelet.NodeSpec(nil), fromManifests...)
	if len(fromManifests) == 0 || cmd.Flags().Changed("nodes") {
		more, err := cluster.NodeFlags{Count: f.nodes, CPU: f.cpu, Memory: f.memory, Zones: f.zones, InstanceType: f.instanceType}.Specs()
		if err != nil {
			return nil, usageErrorf("%v", err)
		}
		specs = append(specs, more...)
	}
	if len(specs) == 0 {
		return nil, usageErrorf("no nodes: give --nodes N or Node objects in -f")
	}
	for _, s := range specs {
		if err := s.Check(); err != nil {
			return nil, usageErrorf("%v", err)
		}
	}
	return specs, nil
}

func (f *clusterFlags) profile() (timing.Profile, error) {
	p, err := timing.ByName(f.timing)
	if err != nil {
		return p, usageErrorf("--timing: %v", err)
	}
	return p, nil
}

// huddleFlags install huddle from its chart and pass it values.
type huddleFlags struct {
	huddle bool
	local  bool
	set    []string
	files  []string
}

func (f *huddleFlags) add(cmd *cobra.Command, withSwitch bool) {
	fs := cmd.Flags()
	if withSwitch {
		fs.BoolVar(&f.huddle, "huddle", false, "also install huddle from its Helm chart (charts/huddle, mode=cluster); its pods run as real huddle processes under their ServiceAccount. Needs root for the pods' network namespaces, else huddle runs as a local process")
	}
	fs.BoolVar(&f.local, "huddle-local", false, "run huddle as one local process (webhook on loopback, generated RBAC) instead of from its chart: the path used without root; for comparisons")
	_ = fs.MarkHidden("huddle-local")
	fs.StringArrayVar(&f.set, "huddle-set", nil, "a value for huddle's chart, as helm --set takes it (repeatable), e.g. --huddle-set failover=true")
	fs.StringArrayVar(&f.files, "huddle-values", nil, "a values file for huddle's chart, as helm -f takes it (repeatable)")
}

// values are the chart values the flags give; an error names the flag.
func (f *huddleFlags) values() (map[string]any, error) {
	if !f.huddle && (len(f.set) > 0 || len(f.files) > 0) {
		return nil, usageErrorf("--huddle-set and --huddle-values need --huddle")
	}
	opts := values.Options{ValueFiles: f.files, Values: f.set}
	v, err := opts.MergeValues(getter.Providers{})
	if err != nil {
		return nil, usageErrorf("huddle chart values: %v", err)
	}
	return v, nil
}

// signalContext is cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// interruption is an error caused by SIGINT or SIGTERM.
type interruption struct{ cause error }

func (i *interruption) Error() string { return i.cause.Error() }

// interrupted turns an error that came with a cancelled context (SIGINT,
// SIGTERM) into exit code 130; other errors exit 3.
func interrupted(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return &exitError{code: exitSignaled, err: &interruption{cause: context.Cause(ctx)}}
	}
	return err
}

// failed ends a command after err, once the cluster has started: an
// interruption exits 130; otherwise a component that has exited is the
// cause to tell, and its log is kept when the cluster's directory goes.
func failed(ctx context.Context, c *cluster.Cluster, err error) error {
	if ctx.Err() != nil {
		c.Stop()
		return interrupted(ctx, err)
	}
	if exited := c.Check(); exited != nil {
		err = exited
	}
	return c.StopAfter(err)
}

// stepWriter passes progress on and remembers the last step begun (lines
// not indented), to say where an interrupt came.
type stepWriter struct {
	w    io.Writer
	mu   sync.Mutex
	step string
}

func (s *stepWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		if line != "" && line[0] != ' ' && !strings.HasPrefix(line, "warning:") {
			s.step = line
		}
	}
	s.mu.Unlock()
	return s.w.Write(p)
}

// last is the last step, without what explains it (after a colon, a
// semicolon or in parentheses).
func (s *stepWriter) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	step := s.step
	for _, sep := range []string{": ", "; ", " ("} {
		step, _, _ = strings.Cut(step, sep)
	}
	return step
}
