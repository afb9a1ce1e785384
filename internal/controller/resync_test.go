package controller

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// statusFixture is a Status reconciler over a fake client holding the
// world, with a fake clock, counting the status writes it sends.
type statusFixture struct {
	status  *Status
	client  client.Client
	cluster *Cluster
	clock   *clocktesting.FakeClock
	// writes are the fake times of the status writes.
	writes []time.Time
}

func newStatusFixture(t *testing.T, w *world, objs ...client.Object) *statusFixture {
	t.Helper()
	f := &statusFixture{cluster: NewCluster(), clock: clocktesting.NewFakeClock(now)}
	f.client = fake.NewClientBuilder().WithScheme(testScheme(t)).
		WithObjects(append(w.objs, objs...)...).
		WithStatusSubresource(&huddlev1.Huddle{}).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentNode, attachmentNode).
		WithIndex(&huddlev1.Huddle{}, IndexHuddleHome, huddleHome).
		WithIndex(&huddlev1.Huddle{}, indexHomeless, homeless).
		WithInterceptorFuncs(interceptor.Funcs{SubResourceUpdate: func(ctx context.Context, c client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if _, ok := obj.(*huddlev1.Huddle); ok && sub == "status" {
				f.writes = append(f.writes, f.clock.Now())
			}
			return c.SubResource(sub).Update(ctx, obj, opts...)
		}}).
		Build()
	for _, n := range w.nodes {
		f.cluster.setNode(n)
	}
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			f.cluster.setPod(p, false)
		}
	}
	g := &Gatherer{Reader: f.client, Cluster: f.cluster, Clock: f.clock}
	f.status = &Status{Client: f.client, Gatherer: g, Recorder: record.NewFakeRecorder(1000), Clock: f.clock}
	return f
}

