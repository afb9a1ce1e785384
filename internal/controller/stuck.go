package controller

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
)

// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch

// AnnotationMoveBlocked on a Huddle says why a move it needs is not
// started (it could not finish); the status controller shows it in the
// Moving condition (reason MoveBlocked).
const AnnotationMoveBlocked = "huddle.io/move-blocked"

// replaceStuck ends the wait of pinned members that cannot bind (see
// placement.PlanStuck): those whose controller recreates them are evicted
// (a Pending pod is not held by budgets) and their replacements gated and
// placed again; the others are reported on the pod and the Huddle. It
// returns when the next member reaches its deadline (0: none waits).
func (r *Keeper) replaceStuck(ctx context.Context, f *ClaimFacts, pods map[string]*corev1.Pod, report bool) (time.Duration, error) {
	var plan placement.StuckPlan
	r.Gatherer.Cluster.View(func(nodes placement.Nodes) {
		plan = placement.PlanStuck(&f.Claim, nodes, r.Clock.Now(), r.UnschedulableDeadline)
	})
	for _, s := range plan.Report {
		r.reportStuck(ctx, f.Huddle, pods[s.Pod], s.Why)
	}
	after := plan.Next
	for _, s := range plan.Replace {
		pod := pods[s.Pod]
		if pod == nil {
			continue
		}
		if report {
			r.reportStuck(ctx, f.Huddle, pod, s.Why+"; not replaced: spec.repair is Report (set it to Evict to let huddle replace it)")
			continue
		}
		if wait := r.allow(f.Key); wait > 0 {
			after = placement.Sooner(after, wait)
			continue
		}
		wait, err := r.evict(ctx, f.Huddle, pod, s.Why, "ReplacedStuckMember", "Evicted "+pod.Name+": "+s.Why)
		if err != nil {
			return 0, err
		}
		if wait > 0 {
			after = placement.Sooner(after, wait)
			continue
		}
		stuckReplaced.Inc()
		r.clearPlacing(ctx, f, pod.Name)
	}
	return after, nil
}

// reportStuck writes why a stuck member is left on the pod, with a
// warning on the pod and the Huddle when it is new.
func (r *Keeper) reportStuck(ctx context.Context, hud *huddlev1.Huddle, pod *corev1.Pod, why string) {
	if pod == nil || pod.Annotations[AnnotationRepair] == why {
		return
	}
	r.annotate(ctx, pod, why, "StuckMember")
	r.Recorder.Event(hud, corev1.EventTypeWarning, "StuckMember", why)
}

// clearPlacing removes the Huddle's record of the member placed first if
// it names pod, which was just deleted: the next member is placed with
// what the cluster looks like now, without waiting for the record to
// expire. The update is guarded by the Huddle's resourceVersion, so a
// record a placer wrote meanwhile is never lost (a conflict leaves the
// record to expire: it no longer holds anyone once its pod is gone).
func (r *Keeper) clearPlacing(ctx context.Context, f *ClaimFacts, pod string) {
	hud := f.Huddle
	if name, _, _ := strings.Cut(hud.Annotations[AnnotationPlacing], " "); name != pod {
		return
	}
	h := hud.DeepCopy()
	delete(h.Annotations, AnnotationPlacing)
	if err := r.Client.Update(ctx, h); err != nil {
		log.FromContext(ctx).V(1).Info("Cannot clear the placing record", "huddle", client.ObjectKeyFromObject(hud), "err", err)
		return
	}
	f.Huddle = h
}

// budgets are the PodDisruptionBudgets that cover Ready members of the
// claim, as a move sees them.
func (r *Keeper) budgets(ctx context.Context, f *ClaimFacts) ([]placement.Budget, error) {
	if len(f.Pods) == 0 {
		return nil, nil
	}
	list := &policyv1.PodDisruptionBudgetList{}
	if err := r.Client.List(ctx, list, client.InNamespace(f.Pods[0].Namespace)); err != nil {
		return nil, err
	}
	var out []placement.Budget
	for i := range list.Items {
		pdb := &list.Items[i]
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		if err != nil {
			continue
		}
		var n int32
		for _, p := range f.Pods {
			if p.DeletionTimestamp == nil && podReady(p) && sel.Matches(labels.Set(p.Labels)) {
				n++
			}
		}
		if n > 0 {
			out = append(out, placement.Budget{Name: pdb.Name, Healthy: pdb.Status.CurrentHealthy, Desired: pdb.Status.DesiredHealthy, Members: n})
		}
	}
	return out, nil
}

// markBlocked records on the Huddle why a move it needs is not started,
// or clears the record, with a warning when the reason is new.
func (r *Keeper) markBlocked(ctx context.Context, f *ClaimFacts, plan placement.MovePlan) error {
	want := ""
	if plan.Blocked {
		want = plan.Message
	}
	hud := f.Huddle
	if hud.Annotations[AnnotationMoveBlocked] == want {
		return nil
	}
	h := hud.DeepCopy()
	if want == "" {
		delete(h.Annotations, AnnotationMoveBlocked)
	} else {
		metav1.SetMetaDataAnnotation(&h.ObjectMeta, AnnotationMoveBlocked, want)
	}
	if err := r.Client.Update(ctx, h); err != nil {
		// A conflict: the watch brings the Huddle back.
		return ignoreConflict(err)
	}
	f.Huddle = h
	if want != "" {
		r.Recorder.Event(h, corev1.EventTypeWarning, "MoveBlocked", want)
		log.FromContext(ctx).Info("Move blocked", "message", want)
	}
	return nil
}

// moveBlocked shows a blocked move in the Moving condition while no move
// runs.
func moveBlocked(s *huddlev1.HuddleStatus, why string) {
	if why == "" || (s.LastMove != nil && s.LastMove.Finished == nil) {
		return
	}
	meta.SetStatusCondition(&s.Conditions, metav1.Condition{Type: huddlev1.ConditionMoving, Status: metav1.ConditionFalse,
		Reason: "MoveBlocked", Message: "A move is needed but not started: " + why + ".", ObservedGeneration: s.ObservedGeneration})
}
