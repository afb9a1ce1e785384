package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
)

// +kubebuilder:rbac:groups="",resources=pods/eviction,verbs=create

// AnnotationRepair on a pod says what repair did or could not do about it
// being away from home; the Huddle's status shows it next to the member.
const AnnotationRepair = "huddle.io/repair"

// Keeper keeps running huddles together: members bound away from home
// (a split from before huddle, a pod placed while huddle was down, a pod
// hanging on a Multi-Attach error) are evicted through the Eviction API,
// so PodDisruptionBudgets are respected, and their replacements are gated
// and pinned home by the Placer. It decides with placement.PlanRepair;
// what it did is written on the pods, so nothing lives only in memory
// except rate limits and backoff.
type Keeper struct {
	Client   client.Client
	Gatherer *Gatherer
	Recorder record.EventRecorder
	// Evictions limits evictions cluster-wide; PerHuddle makes each
	// huddle's own limiter.
	Evictions *rate.Limiter
	PerHuddle func() *rate.Limiter
	// MinMoveInterval is the least time between two moves of a huddle
	// (below zero: moves are off).
	MinMoveInterval time.Duration
	// MoveDeadline bounds a whole move: an unfinished move is abandoned
	// after it (0: no bound).
	MoveDeadline time.Duration
	// UnschedulableDeadline is how long a pinned member may stay
	// Unschedulable before it is replaced (see placement.PlanStuck).
	UnschedulableDeadline time.Duration
	// Clock is the keeper's time (a FakeClock in tests).
	Clock clock.Clock

	mu       sync.Mutex
	limiters map[string]*rate.Limiter // claim key -> limiter
	blocked  map[string]int           // pod key -> refused evictions in a row
	// waiting are the claims (namespace/name) of huddles that would move
	// (spec.move: WhenStuck, a member stuck at home past moveAfter) but
	// have not started: no other node fits, or a budget or the per-hour
	// cap stops it. What they wait for comes as node changes and
	// PodDisruptionBudget events (see Waiting, WaitingIn), not as
	// a poll.
	waiting map[string]bool
	// wrote are the claims whose Huddle this keeper just wrote a move
	// to, with the resourceVersion it read before the write and when:
	// until the cache has a newer Huddle, repair waits (behindMove).
	wrote map[string]wroteMove
}

// wroteMove is a move written to a Huddle whose cache may not have it yet.
type wroteMove struct {
	before string
	at     time.Time
}

// moveCacheWait bounds how long repair waits for the cache to show a move
// this keeper wrote: a watch event lost past it is made up for by the
// resourceVersion conflicts of any write.
const moveCacheWait = 10 * time.Second

func (r *Keeper) wroteMove(claim, before string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wrote == nil {
		r.wrote = map[string]wroteMove{}
	}
	r.wrote[claim] = wroteMove{before: before, at: r.Clock.Now()}
}

// behindMove says whether the cache still has the Huddle this keeper read
// before it wrote a move to it (see wrote), and forgets the write once
// the cache has moved on or the wait is over.
func (r *Keeper) behindMove(f *ClaimFacts) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	w, ok := r.wrote[f.Key]
	if !ok {
		return false
	}
	if f.Huddle.ResourceVersion == w.before && r.Clock.Since(w.at) < moveCacheWait {
		return true
	}
	delete(r.wrote, f.Key)
	return false
}

// Backoff of evictions refused with 429 (a PodDisruptionBudget, or the API
// server's own rate limit).
const (
	evictionBackoff    = 2 * time.Second
	evictionBackoffMax = 2 * time.Minute
	// evictionConflictRetry is when to look again after an eviction
	// answered 409 Conflict.
	evictionConflictRetry = time.Second
)

