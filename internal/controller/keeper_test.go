package controller

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

var now = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

const ns = "shop"

// world is a namespace opted in, claim data bound to a CSI volume, its
// Huddle, and the cluster's nodes.
type world struct {
	objs  []client.Object
	nodes []*corev1.Node
}

func newWorld(spec huddlev1.HuddleSpec) *world {
	w := &world{}
	w.objs = append(w.objs,
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{scope.LabelEnabled: "true"}}},
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: "pv-data"}},
		&corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-data"},
			Spec: corev1.PersistentVolumeSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-1"}}}},
		&huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns}, Spec: spec},
	)
	return w
}

func (w *world) node(name string, milliCPU int64) *world {
	w.nodes = append(w.nodes, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: *resource.NewMilliQuantity(milliCPU, resource.DecimalSI),
				corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("58")},
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		}})
	return w
}

// pod is a member of claim data owned by kind ("" for a bare pod).
func pod(name, kind string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name), Labels: map[string]string{"app": "app"},
			CreationTimestamp: metav1.NewTime(now.Add(-time.Hour))},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "app", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("64Mi")}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}}},
		},
	}
	switch kind {
	case "":
	case "Job":
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: "job", UID: "job", Controller: ptr.To(true)}}
	default:
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: kind, Name: "app", UID: "app", Controller: ptr.To(true)}}
	}
	return p
}

// running binds p to node, Running and Ready.
func running(p *corev1.Pod, node string) *corev1.Pod {
	p.Spec.NodeName = node
	p.Annotations = map[string]string{placement.AnnotationPinnedBy: "claim " + ns + "/data home " + node}
	p.Status.Phase = corev1.PodRunning
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
	return p
}

// stuckPod: released with pinnedBy and Unschedulable since d ago.
func stuckPod(p *corev1.Pod, pinnedBy string, d time.Duration) *corev1.Pod {
	p.Annotations = map[string]string{placement.AnnotationPinnedBy: pinnedBy}
	p.Status.Phase = corev1.PodPending
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
		LastTransitionTime: metav1.NewTime(now.Add(-d))}}
	return p
}

// fixture is a Keeper over a fake client holding the world, recording
// every eviction it asks for.
type fixture struct {
	keeper    *Keeper
	client    client.Client
	events    *record.FakeRecorder
	evictions []*policyv1.Eviction
	// refuse, if set, answers each eviction instead of the fake client
	// (nil: evict).
	refuse func(*policyv1.Eviction) error
}

func newFixture(t *testing.T, w *world, o Options, objs ...client.Object) *fixture {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := huddlev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	f := &fixture{events: record.NewFakeRecorder(100)}
	f.client = fake.NewClientBuilder().WithScheme(scheme).
		WithObjects(append(w.objs, objs...)...).
		WithStatusSubresource(&huddlev1.Huddle{}).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV).
		WithInterceptorFuncs(interceptor.Funcs{SubResourceCreate: func(ctx context.Context, c client.Client, sub string, obj client.Object, subObj client.Object, opts ...client.SubResourceCreateOption) error {
			if ev, ok := subObj.(*policyv1.Eviction); ok {
				f.evictions = append(f.evictions, ev.DeepCopy())
				if f.refuse != nil {
					if err := f.refuse(ev); err != nil {
						return err
					}
				}
			}
			return c.SubResource(sub).Create(ctx, obj, subObj, opts...)
		}}).
		Build()
	cluster := NewCluster()
	for _, n := range w.nodes {
		cluster.setNode(n)
	}
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			cluster.setPod(p, false)
		}
	}
	if o.EvictionsPerSecond == 0 {
		o.EvictionsPerSecond = 100
	}
	recreating, err := RecreatingOwners(o.RecreatingOwners)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(now)
	g := &Gatherer{Reader: f.client, Cluster: cluster, Recreating: recreating, Clock: clk}
	f.keeper = newKeeper(f.client, g, f.events, clk, o)
	return f
}

