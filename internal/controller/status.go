package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
)

// +kubebuilder:rbac:groups=huddle.io,resources=huddles,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=huddle.io,resources=huddles/status,verbs=get;update;patch

// Status keeps one Huddle per shared claim, named after the claim and
// owned by it, with a status that says where the huddle lives, who its
// members are and what a user can do when it is not together.
type Status struct {
	Client        client.Client
	Gatherer      *Gatherer
	Recorder      record.EventRecorder
	MaxCandidates int
	// Clock is the controllers' one clock (FakeClock in tests).
	Clock clock.Clock

	mu     sync.Mutex
	phases map[string]huddlev1.Phase // claim key -> phase, for the gauge
	// written is when each Huddle's status was last written: writes are
	// spaced by statusSpacing so a burst of member changes costs one
	// write, not one per change.
	written map[string]time.Time
	// fits remembers how each Huddle's Fits condition was judged, so a
	// change of a node's free resources wakes only the Huddles whose Fits
	// it turns (see fitMayChange).
	fits map[string]fitMemo
}

// fitMemo is how a Huddle's Fits was last judged: at home, as home's free
// resources plus bound covering demand (judged), or without looking at
// free resources at all (no member, or home gone).
type fitMemo struct {
	home          string
	judged, fits  bool
	demand, bound placement.Resources
}

// statusSpacing is the least time between two status writes of a Huddle.
const statusSpacing = time.Second

// safetyResync is how often a Huddle's status is recomputed when nothing
// it depends on was seen to change, give or take safetyJitter. Every input
// of the status comes as an event (its pods, claim, Huddle and
// VolumeAttachments; changes of its home, of any node while it has no
// home, coalesced by NodeChanges), so this only bounds how long a cause
// huddle does not watch can leave a status stale (an owner's maxSurge
// changed with no pod changing, an event dropped by a failed watch). At
// 50,000 Huddles it is 83 reconciles a second, each a few cached reads
// and no API request when nothing changed; the one-minute resync it
// replaces was 830.
const (
	safetyResync = 10 * time.Minute
	safetyJitter = 0.1
)

// jittered is safetyResync, made 10% shorter or longer at random so the
// Huddles created in one burst do not all resync in the same second.
func jittered() time.Duration {
	return time.Duration(float64(safetyResync) * (1 - safetyJitter + 2*safetyJitter*rand.Float64()))
}

// Reconcile updates the Huddle of one claim (the request names the claim).
func (r *Status) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	f, err := r.Gatherer.Claim(ctx, req.Namespace, req.Name)
	if err != nil {
		return ctrl.Result{}, err
	}
	if f.Missing || !f.Shared {
		r.setPhase(f.Key, "")
		return ctrl.Result{}, nil
	}
	hud := f.Huddle
	if hud == nil {
		hud = &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: req.Namespace}}
		if err := controllerutil.SetOwnerReference(f.Object, hud, r.Client.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Client.Create(ctx, hud); err != nil {
			if apierrors.IsAlreadyExists(err) {
				return ctrl.Result{Requeue: true}, nil
			}
			if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
				return ctrl.Result{}, nil // the claim goes with its namespace
			}
			return ctrl.Result{}, err
		}
		r.Recorder.Eventf(hud, corev1.EventTypeNormal, "Created", "Claim %s is shared: huddle keeps every pod that mounts it on one node", f.Key)
	} else if !metav1.IsControlledBy(hud, f.Object) && !hasOwner(hud, f.Object) {
		// A user created it first to set policy: adopt it for garbage collection.
		if err := controllerutil.SetOwnerReference(f.Object, hud, r.Client.Scheme()); err != nil {
			return ctrl.Result{}, err
		}
		if err := r.Client.Update(ctx, hud); err != nil {
			return ctrl.Result{}, ignoreConflict(err)
		}
	}

	var a placement.Assessment
	var homeReady = true
	r.Gatherer.Cluster.View(func(nodes placement.Nodes) {
		a = placement.Assess(&f.Claim, nodes, r.MaxCandidates)
		if n := nodes.Get(a.Home); a.Home != "" && (n == nil || !n.Ready) {
			homeReady = false
		}
	})
	r.remember(f.Key, fitMemo{home: a.Home, judged: a.FitsAtHome, fits: a.Fits, demand: a.Demand, bound: a.Bound})
	want := hud.Status.DeepCopy()
	want.ObservedGeneration = hud.Generation
	want.Home = a.Home
	want.Demand = toList(a.Demand)
	// During a move, members count as home only at its target.
	home := a.Home
	if mv := want.LastMove; mv != nil && mv.Finished == nil {
		home = mv.To
	}
	want.Members, want.MemberCount, want.ReadyCount = members(f.Pods, home)
	atHome := int32(0)
	for _, m := range want.Members {
		if m.Reason == "" {
			atHome++
		}
	}
	want.Phase = phase(a, homeReady, atHome, want.MemberCount)
	if mv := want.LastMove; mv != nil && mv.Finished == nil {
		want.Phase = huddlev1.PhaseMoving
	}
	setConditions(want, f.Key, a, atHome, r.Clock.Now())
	moveBlocked(want, hud.Annotations[AnnotationMoveBlocked])

	if equality.Semantic.DeepEqual(&hud.Status, want) {
		r.setPhase(f.Key, want.Phase)
		return ctrl.Result{RequeueAfter: jittered()}, nil
	}
	if wait := r.spacing(f.Key); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	old := hud.Status
	observeRecovery(&old, want, r.Clock.Now())
	hud = hud.DeepCopy()
	hud.Status = *want
	if err := r.Client.Status().Update(ctx, hud); err != nil {
		return ctrl.Result{}, ignoreConflict(err)
	}
	r.setPhase(f.Key, want.Phase)
	if old.Home != want.Home && want.Home != "" {
		r.Recorder.Eventf(hud, corev1.EventTypeNormal, "HomeChanged", "Home of claim %s is now %s (%s)", f.Key, want.Home, a.How)
	}
	if old.Phase != want.Phase {
		typ := corev1.EventTypeNormal
		if want.Phase == huddlev1.PhaseSplit || want.Phase == huddlev1.PhaseDegraded {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(hud, typ, string(want.Phase), "%s", meta.FindStatusCondition(want.Conditions, huddlev1.ConditionHuddled).Message)
	}
	return ctrl.Result{RequeueAfter: jittered()}, nil
}