// Reconcile repairs the huddle of one claim (the request names the claim).
func (r *Keeper) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	f, err := r.Gatherer.Claim(ctx, req.Namespace, req.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if f.Missing || !f.Shared || f.Huddle == nil {
		r.forget(f.Key)
		if f.Huddle != nil && pendingRequest(f.Huddle) != nil {
			// Answer a move request even where there is nothing to move,
			// so kubectl huddle move does not wait in vain.
			_, err := r.answerRequest(ctx, f.Huddle, "move refused: claim "+f.Key+" is not a shared claim that huddle keeps together (missing, not ReadWriteOnce, mounted by fewer than two pods, or opted out); there is nothing to move", nil)
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, nil
	}
	if r.behindMove(f) {
		// The cache does not have the move this keeper just wrote yet:
		// repair from it would not know the move (a StuckMember warning
		// telling a moving huddle to move, say).
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	before := f.MoveTarget
	moveCheck, err := r.move(ctx, f)
	if err != nil {
		return ctrl.Result{}, err
	}
	if f.MoveTarget != "" && f.MoveTarget != before {
		// A move just started (or turned to a new target): evict once the
		// cache this controller shares with the placer has the move, so
		// the members' replacements are pinned to the target, not to the
		// old home. The Huddle's update brings this claim back; the
		// requeue is in case that event is lost. f.Huddle is the version
		// the move was written over: move's earlier writes (a cleared
		// MoveBlocked) update it, the move's own does not, so a cache
		// with one of those earlier writes is still behind the move.
		r.wroteMove(f.Key, f.Huddle.ResourceVersion)
		return ctrl.Result{RequeueAfter: time.Second}, nil
	}
	var plan placement.Repair
	r.Gatherer.Cluster.View(func(nodes placement.Nodes) { plan = placement.PlanRepair(&f.Claim, nodes) })
	pods := map[string]*corev1.Pod{}
	for _, p := range f.Pods {
		pods[p.Name] = p
	}
	report := f.Huddle.Spec.Repair == huddlev1.RepairReport
	for _, a := range plan.Leave {
		why := a.Why
		if plan.Wait != "" {
			why = plan.Wait
		}
		r.annotate(ctx, pods[a.Pod], why, "AwayFromHome")
	}
	var after time.Duration
	for _, a := range plan.Evict {
		pod := pods[a.Pod]
		if pod == nil {
			continue
		}
		if report {
			r.annotate(ctx, pod, a.Why+"; not evicted: spec.repair is Report (set it to Evict to bring it home)", "AwayFromHome")
			continue
		}
		if wait := r.allow(f.Key); wait > 0 {
			after = placement.Sooner(after, wait)
			continue
		}
		wait, err := r.evict(ctx, f.Huddle, pod, a.Why, "EvictedAwayFromHome",
			fmt.Sprintf("Evicted %s: %s; its replacement is pinned home", pod.Name, a.Why))
		if err != nil {
			return ctrl.Result{}, err
		}
		after = placement.Sooner(after, wait)
	}
	stuckCheck, err := r.replaceStuck(ctx, f, pods, report)
	if err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: placement.Sooner(placement.Sooner(after, moveCheck), stuckCheck)}, nil
}

// move starts, rolls forward, finishes or abandons a move of the huddle,
// recording it in the Huddle's status.lastMove before anything acts on it,
// so a restarted controller continues the move. It returns when to look
// again (0: no need).
func (r *Keeper) move(ctx context.Context, f *ClaimFacts) (time.Duration, error) {
	hud := f.Huddle
	in := placement.MoveInput{Claim: &f.Claim, Now: r.Clock.Now(), WhenStuck: hud.Spec.Move == huddlev1.MoveWhenStuck,
		After: huddlev1.DefaultMoveAfter, MinInterval: r.MinMoveInterval, Deadline: r.MoveDeadline,
		Report: hud.Spec.Repair == huddlev1.RepairReport}
	if hud.Spec.MoveAfter != nil {
		in.After = hud.Spec.MoveAfter.Duration
	}
	if mv := hud.Status.LastMove; mv != nil {
		in.LastStarted = mv.Started.Time
	}
	if pendingRequest(hud) != nil {
		return r.requestedMove(ctx, f, in)
	}
	plan, home, err := r.planMove(ctx, f, in, in.WhenStuck && f.MoveTarget == "", placement.PlanMove)
	if err != nil {
		return 0, err
	}
	// Look again when a stuck member's wait reaches moveAfter, and while a
	// move runs. A member stuck past moveAfter with no move begun waits
	// for a node that fits, a budget that allows the evictions or the
	// per-hour cap: the first two come as events (Waiting, WaitingIn), so
	// only the cap is a time to look again at, and the safety resync
	// bounds what no event says. (This was a poll every second for as long
	// as the member stayed stuck.)
	var again time.Duration
	stuck := false
	if in.WhenStuck || f.MoveTarget != "" {
		for _, m := range f.Members {
			if m.UnschedulableSince.IsZero() {
				continue
			}
			due := m.UnschedulableSince.Add(in.After).Sub(in.Now)
			if due <= 0 {
				stuck = true
				due = jittered()
				if capped := in.LastStarted.Add(in.MinInterval).Sub(in.Now); !in.LastStarted.IsZero() && in.MinInterval > 0 && capped > 0 {
					due = min(due, capped)
				}
			}
			again = placement.Sooner(again, max(time.Second, due))
		}
		if f.MoveTarget != "" {
			again = placement.Sooner(again, 5*time.Second)
		}
	}
	// With moves off or spec.repair: Report no node change can start a
	// move; only a change of the flag or the spec (a Huddle event) can.
	r.setWaiting(f.Key, stuck && f.MoveTarget == "" && plan.Action == placement.MoveNone && in.MinInterval >= 0 && !in.Report)
	if err := r.markBlocked(ctx, f, plan); err != nil {
		return 0, err
	}
	hud = f.Huddle
	if plan.Action == placement.MoveNone {
		return again, nil
	}
	now := metav1.NewTime(in.Now)
	hud = hud.DeepCopy()
	reason, typ := "", corev1.EventTypeNormal
	switch plan.Action {
	case placement.MoveStart:
		hud.Status.LastMove = &huddlev1.Move{From: home, To: plan.Target, Started: now, Message: plan.Message}
		reason = "MoveStarted"
	case placement.MoveRetarget:
		hud.Status.LastMove.To, hud.Status.LastMove.Message = plan.Target, plan.Message
		reason, typ = "MoveRetargeted", corev1.EventTypeWarning
	case placement.MoveFinish:
		took := in.Now.Sub(hud.Status.LastMove.Started.Time).Round(100 * time.Millisecond)
		hud.Status.LastMove.Finished, hud.Status.LastMove.Result = &now, "Succeeded"
		hud.Status.LastMove.Message = fmt.Sprintf("moved from %s to %s in %s: %s", hud.Status.LastMove.From, plan.Target, took, plan.Message)
		plan.Message = hud.Status.LastMove.Message
		reason = "Moved"
	case placement.MoveAbandon:
		hud.Status.LastMove.Finished, hud.Status.LastMove.Result, hud.Status.LastMove.Message = &now, "Abandoned", plan.Message
		reason, typ = "MoveAbandoned", corev1.EventTypeWarning
	}
	if err := r.Client.Status().Update(ctx, hud); err != nil {
		// Someone else wrote the Huddle: the watch brings it back.
		return 0, ignoreConflict(err)
	}
	moves.WithLabelValues(string(plan.Action)).Inc()
	r.Recorder.Event(hud, typ, reason, plan.Message)
	log.FromContext(ctx).Info("Move", "action", plan.Action, "target", plan.Target, "message", plan.Message)
	f.MoveTarget = plan.Target
	if plan.Action == placement.MoveFinish || plan.Action == placement.MoveAbandon {
		f.MoveTarget = ""
	}
	f.Claim.MoveTarget = f.MoveTarget
	return placement.Sooner(again, 5*time.Second), nil
}

// planMove plans a move of f's huddle with plan over the nodes as they
// are now, with the members' disruption budgets when withBudgets (they
// decide whether a move may start), and returns the plan with the
// huddle's home.
func (r *Keeper) planMove(ctx context.Context, f *ClaimFacts, in placement.MoveInput, withBudgets bool, plan func(placement.MoveInput) placement.MovePlan) (placement.MovePlan, string, error) {
	if withBudgets {
		budgets, err := r.budgets(ctx, f)
		if err != nil {
			return placement.MovePlan{}, "", err
		}
		in.Budgets = budgets
	}
	var p placement.MovePlan
	var home string
	r.Gatherer.Cluster.View(func(nodes placement.Nodes) {
		in.Nodes = nodes
		p = plan(in)
		home, _ = placement.Home(&f.Claim, nodes)
	})
	return p, home, nil
}

// moveRequestTTL is how long a move request stays valid: one huddle could
// not answer sooner (it was down, say) is refused as expired rather than
// acted on hours later, or when a backup restores the Huddle's spec.
const moveRequestTTL = 15 * time.Minute

// pendingRequest is the Huddle's spec.moveRequest if huddle has not
// answered it yet, else nil. A request is known by its time to the
// second: the API keeps fractions a client sends on the way in but not on
// the way out, so both sides are compared as they are stored.
func pendingRequest(hud *huddlev1.Huddle) *huddlev1.MoveRequest {
	req := hud.Spec.MoveRequest
	if req == nil {
		return nil
	}
	if s := hud.Status.MoveRequest; s != nil && s.RequestedAt.Rfc3339Copy().Time.Equal(req.RequestedAt.Rfc3339Copy().Time) {
		return nil
	}
	return req
}

// requestedMove answers spec.moveRequest once: it starts the move the
// request asks for if it is safe (placement.PlanRequestedMove), else
// refuses it, and records either in status.moveRequest (with
// status.lastMove for a start) and an event.
func (r *Keeper) requestedMove(ctx context.Context, f *ClaimFacts, in placement.MoveInput) (time.Duration, error) {
	hud := f.Huddle
	req := hud.Spec.MoveRequest
	if age := in.Now.Sub(req.RequestedAt.Time); age > moveRequestTTL {
		_, err := r.answerRequest(ctx, hud, fmt.Sprintf("move refused: the request is %s old, older than %s (huddle could not answer it in time); run kubectl huddle move again if the move is still wanted", age.Round(time.Second), moveRequestTTL), nil)
		return 0, err
	}
	plan, home, err := r.planMove(ctx, f, in, f.MoveTarget == "", func(in placement.MoveInput) placement.MovePlan {
		return placement.PlanRequestedMove(in, req.To)
	})
	if err != nil {
		return 0, err
	}
	var started *huddlev1.Move
	if plan.Action == placement.MoveStart {
		started = &huddlev1.Move{From: home, To: plan.Target, Started: metav1.NewTime(in.Now), Message: plan.Message}
	}
	written, err := r.answerRequest(ctx, hud, plan.Message, started)
	if err != nil || !written {
		return time.Second, err // a conflict: answer again with fresh facts
	}
	if started != nil {
		moves.WithLabelValues(string(plan.Action)).Inc()
		f.MoveTarget = plan.Target
		f.Claim.MoveTarget = plan.Target
	}
	return 5 * time.Second, nil
}

// answerRequest records huddle's answer to the pending move request in
// status.moveRequest (Started with start as status.lastMove, or Refused
// with why), with an event, and says whether it was written: a conflict
// (someone else wrote the Huddle) is left for the next reconcile.
func (r *Keeper) answerRequest(ctx context.Context, hud *huddlev1.Huddle, message string, start *huddlev1.Move) (bool, error) {
	req := hud.Spec.MoveRequest
	hud = hud.DeepCopy()
	hud.Status.MoveRequest = &huddlev1.MoveRequestStatus{RequestedAt: req.RequestedAt.Rfc3339Copy(), Result: huddlev1.MoveRequestRefused, Message: message}
	reason, typ := "MoveRefused", corev1.EventTypeWarning
	if start != nil {
		hud.Status.MoveRequest.Result = huddlev1.MoveRequestStarted
		hud.Status.LastMove = start
		reason, typ = "MoveStarted", corev1.EventTypeNormal
	}
	if err := r.Client.Status().Update(ctx, hud); err != nil {
		return false, ignoreConflict(err)
	}
	r.Recorder.Event(hud, typ, reason, message)
	log.FromContext(ctx).Info("Move requested", "to", req.To, "result", hud.Status.MoveRequest.Result, "message", message)
	return true, nil
}

// evict evicts one member through the Eviction API, so budgets apply,
// with a precondition on its UID: a StatefulSet reuses its pods' names,
// and the pod decided on must not be confused with its replacement. On
// success reason and msg are the events of the pod and the Huddle. A
// refusal (429) is recorded on the pod (after why) and the Huddle and
// retried after a growing backoff, returned as wait.
func (r *Keeper) evict(ctx context.Context, hud *huddlev1.Huddle, pod *corev1.Pod, why, reason, msg string) (time.Duration, error) {
	logger := log.FromContext(ctx).WithValues("pod", client.ObjectKeyFromObject(pod))
	key := pod.Namespace + "/" + pod.Name
	ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(pod.UID))}}
	err := r.Client.SubResource("eviction").Create(ctx, pod, ev)
	switch {
	case err == nil:
		r.clearBlocked(key)
		evictions.WithLabelValues("evicted").Inc()
		r.Recorder.Event(pod, corev1.EventTypeNormal, reason, msg)
		r.Recorder.Event(hud, corev1.EventTypeNormal, reason, msg)
		logger.Info("Evicted member", "reason", reason, "node", pod.Spec.NodeName)
		return 0, nil
	case apierrors.IsNotFound(err):
		r.clearBlocked(key)
		return 0, nil
	case apierrors.IsConflict(err):
		// Replaced by a pod of the same name (the UID precondition failed),
		// or a PodDisruptionBudget changed while the API server checked it:
		// the pod may still be here either way, so look again soon with
		// what the watches bring rather than count it as gone.
		logger.V(1).Info("Eviction conflicted, looking again", "err", err)
		return evictionConflictRetry, nil
	case apierrors.IsTooManyRequests(err):
		n := r.refused(key)
		wait := min(evictionBackoff<<min(n-1, 10), evictionBackoffMax)
		evictions.WithLabelValues("refused").Inc()
		msg := fmt.Sprintf("eviction refused, retrying in %s: %s", wait, apiMessage(err))
		r.annotate(ctx, pod, why+"; "+msg, "")
		if n == 1 {
			r.Recorder.Event(hud, corev1.EventTypeWarning, "EvictionRefused", fmt.Sprintf("Cannot evict %s, %s: %s (retrying with backoff)", pod.Name, why, apiMessage(err)))
		}
		logger.V(1).Info("Eviction refused", "err", err, "retryAfter", wait)
		return wait, nil
	default:
		evictions.WithLabelValues("error").Inc()
		return 0, fmt.Errorf("evict %s: %w", key, err)
	}
}