func (f *statusFixture) reconcile(t *testing.T) ctrl.Result {
	t.Helper()
	res, err := f.status.Reconcile(context.Background(), ctrl.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: "data"}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestIdleHuddleResyncsOnlyAtSafety: a Huddle whose members and nodes do
// not change is reconciled by time alone only at the safety resync, 10
// minutes give or take 10%, and its unchanged status is never written
// again: over a fake hour the status controller looks at it at most 7
// times (the one-minute resync it replaces did 60), and repair never asks
// to look again at all.
func TestIdleHuddleResyncsOnlyAtSafety(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{}).node("n1", 4000)
	pods := []client.Object{running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1")}
	f := newStatusFixture(t, w, pods...)
	end := now.Add(time.Hour)
	reconciles := 0
	for f.clock.Now().Before(end) {
		res := f.reconcile(t)
		reconciles++
		if res.RequeueAfter < safetyResync*9/10 || res.RequeueAfter > safetyResync*11/10 {
			t.Fatalf("reconcile %d: requeue after %s, want the safety resync (%s ± 10%%)", reconciles, res.RequeueAfter, safetyResync)
		}
		f.clock.Step(res.RequeueAfter)
	}
	if reconciles > 7 {
		t.Errorf("%d reconciles in an idle hour, want at most 7", reconciles)
	}
	if len(f.writes) != 1 {
		t.Errorf("%d status writes, want 1 (the first; the status never changed after)", len(f.writes))
	}
	if h := f.huddle(t); h.Status.Home != "n1" || h.Status.Phase != huddlev1.PhaseHuddled {
		t.Errorf("status home %q phase %q, want n1 Huddled", h.Status.Home, h.Status.Phase)
	}

	kf := newFixture(t, w, options, pods...)
	if res := kf.reconcile(t); res.RequeueAfter != 0 || res.Requeue {
		t.Errorf("repair of an idle huddle asks to look again after %s, want never", res.RequeueAfter)
	}
}

// TestJitterSpreadsResyncs: the safety resync is spread over ±10%, so
// Huddles created together do not resync together.
func TestJitterSpreadsResyncs(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 100 {
		d := jittered()
		if d < safetyResync*9/10 || d > safetyResync*11/10 {
			t.Fatalf("jittered %s, outside %s ± 10%%", d, safetyResync)
		}
		seen[d.Round(time.Second)] = true
	}
	if len(seen) < 50 {
		t.Errorf("100 draws gave %d distinct seconds; want them spread", len(seen))
	}
}

func (f *statusFixture) huddle(t *testing.T) *huddlev1.Huddle {
	t.Helper()
	h := &huddlev1.Huddle{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestStatusWritesCoalesced: a burst of 60 pod events over 3 seconds,
// each changing the status and each reconciled at once (the worst case:
// the queue merges events that arrive while one waits), gives at most
// one status write per statusSpacing; the last state is written once the
// spacing allows, and then nothing more is written while nothing changes.
func TestStatusWritesCoalesced(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{}).node("n1", 4000)
	starting := running(pod("b", "ReplicaSet"), "n1")
	starting.Status.Phase = corev1.PodPending
	f := newStatusFixture(t, w, running(pod("a", "ReplicaSet"), "n1"), starting)
	ctx := context.Background()
	const events = 60
	var due time.Time // when the controller's queue would bring a requeue
	for i := range events {
		p := &corev1.Pod{}
		if err := f.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "b"}, p); err != nil {
			t.Fatal(err)
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: fmt.Sprintf("Step%d", i)}}}}
		if err := f.client.Status().Update(ctx, p); err != nil {
			t.Fatal(err)
		}
		res := f.reconcile(t)
		if res.RequeueAfter > 0 && res.RequeueAfter <= statusSpacing {
			due = f.clock.Now().Add(res.RequeueAfter)
		}
		f.clock.Step(50 * time.Millisecond)
		if !due.IsZero() && !f.clock.Now().Before(due) {
			f.reconcile(t)
			due = time.Time{}
		}
	}
	burst := f.clock.Now().Sub(now)
	f.clock.Step(statusSpacing)
	f.reconcile(t)
	for i := 1; i < len(f.writes); i++ {
		if gap := f.writes[i].Sub(f.writes[i-1]); gap < statusSpacing {
			t.Fatalf("writes %d and %d %s apart, want at least %s", i, i+1, gap, statusSpacing)
		}
	}
	if max := int(burst/statusSpacing) + 2; len(f.writes) > max {
		t.Errorf("%d status writes for %d events over %s, want at most %d", len(f.writes), events, burst, max)
	}
	t.Logf("%d events over %s: %d status writes", events, burst, len(f.writes))
	h := f.huddle(t)
	if got := memberReason(h, "b"); got != fmt.Sprintf("Starting: Step%d", events-1) {
		t.Fatalf("member b's reason %q after the burst, want the last state", got)
	}
	n := len(f.writes)
	for range 5 {
		f.clock.Step(statusSpacing)
		f.reconcile(t)
	}
	if len(f.writes) != n {
		t.Errorf("%d status writes while nothing changed, want none", len(f.writes)-n)
	}
}

func memberReason(h *huddlev1.Huddle, pod string) string {
	for _, m := range h.Status.Members {
		if m.Pod == pod {
			return m.Reason
		}
	}
	return "<not a member>"
}

// otherHuddle is a Huddle of a claim other than data, with a status that
// places it.
func otherHuddle(name, home string, members int32) *huddlev1.Huddle {
	return &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Status: huddlev1.HuddleStatus{Home: home, MemberCount: members}}
}

// drainQueue returns the names queued, sorted, and empties the queue.
func drainQueue(q workqueue.TypedInterface[reconcile.Request]) []string {
	var out []string
	for q.Len() > 0 {
		r, _ := q.Get()
		out = append(out, r.Name)
		q.Done(r)
	}
	sort.Strings(out)
	return out
}

