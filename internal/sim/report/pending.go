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
// (docs/huddle.md, "Every wait has an end"):
//
//   - a member pinned to candidate nodes, or to a node that is no longer
//     home, and Unschedulable is replaced once it has waited
//     UnschedulableDeadline;
//   - a huddle with spec.move: WhenStuck moves once a member has waited
//     spec.moveAfter at home;
//   - a move under way finishes, or is abandoned at its deadline.
//
// A timer counts until Slack after it is due; one huddle has not honoured
// by then no longer holds the wait, and the report shows the pod stuck.
type HuddleTimers struct {
	Client  kubernetes.Interface
	Huddles dynamic.Interface
	// Namespaces are those to look at.
	Namespaces []string
	// UnschedulableDeadline is huddle's --unschedulable-deadline (the
	// chart's unschedulableDeadline).
	UnschedulableDeadline time.Duration
	// Slack is how late huddle may act on a timer (a reconcile, an
	// eviction, the replacement's creation).
	Slack time.Duration
}

// Pending lists what is due, each with when, soonest first.
func (t HuddleTimers) Pending(ctx context.Context, now time.Time) ([]string, error) {
	type due struct {
		at   time.Time
		what string
	}
	var dues []due
	for _, ns := range t.Namespaces {
		huddles, err := t.huddles(ctx, ns)
		if err != nil {
			return nil, err
		}
		for _, h := range huddles {
			if c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionMoving); c != nil && c.Status == metav1.ConditionTrue && h.Status.LastMove != nil {
				dues = append(dues, due{at: now, what: fmt.Sprintf("claim %s/%s: moving to %s (started %s ago)", ns, h.Name, h.Status.LastMove.To, now.Sub(h.Status.LastMove.Started.Time).Round(time.Second))})
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
			claim := claimOfPin(pinnedBy)
			h := huddles[claim]
			pinned := placement.PinnedNode(pinnedBy)
			var at time.Time
			var what string
			switch {
			case pinned == "" || h == nil || pinned != h.Status.Home:
				at = since.Add(t.UnschedulableDeadline)
				what = fmt.Sprintf("pod %s: replacement (Unschedulable since %s, unschedulable deadline %s)", p.Name, since.Format(time.TimeOnly), t.UnschedulableDeadline)
			case h.Spec.Move == huddlev1.MoveWhenStuck:
				after := huddlev1.DefaultMoveAfter
				if h.Spec.MoveAfter != nil {
					after = h.Spec.MoveAfter.Duration
				}
				at = since.Add(after)
				what = fmt.Sprintf("claim %s/%s: a move (pod %s Unschedulable at home since %s, moveAfter %s)", ns, h.Name, p.Name, since.Format(time.TimeOnly), after)
			default:
				continue // waits at home for room: reported, not replaced
			}
			if now.After(at.Add(t.Slack)) {
				continue
			}
			dues = append(dues, due{at: at, what: what})
		}
	}
	sort.SliceStable(dues, func(i, j int) bool { return dues[i].at.Before(dues[j].at) })
	seen := map[string]bool{}
	var out []string
	for _, d := range dues {
		line := d.what
		if in := d.at.Sub(now); in > 0 {
			line += fmt.Sprintf(", due in %s", in.Round(time.Second))
		}
		if !seen[line] {
			seen[line] = true
			out = append(out, line)
		}
	}
	return out, nil
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
