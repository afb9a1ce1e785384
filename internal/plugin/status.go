package plugin

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// installHint says how to install huddle, for errors that find it missing.
const installHint = "install huddle first, from a checkout of github.com/huddle-io/huddle: helm install huddle ./charts/huddle -n huddle-system --create-namespace --set image.repository=<your registry>/huddle (docs/install.md says how to build and push the image)"

// ExitUnhealthy is status's exit code when a huddle is Split or Degraded.
const ExitUnhealthy = 2

func newStatusCommand(o *Options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "status [HUDDLE]",
		Short: "Every huddle: home, members per node, ready, phase, fits, last move",
		Long: `status lists the huddles of a namespace (-n, or the context's), or of every
namespace (-A), from their Huddle objects: the home node, how many members
run on which node, how many are Ready, the phase, whether home fits the whole
huddle's demand, and the last move.

Phases: Placing (no home yet), Huddled (every member runs at home), Pending
(members wait at home: gated or unschedulable), Split (members on two nodes),
Moving (a move is under way), Degraded (home not Ready, or a member cannot be
placed). 'kubectl huddle explain huddle/NAME' says why and what to do.

status exits with code 2 when any huddle it lists is Split or Degraded, so
scripts and CI can check a cluster with it; other failures exit with 1.`,
		Example: `  # The huddles of the current namespace
  kubectl huddle status

  # Every namespace, with each member and its node
  kubectl huddle status -A -o wide

  # One huddle, as YAML
  kubectl huddle status sentry-data -n sentry -o yaml

  # In a script: fail when a huddle is split or degraded
  kubectl huddle status -A >/dev/null || echo "a huddle needs attention"`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return o.status(cmd.Context(), args) },
	}
	cmd.Flags().BoolVarP(&o.AllNamespaces, "all-namespaces", "A", false, "list the huddles of every namespace")
	o.addOutput(cmd, "table, wide (lists every member and its node), json, yaml")
	return cmd
}

func (o *Options) status(ctx context.Context, args []string) error {
	if err := o.checkOutput(OutputTable, OutputWide, OutputJSON, OutputYAML); err != nil {
		return err
	}
	if o.AllNamespaces && len(args) > 0 {
		return fmt.Errorf("a huddle is named within a namespace: use -n NAMESPACE with HUDDLE, not -A")
	}
	_, c, ns, err := o.clients()
	if err != nil {
		return err
	}
	list := &huddlev1.HuddleList{}
	if len(args) == 1 {
		h := &huddlev1.Huddle{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: args[0]}, h); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("no huddle %s in namespace %s: huddle creates one per shared claim, named as the claim (kubectl huddle status lists them; -A for every namespace)", args[0], ns)
			}
			return apiError(err)
		}
		list.Items = []huddlev1.Huddle{*h}
	} else {
		var opts []client.ListOption
		if !o.AllNamespaces {
			opts = append(opts, client.InNamespace(ns))
		}
		if err := c.List(ctx, list, opts...); err != nil {
			return apiError(err)
		}
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	switch o.Output {
	case OutputJSON, OutputYAML:
		list.SetGroupVersionKind(huddlev1.GroupVersion.WithKind("HuddleList"))
		var p printers.ResourcePrinter = &printers.JSONPrinter{}
		if o.Output == OutputYAML {
			p = &printers.YAMLPrinter{}
		}
		if err := p.PrintObj(list, o.Streams.Out); err != nil {
			return err
		}
	default:
		if len(list.Items) == 0 {
			where := "namespace " + ns
			if o.AllNamespaces {
				where = "any namespace"
			}
			fmt.Fprintf(o.Streams.ErrOut, "No huddles in %s.\n", where)
			return nil
		}
		p := printers.NewTablePrinter(printers.PrintOptions{WithNamespace: o.AllNamespaces, Wide: o.Output == OutputWide})
		if err := p.PrintObj(statusTable(list.Items, time.Now()), o.Streams.Out); err != nil {
			return err
		}
	}
	return unhealthy(list.Items)
}