func phase(a placement.Assessment, homeReady bool, atHome, members int32) huddlev1.Phase {
	switch {
	case a.Split:
		return huddlev1.PhaseSplit
	case a.Home == "":
		return huddlev1.PhasePlacing
	case !homeReady:
		return huddlev1.PhaseDegraded
	case atHome == members:
		return huddlev1.PhaseHuddled
	}
	return huddlev1.PhasePending
}

// setConditions sets the Huddle's conditions; a condition whose status
// changes takes now as its transition time.
func setConditions(s *huddlev1.HuddleStatus, key string, a placement.Assessment, atHome int32, now time.Time) {
	at := metav1.NewTime(now)
	c := metav1.Condition{Type: huddlev1.ConditionHuddled, ObservedGeneration: s.ObservedGeneration, LastTransitionTime: at}
	switch {
	case s.MemberCount == 0:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "NoMembers", fmt.Sprintf("No pod mounts claim %s.", key)
	case atHome == s.MemberCount:
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, "AllMembersAtHome", fmt.Sprintf("All %d pods that mount claim %s run on %s.", s.MemberCount, key, s.Home)
	case a.Split:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Split", fmt.Sprintf("Pods that mount claim %s are bound to more than one node; home is %s (%s). Members away from home cannot start.", key, s.Home, a.How)
	case s.Home == "":
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "Placing", fmt.Sprintf("Claim %s has no home yet; its first member is being placed.", key)
	default:
		c.Status, c.Reason, c.Message = metav1.ConditionFalse, "MembersPending", fmt.Sprintf("%d of %d pods that mount claim %s are not running on %s yet; see status.members for why.", s.MemberCount-atHome, s.MemberCount, key, s.Home)
	}
	meta.SetStatusCondition(&s.Conditions, c)
	fits := metav1.Condition{Type: huddlev1.ConditionFits, Status: metav1.ConditionTrue, Reason: "Fits", ObservedGeneration: s.ObservedGeneration, LastTransitionTime: at,
		Message: fmt.Sprintf("The whole huddle (%s) fits on %s.", formatList(s.Demand), orNoHome(s.Home))}
	if !a.Fits {
		fits.Status, fits.Reason = metav1.ConditionFalse, "InsufficientResources"
		fits.Message = fmt.Sprintf("%s. Members that do not fit wait Pending at home, never elsewhere; free resources there, or set spec.move: WhenStuck to let the huddle move to a node that fits it.", a.Shortfall)
		if s.Home == "" {
			fits.Message = fmt.Sprintf("%s. No node holds the whole huddle; it was placed where most of it fits and the rest waits there. Add a larger node or lower the members' requests.", a.Shortfall)
		}
	}
	meta.SetStatusCondition(&s.Conditions, fits)
	moving := metav1.Condition{Type: huddlev1.ConditionMoving, Status: metav1.ConditionFalse, Reason: "NotMoving",
		Message: "The huddle is not moving.", ObservedGeneration: s.ObservedGeneration, LastTransitionTime: at}
	if mv := s.LastMove; mv != nil {
		switch {
		case mv.Finished == nil:
			moving.Status, moving.Reason, moving.Message = metav1.ConditionTrue, "Moving", fmt.Sprintf("Moving from %s to %s: %s", mv.From, mv.To, mv.Message)
		case mv.Result == "Abandoned":
			moving.Reason, moving.Message = "MoveAbandoned", "The last move was abandoned: "+mv.Message
		default:
			moving.Reason, moving.Message = "Moved", "The last move finished: "+mv.Message
		}
	}
	meta.SetStatusCondition(&s.Conditions, moving)
}