// annotate records on the pod what repair thinks of it, with an event the
// first time (if reason is set).
func (r *Keeper) annotate(ctx context.Context, pod *corev1.Pod, why, reason string) {
	if pod == nil || pod.Annotations[AnnotationRepair] == why {
		return
	}
	patch := client.MergeFrom(pod.DeepCopy())
	p := pod.DeepCopy()
	metav1.SetMetaDataAnnotation(&p.ObjectMeta, AnnotationRepair, why)
	if err := r.Client.Patch(ctx, p, patch); err != nil {
		log.FromContext(ctx).V(1).Info("Cannot annotate pod", "pod", client.ObjectKeyFromObject(pod), "err", err)
		return
	}
	if reason != "" {
		r.Recorder.Event(pod, corev1.EventTypeWarning, reason, why)
	}
}

// allow takes a token from the cluster-wide and the huddle's limiter, or
// says how long to wait for one.
func (r *Keeper) allow(claim string) time.Duration {
	r.mu.Lock()
	if r.limiters == nil {
		r.limiters = map[string]*rate.Limiter{}
	}
	l := r.limiters[claim]
	if l == nil {
		l = r.PerHuddle()
		r.limiters[claim] = l
	}
	r.mu.Unlock()
	res := []*rate.Reservation{r.Evictions.Reserve(), l.Reserve()}
	wait := max(res[0].Delay(), res[1].Delay())
	if wait > 0 {
		for _, x := range res {
			x.Cancel()
		}
	}
	return wait
}