func (f *fixture) reconcile(t *testing.T) ctrl.Result {
	t.Helper()
	res, err := f.keeper.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "data"}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (f *fixture) huddle(t *testing.T) *huddlev1.Huddle {
	t.Helper()
	h := &huddlev1.Huddle{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	return h
}

func (f *fixture) pod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, p); err != nil {
		return nil
	}
	return p
}

// drain returns the recorded events.
func (f *fixture) drain() string {
	var out []string
	for {
		select {
		case e := <-f.events.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

var options = Options{MaxMovesPerHour: 6, MoveDeadline: 10 * time.Minute, UnschedulableDeadline: 5 * time.Minute}

// TestKeeperReplacesStuckFirstMember: a first member pinned to candidates
// and Unschedulable past the deadline is evicted, with a UID
// precondition, the Huddle's placing record naming it is cleared, and
// events say why; before the deadline the keeper only looks again then.
func TestKeeperReplacesStuckFirstMember(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{}).node("n1", 4000).node("n2", 4000)
	w.objs[3].SetAnnotations(map[string]string{AnnotationPlacing: "first " + now.Add(-30*time.Second).Format(time.RFC3339)})
	follower := pod("follower", "ReplicaSet")
	follower.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: placement.Gate}}

	early := newFixture(t, w, options, stuckPod(pod("first", "ReplicaSet"), "claim shop/data candidates n1,n2", 2*time.Minute), follower.DeepCopy())
	if res := early.reconcile(t); res.RequeueAfter != 3*time.Minute || len(early.evictions) != 0 {
		t.Fatalf("before the deadline: requeue %s, evictions %d; want a look again in 3m0s and none", res.RequeueAfter, len(early.evictions))
	}

	f := newFixture(t, w, options, stuckPod(pod("first", "ReplicaSet"), "claim shop/data candidates n1,n2", 6*time.Minute), follower.DeepCopy())
	f.reconcile(t)
	if len(f.evictions) != 1 || f.evictions[0].Name != "first" {
		t.Fatalf("evictions %+v, want first", f.evictions)
	}
	if pre := f.evictions[0].DeleteOptions; pre == nil || pre.Preconditions == nil || pre.Preconditions.UID == nil || *pre.Preconditions.UID != "uid-first" {
		t.Errorf("eviction without the pod's UID as precondition: %+v", f.evictions[0].DeleteOptions)
	}
	if f.pod(t, "first") != nil {
		t.Error("the stuck member is still there")
	}
	if rec := f.huddle(t).Annotations[AnnotationPlacing]; rec != "" {
		t.Errorf("placing record %q not cleared", rec)
	}
	ev := f.drain()
	if strings.Count(ev, "ReplacedStuckMember") != 2 || !strings.Contains(ev, "unschedulable for over 5m0s") {
		t.Errorf("events:\n%s\nwant ReplacedStuckMember on the pod and the Huddle", ev)
	}
}

// TestKeeperReportsWhatItWillNotReplace: a stuck Job pod (an eviction
// counts against backoffLimit) and a member waiting at its full home are
// reported on the pod, never evicted.
func TestKeeperReportsWhatItWillNotReplace(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{}).node("n1", 1000).node("n2", 4000)
	f := newFixture(t, w, options,
		stuckPod(pod("job-1", "Job"), "claim shop/data candidates n1,n2", 6*time.Minute))
	f.reconcile(t)
	if len(f.evictions) != 0 {
		t.Fatalf("evicted %+v", f.evictions)
	}
	if why := f.pod(t, "job-1").Annotations[AnnotationRepair]; !strings.Contains(why, "backoffLimit") {
		t.Errorf("job pod annotated %q", why)
	}
	if ev := f.drain(); strings.Count(ev, "StuckMember") != 2 {
		t.Errorf("events:\n%s\nwant StuckMember on the pod and the Huddle", ev)
	}

	g := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
		stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute))
	g.reconcile(t)
	if len(g.evictions) != 0 {
		t.Fatalf("evicted %+v", g.evictions)
	}
	if why := g.pod(t, "c").Annotations[AnnotationRepair]; !strings.Contains(why, "spec.move: WhenStuck") {
		t.Errorf("member waiting at home annotated %q", why)
	}
}