// unhealthy is an ExitError naming the huddles that are Split or
// Degraded, nil if none is.
func unhealthy(hs []huddlev1.Huddle) error {
	var bad []string
	for _, h := range hs {
		if h.Status.Phase == huddlev1.PhaseSplit || h.Status.Phase == huddlev1.PhaseDegraded {
			bad = append(bad, fmt.Sprintf("%s/%s (%s)", h.Namespace, h.Name, h.Status.Phase))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return &ExitError{Code: ExitUnhealthy, Err: fmt.Errorf("%d huddle(s) Split or Degraded: %s; kubectl huddle explain huddle/NAME says why", len(bad), strings.Join(bad, ", "))}
}

// apiError explains the errors of a cluster without huddle's API.
func apiError(err error) error {
	if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
		return fmt.Errorf("this cluster has no Huddle API (huddle.io/v1alpha1): %s", installHint)
	}
	return err
}

// statusTable is the huddles as a kubectl table; wide adds the members.
func statusTable(hs []huddlev1.Huddle, now time.Time) *metav1.Table {
	t := &metav1.Table{ColumnDefinitions: []metav1.TableColumnDefinition{
		{Name: "Name", Type: "string", Format: "name"},
		{Name: "Home", Type: "string"},
		{Name: "Members", Type: "string", Description: "members per node"},
		{Name: "Ready", Type: "string"},
		{Name: "Phase", Type: "string"},
		{Name: "Fits", Type: "string"},
		{Name: "Last Move", Type: "string"},
		{Name: "Age", Type: "string"},
		{Name: "Pods", Type: "string", Priority: 1, Description: "each member and its node"},
	}}
	for i := range hs {
		h := &hs[i]
		s := h.Status
		t.Rows = append(t.Rows, metav1.TableRow{
			Object: runtime.RawExtension{Object: h},
			Cells: []any{h.Name, orDash(s.Home), perNode(s.Members), fmt.Sprintf("%d/%d", s.ReadyCount, s.MemberCount),
				orDash(string(s.Phase)), fits(s.Conditions), lastMove(s.LastMove, now), age(h.CreationTimestamp.Time, now), pods(s.Members)},
		})
	}
	return t
}

// perNode is "node:count" for each node members are on, home first is not
// assumed: sorted by count, then name; unbound members as "unbound:n".
func perNode(ms []huddlev1.Member) string {
	if len(ms) == 0 {
		return "0"
	}
	count := map[string]int{}
	for _, m := range ms {
		n := m.Node
		if n == "" {
			n = "unbound"
		}
		count[n]++
	}
	nodes := make([]string, 0, len(count))
	for n := range count {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool {
		return count[nodes[i]] > count[nodes[j]] || count[nodes[i]] == count[nodes[j]] && nodes[i] < nodes[j]
	})
	parts := make([]string, len(nodes))
	for i, n := range nodes {
		parts[i] = fmt.Sprintf("%s:%d", n, count[n])
	}
	return strings.Join(parts, " ")
}

func pods(ms []huddlev1.Member) string {
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.Pod + "@" + orDash(m.Node)
		if m.Reason != "" {
			parts[i] += " (" + m.Reason + ")"
		}
	}
	return strings.Join(parts, ", ")
}

func fits(cs []metav1.Condition) string {
	c := meta.FindStatusCondition(cs, huddlev1.ConditionFits)
	switch {
	case c == nil:
		return "-"
	case c.Status == metav1.ConditionTrue:
		return "yes"
	case c.Status == metav1.ConditionFalse:
		return "no"
	}
	return "unknown"
}

func lastMove(m *huddlev1.Move, now time.Time) string {
	if m == nil {
		return "-"
	}
	result := m.Result
	if result == "" {
		result = "in progress"
	}
	return fmt.Sprintf("%s->%s %s %s ago", orDash(m.From), m.To, result, duration.HumanDuration(now.Sub(m.Started.Time)))
}

func age(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(now.Sub(t))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
