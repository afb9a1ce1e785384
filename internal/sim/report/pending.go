package report

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
)

// HuddleTimers tells what huddle still has due in some namespaces, so that
// a wait does not call a huddle stuck while huddle is about to act on it
// (docs/huddle.md, "Every wait has an end"). It follows the keeper's rules
// (placement.PlanStuck and PlanMove):
//
//   - a member pinned to candidate nodes, to a node that is no longer home,
//     or to a home that is unavailable (gone, not Ready, cordoned), and
//     Unschedulable, is replaced once it has waited UnschedulableDeadline,
//     if its controller recreates it (ReplicaSet, StatefulSet: huddle's
//     default recreating owners); others are only reported;
//   - a huddle with spec.move: WhenStuck moves once a member has waited
//     spec.moveAfter at a healthy home;
//   - a move under way finishes, or is abandoned at MoveDeadline.
//
// A timer counts until Slack after it is due; one huddle has not honoured
// by then no longer holds the wait, and the report shows the pod stuck.
type HuddleTimers struct {
	Client  kubernetes.Interface
	Huddles dynamic.Interface
	// Namespaces are those to look at.
	Namespaces []string
	// UnschedulableDeadline and MoveDeadline are huddle's
	// --unschedulable-deadline and --move-deadline (the chart's
	// unschedulableDeadline and moveDeadline).
	UnschedulableDeadline, MoveDeadline time.Duration
	// Slack is how late huddle may act on a timer (a reconcile, an
	// eviction, the replacement's creation).
	Slack time.Duration
}

// Due is one thing huddle has due, and when.
type Due struct {
	At   time.Time
	What string
}

// String says what is due and in how long from now.
func (d Due) String(now time.Time) string {
	if in := d.At.Sub(now); in > 0 {
		return fmt.Sprintf("%s, due in %s", d.What, in.Round(time.Second))
	}
	return d.What + ", due now"
}

// recreating are the owners whose pods huddle replaces by default
// (controller.DefaultRecreatingOwners; a test keeps the two equal).
var recreating = map[string]bool{"apps/ReplicaSet": true, "apps/StatefulSet": true}

// Pending lists what is due, soonest first.
func (t HuddleTimers) Pending(ctx context.Context, now time.Time) ([]Due, error) {
	var dues []Due
	nodes, err := t.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	available := map[string]bool{}
	for _, n := range nodes.Items {
		ready := false
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				ready = true
			}
		}
		available[n.Name] = ready && !n.Spec.Unschedulable
	}
	add := func(at time.Time, what string) {
		if !now.After(at.Add(t.Slack)) {
			dues = append(dues, Due{At: at, What: what})
		}
	}
	for _, ns := range t.Namespaces {
		huddles, err := t.huddles(ctx, ns)
		if err != nil {
			return nil, err
		}
		for _, h := range huddles {
			if c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionMoving); c != nil && c.Status == metav1.ConditionTrue && h.Status.LastMove != nil {
				mv := h.Status.LastMove
				add(mv.Started.Add(t.MoveDeadline), fmt.Sprintf("claim %s/%s: the move to %s (started %s ago) finishing, or abandoned at its deadline %s", ns, h.Name, mv.To, now.Sub(mv.Started.Time).Round(time.Second), t.MoveDeadline))
			}
		}
		pods, err := t.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			pinnedBy := p.Annotations[placement.AnnotationPinnedBy]
			if pinnedBy == "" || p.Spec.NodeName != "" || p.DeletionTimestamp != nil {
				continue
			}
			since := unschedulableSince(p)
			if since.IsZero() {
				continue
			}
			h := huddles[claimOfPin(pinnedBy)]
			pinned := placement.PinnedNode(pinnedBy)
			atHome := pinned != "" && h != nil && pinned == h.Status.Home
			switch {
			case !atHome || !available[pinned]:
				if recreating[ownerKind(p)] {
					add(since.Add(t.UnschedulableDeadline), fmt.Sprintf("pod %s: replacement (Unschedulable since %s, unschedulable deadline %s)", p.Name, since.Format(time.TimeOnly), t.UnschedulableDeadline))
				}
			case h.Spec.Move == huddlev1.MoveWhenStuck:
				after := huddlev1.DefaultMoveAfter
				if h.Spec.MoveAfter != nil {
					after = h.Spec.MoveAfter.Duration
				}
				add(since.Add(after), fmt.Sprintf("claim %s/%s: a move (pod %s Unschedulable at home since %s, moveAfter %s)", ns, h.Name, p.Name, since.Format(time.TimeOnly), after))
			}
		}
	}
	sort.SliceStable(dues, func(i, j int) bool { return dues[i].At.Before(dues[j].At) })
	out := dues[:0]
	seen := map[string]bool{}
	for _, d := range dues {
		if !seen[d.What] {
			seen[d.What] = true
			out = append(out, d)
		}
	}
	return out, nil
}

// ownerKind is the group/Kind of p's controller ("" for none).
func ownerKind(p *corev1.Pod) string {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return ""
	}
	group, _, _ := strings.Cut(ref.APIVersion, "/")
	if !strings.Contains(ref.APIVersion, "/") {
		group = ""
	}
	if group == "" {
		return ref.Kind
	}
	return group + "/" + ref.Kind
}

// huddles reads the Huddles of ns by claim name; none without the API.
func (t HuddleTimers) huddles(ctx context.Context, ns string) (map[string]*huddlev1.Huddle, error) {
	out := map[string]*huddlev1.Huddle{}
	list, err := t.Huddles.Resource(huddlesResource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, item := range list.Items {
		h := &huddlev1.Huddle{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, h); err != nil {
			return nil, err
		}
		out[h.Name] = h
	}
	return out, nil
}

// unschedulableSince is when the scheduler last found no node for p.
func unschedulableSince(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

// claimOfPin is the claim's name in a pinned-by annotation ("claim
// ns/name home node", "claim ns/name candidates a,b").
func claimOfPin(pinnedBy string) string {
	rest, ok := strings.CutPrefix(pinnedBy, "claim ")
	if !ok {
		return ""
	}
	key, _, _ := strings.Cut(rest, " ")
	_, name, _ := strings.Cut(key, "/")
	return name
}