// TestKeeperMovesAtMostPerHour: --max-moves-per-hour sets the least time
// between two moves of a huddle; a stuck huddle whose last move began
// within it does not move again.
func TestKeeperMovesAtMostPerHour(t *testing.T) {
	if got := newKeeper(nil, nil, nil, nil, Options{MaxMovesPerHour: 6}).MinMoveInterval; got != 10*time.Minute {
		t.Fatalf("6 moves an hour: interval %s, want 10m0s", got)
	}
	if got := newKeeper(nil, nil, nil, nil, Options{MaxMovesPerHour: 0}).MinMoveInterval; got >= 0 {
		t.Fatalf("0 moves an hour: interval %s, want moves off (< 0)", got)
	}
	for _, tc := range []struct {
		name  string
		since time.Duration // since the last move began
		moves bool
	}{
		{"last move 5m ago", 5 * time.Minute, false},
		{"last move 11m ago", 11 * time.Minute, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck}).node("n1", 1000).node("n2", 4000)
			hud := w.objs[3].(*huddlev1.Huddle)
			finished := metav1.NewTime(now.Add(-tc.since + time.Minute))
			hud.Status.LastMove = &huddlev1.Move{From: "n0", To: "n1", Started: metav1.NewTime(now.Add(-tc.since)), Finished: &finished, Result: "Succeeded"}
			f := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
				stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute))
			f.reconcile(t)
			mv := f.huddle(t).Status.LastMove
			if started := mv.Finished == nil && mv.To == "n2"; started != tc.moves {
				t.Fatalf("lastMove %+v; want a move started: %v", mv, tc.moves)
			}
		})
	}
}

// TestKeeperRefusesMoveThatCannotFinish: a budget that keeps every Ready
// member healthy, or a member that would not be recreated, blocks the
// move: the Huddle records why (shown as Moving=False MoveBlocked), an
// event says so, and nothing is evicted.
func TestKeeperRefusesMoveThatCannotFinish(t *testing.T) {
	budget := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns},
		Spec:   policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app"}}},
		Status: policyv1.PodDisruptionBudgetStatus{CurrentHealthy: 2, DesiredHealthy: 2}}
	for _, tc := range []struct {
		name  string
		extra []client.Object
		inWhy string
	}{
		{"budget", []client.Object{budget}, "PodDisruptionBudget app keeps 2 pods healthy"},
		{"bare pod", []client.Object{running(pod("bare", ""), "n1")}, "member bare would not be recreated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck}).node("n1", 1500).node("n2", 4000)
			objs := append([]client.Object{running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
				stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute)}, tc.extra...)
			f := newFixture(t, w, options, objs...)
			f.reconcile(t)
			h := f.huddle(t)
			if h.Status.LastMove != nil || len(f.evictions) != 0 {
				t.Fatalf("move %+v, evictions %d; want none", h.Status.LastMove, len(f.evictions))
			}
			why := h.Annotations[AnnotationMoveBlocked]
			if !strings.Contains(why, tc.inWhy) {
				t.Fatalf("blocked %q, want ~%q", why, tc.inWhy)
			}
			if ev := f.drain(); !strings.Contains(ev, "MoveBlocked") {
				t.Errorf("events:\n%s\nwant MoveBlocked", ev)
			}
			s := h.Status.DeepCopy()
			moveBlocked(s, why)
			if c := meta.FindStatusCondition(s.Conditions, huddlev1.ConditionMoving); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "MoveBlocked" || !strings.Contains(c.Message, tc.inWhy) {
				t.Errorf("Moving condition %+v", c)
			}
		})
	}
}