func (r *Keeper) refused(pod string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.blocked == nil {
		r.blocked = map[string]int{}
	}
	r.blocked[pod]++
	return r.blocked[pod]
}

func (r *Keeper) clearBlocked(pod string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.blocked, pod)
}

func (r *Keeper) forget(claim string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.limiters, claim)
	delete(r.waiting, claim)
	delete(r.wrote, claim)
}

func (r *Keeper) setWaiting(claim string, waiting bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !waiting {
		delete(r.waiting, claim)
		return
	}
	if r.waiting == nil {
		r.waiting = map[string]bool{}
	}
	r.waiting[claim] = true
}

// Waiting maps node changes to the huddles waiting to move: any node
// whose free resources or availability changed may now fit one.
func (r *Keeper) Waiting(_ context.Context, changed map[string]bool) []reconcile.Request {
	if len(changed) == 0 {
		return nil
	}
	return r.waitingIn("")
}

// WaitingIn maps a PodDisruptionBudget to the huddles of its namespace
// waiting to move: its status may allow their evictions now.
func (r *Keeper) WaitingIn(_ context.Context, o client.Object) []reconcile.Request {
	return r.waitingIn(o.GetNamespace())
}

// waitingIn lists the waiting huddles of namespace ("" for all).
func (r *Keeper) waitingIn(namespace string) []reconcile.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []reconcile.Request
	for key := range r.waiting {
		ns, name, _ := strings.Cut(key, "/")
		if namespace == "" || ns == namespace {
			out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
		}
	}
	return out
}

func apiMessage(err error) string {
	if s, ok := err.(apierrors.APIStatus); ok && s.Status().Message != "" {
		return s.Status().Message
	}
	return err.Error()
}
