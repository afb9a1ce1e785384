package plugin

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/instancetype"
	"github.com/huddle-io/huddle/internal/placement"
)

type planOptions struct {
	*Options
	file, instanceType, prices string
	fromCluster                bool
}

func newPlanCommand(o *Options) *cobra.Command {
	p := &planOptions{Options: o}
	cmd := &cobra.Command{
		Use:   "plan -f FILE|- [--instance-type TYPE | --from-cluster]",
		Short: "Plan a chart's huddles offline: shared claims, demand, fit, instance types, storage cost",
		Long: `plan reads manifests (kubectl apply -f files, helm template output) and, with no
cluster, finds the claims that several pods share: each is a huddle, and huddle
will run all its pods on one node.

For each huddle it computes the whole demand with the code the huddle controller
uses: every workload's pods at once (Deployment replicas plus maxSurge,
StatefulSet replicas, Job and CronJob parallelism) times one pod's requests as
the scheduler counts them (init containers, sidecars, limits standing in for
missing requests), plus bare pods. It says whether that fits the allocatable of
one node of --instance-type (the EKS figures: kube-reserved and eviction
thresholds subtracted; default m5.xlarge), or with --from-cluster any node of
the current cluster as it is now, and names the smallest instance type of each
family that would fit.

It then prices the claim's size as EBS gp3 kept on one node by huddle and as the
ReadWriteMany alternatives (EFS Standard, One Zone, Infrequent Access), with
their trade-offs. The prices are a table shipped with kubectl huddle (region
and date printed with them); --prices FILE replaces it with a file of the same
form:

  region: us-east-1
  asOf: "2025-06-01"
  source: AWS pricing pages (aws.amazon.com/ebs/pricing, /efs/pricing)
  gbMonth:            # USD per GB-month
    ebs-gp3: 0.08
    efs-standard: 0.30
    efs-standard-ia: 0.016
    efs-one-zone: 0.16
    efs-one-zone-ia: 0.0133

Reported apart: claims only one pod mounts, ReadWriteMany and ReadWriteOncePod
claims (not huddle's concern), a StatefulSet's volumeClaimTemplates (one claim
per pod), and DaemonSets that mount a claim (their pods run on every node, so
they cannot huddle). A claim whose StorageClass is not in the manifests is
assumed to be EBS, as EKS's default classes are.`,
		Example: `  # A chart on the default m5.xlarge
  helm template sentry sentry/sentry | kubectl huddle plan -f -

  # On another instance type
  kubectl huddle plan -f sentry.yaml --instance-type r6i.xlarge

  # Against the nodes of the current cluster, with their pods as they are
  kubectl huddle plan -f sentry.yaml --from-cluster

  # Prices of another region or date
  kubectl huddle plan -f sentry.yaml --prices eu-west-1.yaml -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return p.run(cmd.Context()) },
	}
	cmd.Flags().StringVarP(&p.file, "filename", "f", "", "manifests to plan (YAML or JSON, several documents; - for standard input)")
	cmd.Flags().StringVar(&p.instanceType, "instance-type", "", "EC2 instance type of the node a huddle must fit (default "+instancetype.Default+"); one of "+strings.Join(instancetype.Names(), ", "))
	cmd.Flags().BoolVar(&p.fromCluster, "from-cluster", false, "compare with the nodes of the current cluster (--kubeconfig, --context) and what already runs there, instead of an instance type")
	cmd.Flags().StringVar(&p.prices, "prices", "", "YAML or JSON file of storage prices (format above) in place of the built-in us-east-1 table")
	o.addOutput(cmd, "table, wide (every instance type that fits, not just the smallest of each family), json, yaml")
	return cmd
}

func (p *planOptions) run(ctx context.Context) error {
	if err := p.checkOutput(OutputTable, OutputWide, OutputJSON, OutputYAML); err != nil {
		return err
	}
	if p.file == "" {
		return fmt.Errorf("plan needs manifests: -f FILE, or -f - to read them from standard input (e.g. helm template ... | kubectl huddle plan -f -)")
	}
	if p.fromCluster && p.instanceType != "" {
		return fmt.Errorf("--instance-type and --from-cluster exclude each other: plan against one node of a type, or against the cluster's nodes")
	}
	prices := DefaultPrices()
	if p.prices != "" {
		var err error
		if prices, err = LoadPrices(p.prices); err != nil {
			return err
		}
	}
	var target Target
	if p.fromCluster {
		var err error
		if target, err = p.clusterTarget(ctx); err != nil {
			return err
		}
	} else {
		name := p.instanceType
		if name == "" {
			name = instancetype.Default
		}
		t, err := instancetype.Lookup(name)
		if err != nil {
			return fmt.Errorf("--instance-type: unknown instance type %q; kubectl huddle knows %s", name, strings.Join(instancetype.Names(), ", "))
		}
		alloc := placement.FromList(t.Allocatable())
		alloc.Scalar = nil // ephemeral storage: no template here asks for it
		addOns := placement.FromList(instancetype.EKSAddOns())
		addOns.Scalar = nil
		target = Target{Type: &t, Name: fmt.Sprintf("one %s node (allocatable %s, of which the EKS add-ons' DaemonSets take %s)", t.Name, formatResources(alloc), formatResources(addOns))}
	}
	m, err := ReadManifest(p.file, p.Streams.In)
	if err != nil {
		return err
	}
	r := Plan(m, target, prices)
	switch p.Output {
	case OutputJSON, OutputYAML:
		if err := printData(p.Streams.Out, p.Output, r); err != nil {
			return err
		}
	default:
		printPlan(p.Streams.Out, r, p.Output == OutputWide)
	}
	if len(r.Huddles) == 0 {
		return fmt.Errorf("nothing to huddle in %s: no ReadWriteOnce claim is mounted by two or more pods (%d objects read, %d of other kinds skipped)", m.Path, len(m.Objects), m.Skipped)
	}
	return nil
}

// clusterTarget is the current cluster's nodes with what runs there, as
// the controller's node tracker sees them.
func (p *planOptions) clusterTarget(ctx context.Context) (Target, error) {
	cs, _, _, err := p.clients()
	if err != nil {
		return Target{}, err
	}
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return Target{}, fmt.Errorf("--from-cluster: list nodes: %w", err)
	}
	pods, err := cs.CoreV1().Pods("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return Target{}, fmt.Errorf("--from-cluster: list pods: %w", err)
	}
	csiNodes, err := cs.StorageV1().CSINodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return Target{}, fmt.Errorf("--from-cluster: list CSINodes: %w", err)
	}
	c := controller.NewCluster()
	for i := range nodes.Items {
		c.NodeHandler().OnAdd(&nodes.Items[i], true)
	}
	for i := range pods.Items {
		c.PodHandler().OnAdd(&pods.Items[i], true)
	}
	for i := range csiNodes.Items {
		c.CSINodeHandler().OnAdd(&csiNodes.Items[i], true)
	}
	var list nodeList
	c.View(func(n placement.Nodes) {
		for i := range n.Len() {
			node := *n.At(i)
			list = append(list, &node)
		}
	})
	if len(list) == 0 {
		return Target{}, fmt.Errorf("--from-cluster: the cluster has no nodes")
	}
	ctxName := p.Config.Context
	if ctxName == nil || *ctxName == "" {
		raw, _ := p.Config.ToRawKubeConfigLoader().RawConfig()
		s := raw.CurrentContext
		ctxName = &s
	}
	return Target{Nodes: list, Name: fmt.Sprintf("the %d nodes of context %s, with the pods they run now", len(list), *ctxName)}, nil
}

// printPlan writes the report for a reader.
func printPlan(out io.Writer, r *Report, wide bool) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "Plan for %s\nagainst %s\n", r.File, r.Target)
	for _, h := range r.Huddles {
		size := h.Size
		if size == "" {
			size = "size unknown"
		}
		fmt.Fprintf(w, "\nHUDDLE %s (%s, %s, %d during rolling updates)\n", h.Claim, size, plural(h.Pods, "pod"), h.PodsAtOnce)
		fmt.Fprintf(w, "  WORKLOAD\tPODS AT ONCE\tPER POD\n")
		for _, m := range h.Members {
			fmt.Fprintf(w, "  %s\t%d\t%s\n", m.Workload, m.Pods, m.PerPod)
		}
		fmt.Fprintf(w, "  demand (whole huddle on one node):\t%s\n", h.Demand)
		if h.Fits {
			fmt.Fprintf(w, "  fits:\tyes\n")
		} else {
			fmt.Fprintf(w, "  fits:\tNO: %s\n", h.Shortfall)
		}
		fits := h.FitsOn
		if wide {
			fits = h.TypesThatFit
		}
		if len(fits) == 0 {
			fmt.Fprintf(w, "  smallest types that fit:\tnone of the known types; split the huddle (one claim per group of pods) or use ReadWriteMany storage\n")
		} else {
			label := "smallest types that fit:"
			if wide {
				label = "types that fit:"
			}
			fmt.Fprintf(w, "  %s\t%s\n", label, strings.Join(fits, ", "))
		}
		for _, n := range h.Notes {
			fmt.Fprintf(w, "  note:\t%s\n", n)
		}
		if h.Size == "" {
			continue
		}
		fmt.Fprintf(w, "  STORAGE FOR %s\tACCESS\tUSD/MONTH\tTRADE-OFF\n", h.Size)
		for _, s := range h.Storage {
			fmt.Fprintf(w, "  %s\t%s\t%.2f\t%s\n", s.Name, s.Access, s.Monthly, s.TradeOff)
		}
	}
	section := func(title string, notes []Note) {
		if len(notes) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n", title)
		for _, n := range notes {
			fmt.Fprintf(w, "  %s:\t%s\n", n.Name, n.Why)
		}
	}
	section("NOT SHARED", r.NotShared)
	section("PER-POD CLAIMS", r.PerPod)
	section("NOT HUDDLE-ABLE", r.NotHuddleable)
	fmt.Fprintf(w, "\nPrices: %s, as of %s; %s\n", r.Prices.Region, r.Prices.AsOf, r.Prices.Source)
}