// TestKeeperEvictsOnlyWhatIsRecreated: members bound away from home are
// evicted only if their controller recreates them; a Job's pod is
// reported, and an operator's kind is evicted once listed.
func TestKeeperEvictsOnlyWhatIsRecreated(t *testing.T) {
	cloneSet := func(name string) *corev1.Pod {
		p := pod(name, "")
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps.kruise.io/v1alpha1", Kind: "CloneSet", Name: "app", UID: "cs", Controller: ptr.To(true)}}
		return running(p, "n2")
	}
	for _, tc := range []struct {
		name    string
		extra   []string
		evicted string
	}{
		{"defaults", nil, "rs"},
		{"CloneSet listed", []string{"apps.kruise.io/CloneSet"}, "cs,rs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(huddlev1.HuddleSpec{}).node("n1", 4000).node("n2", 4000)
			o := options
			o.RecreatingOwners = tc.extra
			f := newFixture(t, w, o, running(pod("home", "StatefulSet"), "n1"), running(pod("rs", "ReplicaSet"), "n2"),
				running(pod("job", "Job"), "n2"), cloneSet("cs"))
			// n1 holds the volume: it is home.
			va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va"}, Spec: storagev1.VolumeAttachmentSpec{NodeName: "n1",
				Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To("pv-data")}}, Status: storagev1.VolumeAttachmentStatus{Attached: true}}
			if err := f.client.Create(context.Background(), va); err != nil {
				t.Fatal(err)
			}
			f.reconcile(t)
			var got []string
			for _, e := range f.evictions {
				got = append(got, e.Name)
			}
			if strings.Join(got, ",") != tc.evicted {
				t.Fatalf("evicted %v, want %s", got, tc.evicted)
			}
			if why := f.pod(t, "job").Annotations[AnnotationRepair]; !strings.Contains(why, "backoffLimit") {
				t.Errorf("job annotated %q", why)
			}
		})
	}
}

func TestRecreatingOwners(t *testing.T) {
	set, err := RecreatingOwners([]string{"apps.kruise.io/CloneSet", " Pod "})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"apps/ReplicaSet", "apps/StatefulSet", "apps.kruise.io/CloneSet", "Pod"} {
		if !set[k] {
			t.Errorf("%s missing from %v", k, set)
		}
	}
	for _, bad := range []string{"CloneSet.apps.kruise.io", "apps/", "a/b/C"} {
		if _, err := RecreatingOwners([]string{bad}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if k := ownerKind(pod("x", "Job")); k != "batch/Job" {
		t.Errorf("ownerKind of a Job's pod: %q", k)
	}
	if k := ownerKind(pod("x", "")); k != "" {
		t.Errorf("ownerKind of a bare pod: %q", k)
	}
}

// TestKeeperEvictionRefused: a member away from home whose eviction is
// refused (429: a PodDisruptionBudget) stays, the refusal is written on
// the pod and once on the Huddle, and repair tries again after a backoff
// that doubles; a 409 (the pod replaced under the same name, or a budget
// that changed meanwhile) is not taken for an eviction either: repair
// looks again a second later.
func TestKeeperEvictionRefused(t *testing.T) {
	home := func() *storagev1.VolumeAttachment {
		return &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va"}, Spec: storagev1.VolumeAttachmentSpec{NodeName: "n1",
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To("pv-data")}}, Status: storagev1.VolumeAttachmentStatus{Attached: true}}
	}
	newF := func(t *testing.T, err error) *fixture {
		w := newWorld(huddlev1.HuddleSpec{}).node("n1", 4000).node("n2", 4000)
		f := newFixture(t, w, options, running(pod("home", "ReplicaSet"), "n1"), running(pod("away", "ReplicaSet"), "n2"))
		f.refuse = func(*policyv1.Eviction) error { return err }
		if err := f.client.Create(context.Background(), home()); err != nil {
			t.Fatal(err)
		}
		return f
	}
	pdb := apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 0)
	t.Run("429", func(t *testing.T) {
		f := newF(t, pdb)
		for i, want := range []time.Duration{2 * time.Second, 4 * time.Second, 8 * time.Second} {
			res := f.reconcile(t)
			if res.RequeueAfter != want {
				t.Errorf("refusal %d: requeue after %s, want %s", i+1, res.RequeueAfter, want)
			}
		}
		if len(f.evictions) != 3 {
			t.Errorf("%d evictions asked for, want 3", len(f.evictions))
		}
		away := f.pod(t, "away")
		if away == nil {
			t.Fatal("refused eviction removed the pod")
		}
		if why := away.Annotations[AnnotationRepair]; !strings.Contains(why, "eviction refused, retrying in 8s") || !strings.Contains(why, "disruption budget") {
			t.Errorf("pod annotated %q, want the refusal, its retry and the API server's message", why)
		}
		if n := strings.Count(f.drain(), "EvictionRefused"); n != 1 {
			t.Errorf("%d EvictionRefused events, want 1", n)
		}
	})
	t.Run("409", func(t *testing.T) {
		f := newF(t, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "away", errors.New("the object has been modified")))
		if res := f.reconcile(t); res.RequeueAfter != evictionConflictRetry {
			t.Errorf("requeue after %s, want %s", res.RequeueAfter, evictionConflictRetry)
		}
		if f.pod(t, "away") == nil {
			t.Fatal("pod gone")
		}
		if e := f.drain(); strings.Contains(e, "EvictedAwayFromHome") {
			t.Errorf("a conflicted eviction reported as done: %s", e)
		}
	})
}