// TestNodeChangeEnqueuesOnlyAffected: a node change queues only the
// Huddles whose status it can change, once per coalescing period however
// many events the node had: those at home there when its availability
// changes, or when its free resources turn their Fits; the claims of
// volumes attached there; and the Huddles with members and no home. A
// Node update that changes nothing placement reads queues nothing.
func TestNodeChangeEnqueuesOnlyAffected(t *testing.T) {
	// data (the world's claim) is at home on n3 with room to spare; a at
	// n1, b at n2, c has members and no home, idle has neither; claim e's
	// volume is attached to n2.
	w := newWorld(huddlev1.HuddleSpec{}).node("n1", 4000).node("n2", 4000).node("n3", 4000).node("n4", 4000)
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va-e"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "ebs.csi.aws.com", NodeName: "n2", Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To("pv-e")}}}
	pvE := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-e"},
		Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: ns, Name: "e"}}}
	f := newStatusFixture(t, w, running(pod("x", "ReplicaSet"), "n3"), running(pod("y", "ReplicaSet"), "n3"),
		otherHuddle("a", "n1", 2), otherHuddle("b", "n2", 1), otherHuddle("c", "", 1), otherHuddle("idle", "", 0), va, pvE)
	changes := f.cluster.Changes()
	f.reconcile(t) // data's status: home n3, fits (1 CPU of 4)
	m := &mapper{reader: f.client}
	mapFn := m.statusOfNodes(f.status.fitMayChange)
	q := workqueue.NewTyped[reconcile.Request]()
	flush := func() []string {
		changes.flush(context.Background(), q, mapFn)
		return drainQueue(q)
	}
	node := func(i int) *corev1.Node { return w.nodes[i].DeepCopy() }

	if got := flush(); got != nil {
		t.Fatalf("nothing changed: queued %v, want nothing", got)
	}

	n1 := node(0)
	n1.Status.Conditions[0].Status = corev1.ConditionFalse
	f.cluster.setNode(n1)
	if got := fmt.Sprint(flush()); got != "[a c]" {
		t.Errorf("n1 NotReady: queued %s, want [a c] (its Huddle, and the homeless one with members)", got)
	}

	n2 := node(1)
	n2.Spec.Unschedulable = true
	f.cluster.setNode(n2)
	if got := fmt.Sprint(flush()); got != "[b c e]" {
		t.Errorf("n2 cordoned: queued %s, want [b c e] (its Huddle, the claim attached there, the homeless one)", got)
	}

	heartbeat := node(3)
	heartbeat.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(now)
	heartbeat.Annotations = map[string]string{"node.alpha.kubernetes.io/ttl": "0"}
	f.cluster.setNode(heartbeat)
	if got := flush(); got != nil {
		t.Errorf("n4's heartbeat: queued %v, want nothing", got)
	}

	// A burst of pods binding to n3 that leaves data fitting: one look at
	// the homeless Huddle, none at data.
	for i := range 20 {
		f.cluster.setPod(boundPod(fmt.Sprintf("p%d", i), "n3", "10m"), false)
	}
	if got := fmt.Sprint(flush()); got != "[c]" {
		t.Errorf("20 small pods on n3: queued %s, want [c] (data still fits there)", got)
	}
	// One that fills n3 turns data's Fits.
	f.cluster.setPod(boundPod("big", "n3", "2900m"), false)
	if got := fmt.Sprint(flush()); got != "[c data]" {
		t.Errorf("n3 filled: queued %s, want [c data]", got)
	}
	f.clock.Step(statusSpacing)
	f.reconcile(t)
	if c := fitsCondition(f.huddle(t)); c != metav1.ConditionFalse {
		t.Errorf("data's Fits %s after n3 filled, want False", c)
	}
	// n3 freed again turns it back.
	f.cluster.setPod(boundPod("big", "n3", "2900m"), true)
	if got := fmt.Sprint(flush()); got != "[c data]" {
		t.Errorf("n3 freed: queued %s, want [c data]", got)
	}
}