// members lists the pods that mount the claim and why each is not running
// at home, if it is not.
func members(pods []*corev1.Pod, home string) ([]huddlev1.Member, int32, int32) {
	var out []huddlev1.Member
	var count, ready int32
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		m := huddlev1.Member{Pod: p.Name, Node: p.Spec.NodeName, Phase: p.Status.Phase, Ready: podReady(p)}
		switch {
		case p.DeletionTimestamp != nil:
			m.Reason = "Terminating"
		case placement.HasGate(p):
			m.Reason = "Gated: " + orDefault(p.Annotations[placement.AnnotationHeld], "waiting for huddle to place it")
		case p.Spec.NodeName == "":
			m.Reason = "Pending: " + orDefault(scheduledMessage(p), "waiting for the scheduler")
		case home != "" && p.Spec.NodeName != home:
			m.Reason = fmt.Sprintf("Away: bound to %s, away from home %s", p.Spec.NodeName, home)
			if why := p.Annotations[AnnotationRepair]; why != "" {
				m.Reason = "Away: " + why
			}
		case p.Status.Phase != corev1.PodRunning:
			m.Reason = "Starting: " + waitingReason(p)
		case !m.Ready:
			m.Reason = "NotReady"
		}
		count++
		if m.Ready {
			ready++
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pod < out[j].Pod })
	return out, count, ready
}

func scheduledMessage(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
			return c.Message
		}
	}
	return ""
}

func waitingReason(p *corev1.Pod) string {
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
			return c.State.Waiting.Reason
		}
	}
	return string(p.Status.Phase)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func hasOwner(obj, owner metav1.Object) bool {
	for _, r := range obj.GetOwnerReferences() {
		if r.UID == owner.GetUID() {
			return true
		}
	}
	return false
}

func toList(r placement.Resources) corev1.ResourceList {
	l := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewMilliQuantity(r.MilliCPU, resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(r.Memory, resource.BinarySI),
		corev1.ResourcePods:   *resource.NewQuantity(r.Pods, resource.DecimalSI),
	}
	for name, v := range r.Scalar {
		if v != 0 {
			l[name] = *resource.NewQuantity(v, resource.DecimalSI)
		}
	}
	return l
}

func formatList(l corev1.ResourceList) string {
	cpu, mem, pods := l[corev1.ResourceCPU], l[corev1.ResourceMemory], l[corev1.ResourcePods]
	return fmt.Sprintf("%s CPU, %s memory, %s pods", cpu.String(), mem.String(), pods.String())
}

func orNoHome(home string) string {
	if home == "" {
		return "a node"
	}
	return home
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// setPhase maintains the huddles-by-phase gauge; "" forgets the claim.
func (r *Status) setPhase(key string, p huddlev1.Phase) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.phases == nil {
		r.phases = map[string]huddlev1.Phase{}
	}
	old, known := r.phases[key]
	if known && old == p {
		return
	}
	if known {
		huddlesByPhase.WithLabelValues(string(old)).Dec()
	}
	if p == "" {
		delete(r.phases, key)
		delete(r.written, key)
		delete(r.fits, key)
		return
	}
	r.phases[key] = p
	huddlesByPhase.WithLabelValues(string(p)).Inc()
}

// remember records how the Fits of the Huddle of key was judged.
func (r *Status) remember(key string, m fitMemo) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fits == nil {
		r.fits = map[string]fitMemo{}
	}
	r.fits[key] = m
}

// fitMayChange says whether a change of node's free resources alone can
// change the status of the Huddle of key, whose home node is: only if its
// Fits was judged on them and would now be judged otherwise. A Huddle not
// reconciled yet may change.
func (r *Status) fitMayChange(key, node string) bool {
	r.mu.Lock()
	m, ok := r.fits[key]
	r.mu.Unlock()
	if !ok || m.home != node {
		return true
	}
	if !m.judged {
		return false
	}
	may := true
	r.Gatherer.Cluster.View(func(nodes placement.Nodes) {
		if n := nodes.Get(node); n != nil {
			may = n.Free().Add(m.bound).Covers(m.demand) != m.fits
		}
	})
	return may
}

// spacing returns how long to wait before the status of the Huddle of key
// may be written again, and if none, records a write now.
func (r *Status) spacing(key string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written == nil {
		r.written = map[string]time.Time{}
	}
	now := r.Clock.Now()
	if wait := r.written[key].Add(statusSpacing).Sub(now); wait > 0 {
		return wait
	}
	r.written[key] = now
	return 0
}

// observeRecovery records, when a huddle becomes Huddled again, how long
// it was disrupted: since its Huddled condition last turned False (the
// condition's transition time lives in the cluster, so a restart between
// the two does not lose it).
func observeRecovery(old, want *huddlev1.HuddleStatus, at time.Time) {
	was := meta.FindStatusCondition(old.Conditions, huddlev1.ConditionHuddled)
	now := meta.FindStatusCondition(want.Conditions, huddlev1.ConditionHuddled)
	if was == nil || now == nil || was.Status != metav1.ConditionFalse || now.Status != metav1.ConditionTrue ||
		was.Reason == "Placing" || want.MemberCount == 0 {
		return
	}
	recovery.Observe(at.Sub(was.LastTransitionTime.Time).Seconds())
}