// TestKeeperMoveRequest: spec.moveRequest is answered once: a safe move
// starts (status.moveRequest Started, status.lastMove to the target, the
// members evicted); an unsafe or stale one is refused with why and touches
// nothing; a request already answered is not answered again, whatever
// fraction of a second its time was written with.
func TestKeeperMoveRequest(t *testing.T) {
	request := func(to string, ago time.Duration) huddlev1.HuddleSpec {
		return huddlev1.HuddleSpec{MoveRequest: &huddlev1.MoveRequest{To: to, RequestedAt: metav1.NewTime(now.Add(-ago))}}
	}
	for _, tc := range []struct {
		name      string
		spec      huddlev1.HuddleSpec
		result    string
		inMessage string
		evicted   int
	}{
		{"to a node that fits", request("n2", 10*time.Second+500*time.Millisecond), huddlev1.MoveRequestStarted, "from n1 to n2, as requested", 2},
		{"to home", request("n1", 10*time.Second), huddlev1.MoveRequestRefused, "n1 is already the huddle's home", 0},
		{"expired", request("n2", 20*time.Minute), huddlev1.MoveRequestRefused, "older than 15m0s", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(tc.spec).node("n1", 4000).node("n2", 4000)
			f := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"))
			f.reconcile(t)
			h := f.huddle(t)
			got := h.Status.MoveRequest
			if got == nil || got.Result != tc.result || !strings.Contains(got.Message, tc.inMessage) {
				t.Fatalf("status.moveRequest %+v; want %s (~%q)", got, tc.result, tc.inMessage)
			}
			// The reconcile that starts a move evicts nothing: the next one,
			// with the move in the cache the placer shares, does, so the
			// replacements are pinned to the target.
			if len(f.evictions) != 0 {
				t.Errorf("%d evictions in the reconcile that answered the request, want 0", len(f.evictions))
			}
			if started := h.Status.LastMove != nil && h.Status.LastMove.To == "n2" && h.Status.LastMove.Finished == nil; started != (tc.result == huddlev1.MoveRequestStarted) {
				t.Errorf("lastMove %+v", h.Status.LastMove)
			}
			first := f.drain()
			f.reconcile(t)
			if len(f.evictions) != tc.evicted {
				t.Errorf("%d evictions, want %d", len(f.evictions), tc.evicted)
			}
			if again := f.drain(); strings.Contains(again, "MoveStarted") || strings.Contains(again, "MoveRefused") {
				t.Errorf("the request was answered again:\n%s\n(first answer:\n%s)", again, first)
			}
			if pendingRequest(f.huddle(t)) != nil {
				t.Error("the answered request still reads as pending")
			}
		})
	}
	// A request whose time carries a fraction of a second is the request
	// the status records at whole seconds.
	hud := &huddlev1.Huddle{Spec: request("n2", 500*time.Millisecond)}
	hud.Status.MoveRequest = &huddlev1.MoveRequestStatus{RequestedAt: hud.Spec.MoveRequest.RequestedAt.Rfc3339Copy(), Result: huddlev1.MoveRequestRefused}
	hud.Spec.MoveRequest.RequestedAt = metav1.NewTime(hud.Spec.MoveRequest.RequestedAt.Add(-500 * time.Millisecond).Truncate(time.Second).Add(500 * time.Millisecond))
	if pendingRequest(hud) != nil {
		t.Error("a request at 12:00:00.5 answered as 12:00:00 reads as pending")
	}
}