func fitsCondition(h *huddlev1.Huddle) metav1.ConditionStatus {
	for _, c := range h.Status.Conditions {
		if c.Type == huddlev1.ConditionFits {
			return c.Status
		}
	}
	return ""
}

// TestKeeperStuckWaitsForEvents: a WhenStuck huddle whose member is stuck
// at home past moveAfter, with no other node that fits, used to be looked
// at every second for as long as it stayed so. Now it asks to look again
// only at the safety resync, and waits for what can start the move: a
// node change or a PodDisruptionBudget of its namespace queues it. Once
// another node fits, the move starts.
func TestKeeperStuckWaitsForEvents(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck}).node("n1", 1000).node("n2", 1000)
	f := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
		stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute))
	res := f.reconcile(t)
	if res.RequeueAfter < safetyResync*9/10 {
		t.Fatalf("stuck with nowhere to go: look again after %s, want the safety resync (%s ± 10%%)", res.RequeueAfter, safetyResync)
	}
	if mv := f.huddle(t).Status.LastMove; mv != nil {
		t.Fatalf("move %+v started with no node that fits", mv)
	}
	want := "[data]"
	if got := fmt.Sprint(names(f.keeper.Waiting(context.Background(), map[string]bool{"n2": false}))); got != want {
		t.Errorf("node change: queued %s, want %s", got, want)
	}
	if got := names(f.keeper.Waiting(context.Background(), nil)); got != nil {
		t.Errorf("no node change: queued %v, want nothing", got)
	}
	pdb := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns}}
	if got := fmt.Sprint(names(f.keeper.WaitingIn(context.Background(), pdb))); got != want {
		t.Errorf("budget of its namespace: queued %s, want %s", got, want)
	}
	pdb.Namespace = "elsewhere"
	if got := names(f.keeper.WaitingIn(context.Background(), pdb)); got != nil {
		t.Errorf("budget of another namespace: queued %v, want nothing", got)
	}

	// n2 grows: the node change brings the huddle back and it moves.
	n2 := w.nodes[1].DeepCopy()
	n2.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("4")
	f.keeper.Gatherer.Cluster.setNode(n2)
	f.reconcile(t)
	if mv := f.huddle(t).Status.LastMove; mv == nil || mv.To != "n2" {
		t.Fatalf("move %+v after n2 grew, want one to n2", mv)
	}
	if got := names(f.keeper.Waiting(context.Background(), map[string]bool{"n2": false})); got != nil {
		t.Errorf("moving: still waiting %v", got)
	}
}

// TestKeeperStuckLooksAgainWhenTheCapAllows: a move held back by the
// per-hour cap is looked at again when the cap allows one.
func TestKeeperStuckLooksAgainWhenTheCapAllows(t *testing.T) {
	w := newWorld(huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck}).node("n1", 1000).node("n2", 4000)
	hud := w.objs[3].(*huddlev1.Huddle)
	finished := metav1.NewTime(now.Add(-4 * time.Minute))
	hud.Status.LastMove = &huddlev1.Move{From: "n0", To: "n1", Started: metav1.NewTime(now.Add(-5 * time.Minute)), Finished: &finished, Result: "Succeeded"}
	f := newFixture(t, w, options, running(pod("a", "ReplicaSet"), "n1"), running(pod("b", "ReplicaSet"), "n1"),
		stuckPod(pod("c", "ReplicaSet"), "claim shop/data home n1", 6*time.Minute))
	if res := f.reconcile(t); res.RequeueAfter != 5*time.Minute {
		t.Fatalf("last move 5m ago, one per 10m: look again after %s, want 5m0s", res.RequeueAfter)
	}
}

func names(reqs []reconcile.Request) []string {
	var out []string
	for _, r := range reqs {
		out = append(out, r.Name)
	}
	sort.Strings(out)
	return out
}