// staleHuddle reads every Huddle as it was before (a cache that has not
// seen the keeper's own write yet) and the rest as reader has it.
type staleHuddle struct {
	client.Reader
	h *huddlev1.Huddle
}

func (s staleHuddle) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if h, ok := obj.(*huddlev1.Huddle); ok {
		s.h.DeepCopyInto(h)
		return nil
	}
	return s.Reader.Get(ctx, key, obj, opts...)
}

// TestKeeperWaitsForItsMoveInTheCache: a WhenStuck move starts (recorded,
// nothing evicted yet); a reconcile brought by a pod event before the
// cache has the Huddle's update acts on nothing (before, it warned the
// stuck member's pod and the Huddle to set spec.move: WhenStuck, on a
// huddle already moving); once the cache has the move, the members at the
// old home and the stuck one are replaced.
func TestKeeperWaitsForItsMoveInTheCache(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck}).node("n1", 1000).node("n2", 4000)
	f := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
		stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute))
	before := f.huddle(t)
	f.reconcile(t)
	if mv := f.huddle(t).Status.LastMove; mv == nil || mv.To != "n2" {
		t.Fatalf("no move to n2 started: %+v", mv)
	}
	if len(f.evictions) != 0 {
		t.Fatalf("evicted %d in the reconcile that started the move, want 0", len(f.evictions))
	}
	f.drain()

	f.keeper.Gatherer.Reader = staleHuddle{Reader: f.client, h: before}
	if res := f.reconcile(t); res.RequeueAfter == 0 {
		t.Errorf("a reconcile behind the move is not looked at again: %+v", res)
	}
	if events := f.drain(); events != "" || len(f.evictions) != 0 {
		t.Fatalf("a reconcile behind the move acted: evictions %d, events:\n%s", len(f.evictions), events)
	}

	f.keeper.Gatherer.Reader = f.client
	f.reconcile(t)
	evicted := map[string]bool{}
	for _, e := range f.evictions {
		evicted[e.Name] = true
	}
	if !evicted["a"] || !evicted["b"] || !evicted["c"] {
		t.Fatalf("evicted %v once the cache has the move, want a, b and c", evicted)
	}
}

// The cache may have a write that move made before the move's own (a
// cleared MoveBlocked annotation): that cache is still behind the move,
// and repair waits for it as for the version before both (review
// finding: it warned the moving huddle's stuck member to set spec.move).
func TestKeeperWaitsPastItsOwnEarlierWrite(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck}).node("n1", 1000).node("n2", 4000)
	f := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
		stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute))
	h := f.huddle(t)
	metav1.SetMetaDataAnnotation(&h.ObjectMeta, AnnotationMoveBlocked, "no node fits earlier")
	if err := f.client.Update(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	before := f.huddle(t)
	f.reconcile(t)
	after := f.huddle(t)
	if mv := after.Status.LastMove; mv == nil || mv.To != "n2" {
		t.Fatalf("no move to n2 started: %+v", mv)
	}
	if _, blocked := after.Annotations[AnnotationMoveBlocked]; blocked {
		t.Fatalf("the move started with MoveBlocked still set: %v", after.Annotations)
	}
	f.drain()
	// The Huddle between the two writes: MoveBlocked cleared, no move.
	mid := before.DeepCopy()
	delete(mid.Annotations, AnnotationMoveBlocked)
	rv, _ := strconv.Atoi(before.ResourceVersion)
	mid.ResourceVersion = strconv.Itoa(rv + 1)
	if mid.ResourceVersion == after.ResourceVersion {
		t.Fatalf("the move and the cleared MoveBlocked were one write (rv %s): the test needs two", after.ResourceVersion)
	}
	f.keeper.Gatherer.Reader = staleHuddle{Reader: f.client, h: mid}
	f.reconcile(t)
	if events := f.drain(); events != "" || len(f.evictions) != 0 {
		t.Fatalf("a reconcile behind the move acted: evictions %d, events:\n%s", len(f.evictions), events)
	}
}
