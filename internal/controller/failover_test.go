package controller

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// fencerWorld is a fake cluster for the Fencer: claim shop/data, bound to
// pv-data, attached to home; the pods given; and the deletions made.
type fencerWorld struct {
	fencer *Fencer
	// client reads as huddle's cache does (trimmed); store is the
	// cluster's whole objects, where the kubelet writes.
	client  client.Client
	store   client.Client
	deleted []string // "name grace=N"
}

func newFencerWorld(t *testing.T, home *corev1.Node, objs ...client.Object) *fencerWorld {
	t.Helper()
	w := &fencerWorld{}
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-data"},
		Spec: corev1.PersistentVolumeSpec{ClaimRef: &corev1.ObjectReference{Namespace: "shop", Name: "data"}}}
	va := &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: "va-data"},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "ebs.csi.aws.com", NodeName: home.Name,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To("pv-data")}}}
	hud := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "data"}}
	objs = append(objs, home, pv, va, hud)
	w.store = fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentNode, func(o client.Object) []string {
			return []string{o.(*storagev1.VolumeAttachment).Spec.NodeName}
		}).
		WithIndex(&huddlev1.Huddle{}, IndexHuddleHome, func(o client.Object) []string {
			if h := o.(*huddlev1.Huddle); h.Status.Home != "" {
				return []string{h.Status.Home}
			}
			return nil
		}).
		WithIndex(&corev1.Pod{}, indexPodNode, podNode).
		WithIndex(&huddlev1.Huddle{}, indexStaleNode, staleNode).Build()
	reads := trimmedReads()
	w.client = interceptor.NewClient(w.store.(client.WithWatch), interceptor.Funcs{Get: reads.Get, List: reads.List, Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		o := &client.DeleteOptions{}
		o.ApplyOptions(opts)
		grace := "default"
		if o.GracePeriodSeconds != nil && *o.GracePeriodSeconds == 0 {
			grace = "0"
		}
		if o.Preconditions == nil || o.Preconditions.UID == nil || *o.Preconditions.UID != obj.GetUID() {
			grace += " without a UID precondition"
		}
		w.deleted = append(w.deleted, obj.GetName()+" grace="+grace)
		return c.Delete(ctx, obj, opts...)
	}})
	w.fencer = &Fencer{Client: w.client, Recorder: record.NewFakeRecorder(100), Clock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))}
	return w
}

func (w *fencerWorld) reconcile(t *testing.T, node string) *corev1.Node {
	t.Helper()
	if _, err := w.fencer.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: node}}); err != nil {
		t.Fatal(err)
	}
	n := &corev1.Node{}
	if err := w.client.Get(context.Background(), client.ObjectKey{Name: node}, n); err != nil {
		t.Fatal(err)
	}
	return n
}

// setReady flips the node's readiness in the fake cluster.
func (w *fencerWorld) setReady(t *testing.T, name string, ready bool) {
	t.Helper()
	n := &corev1.Node{}
	if err := w.store.Get(context.Background(), client.ObjectKey{Name: name}, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	if ready {
		n.Status.Conditions[0].Status = corev1.ConditionTrue
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == TaintShutdown })
	}
	status := n.Status
	if err := w.store.Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	n.Status = status
	if err := w.store.Status().Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
}

func outOfService(n *corev1.Node) []corev1.Taint {
	var out []corev1.Taint
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeOutOfService {
			out = append(out, t)
		}
	}
	return out
}

func shutDown(name string) node {
	return newNode(name).notReady().taint(TaintShutdown, "", corev1.TaintEffectNoSchedule)
}

func terminatingPod(name, node string) *corev1.Pod {
	p := boundPod(name, node, "100m")
	p.Finalizers = []string{"example.com/keep"} // the fake client keeps it terminating
	p.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	return p
}

// TestFencer: failover fences a NotReady node the cloud reports shut down
// that holds a huddle's volume, and unfences it when it is Ready again.
func TestFencer(t *testing.T) {
	t.Run("shut down home is fenced, then unfenced when Ready", func(t *testing.T) {
		w := newFencerWorld(t, shutDown("n1").Node)
		n := w.reconcile(t, "n1")
		if taints := outOfService(n); len(taints) != 1 || taints[0].Value != outOfServiceValue || taints[0].Effect != corev1.TaintEffectNoExecute {
			t.Fatalf("out-of-service taints %v, want huddle's", taints)
		}
		if n.Annotations[AnnotationFenced] != "2026-01-01T00:00:00Z" {
			t.Fatalf("fenced annotation %q, want the clock's time", n.Annotations[AnnotationFenced])
		}
		w.setReady(t, "n1", true)
		n = w.reconcile(t, "n1")
		if len(outOfService(n)) != 0 || n.Annotations[AnnotationFenced] != "" {
			t.Fatalf("after Ready: taints %v, annotations %v; want both gone", n.Spec.Taints, n.Annotations)
		}
	})
	t.Run("unreachable node is never fenced", func(t *testing.T) {
		w := newFencerWorld(t, newNode("n1").notReady().Node)
		if n := w.reconcile(t, "n1"); len(outOfService(n)) != 0 || n.Annotations[AnnotationFenced] != "" {
			t.Fatalf("fenced an unreachable node: %v", n.Spec.Taints)
		}
	})
	t.Run("node holding no huddle is not fenced", func(t *testing.T) {
		w := newFencerWorld(t, shutDown("n1").Node, shutDown("n2").Node)
		if n := w.reconcile(t, "n2"); len(outOfService(n)) != 0 {
			t.Fatalf("fenced n2, which holds no huddle: %v", n.Spec.Taints)
		}
	})
	// An out-of-service taint that was there before huddle looked, even
	// with huddle's value, is someone else's: huddle neither claims nor
	// removes it.
	t.Run("someone else's taint is kept", func(t *testing.T) {
		theirs := shutDown("n1").taint(corev1.TaintNodeOutOfService, outOfServiceValue, corev1.TaintEffectNoExecute)
		w := newFencerWorld(t, theirs.Node)
		if n := w.reconcile(t, "n1"); n.Annotations[AnnotationFenced] != "" {
			t.Fatalf("huddle recorded a fence it did not make: %v", n.Annotations)
		}
		w.setReady(t, "n1", true)
		if n := w.reconcile(t, "n1"); len(outOfService(n)) != 1 {
			t.Fatalf("huddle removed a taint it did not add: %v", n.Spec.Taints)
		}
	})
}

// TestFencerDeletesTerminatingPods: on a fenced node, terminating pods are
// force-deleted at once, with a UID precondition; other pods, and pods of
// nodes that are not fenced, are left alone.
func TestFencerDeletesTerminatingPods(t *testing.T) {
	w := newFencerWorld(t, shutDown("n1").Node, newNode("n2").Node,
		terminatingPod("web-0", "n1"), boundPod("tolerant", "n1", "100m"), terminatingPod("web-1", "n2"))
	w.reconcile(t, "n1") // fences
	if len(w.deleted) != 0 {
		t.Fatalf("deleted %v while fencing; the next reconcile, when the taint is seen, deletes", w.deleted)
	}
	w.reconcile(t, "n1")
	if want := []string{"web-0 grace=0"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("deleted %v, want %v", w.deleted, want)
	}
	w.deleted = nil
	w.reconcile(t, "n2")
	if len(w.deleted) != 0 {
		t.Fatalf("deleted %v on a healthy node", w.deleted)
	}
	// Someone else's fence authorises it too.
	theirs := shutDown("n3").taint(corev1.TaintNodeOutOfService, "manual", corev1.TaintEffectNoExecute)
	w = newFencerWorld(t, theirs.Node, terminatingPod("web-2", "n3"))
	w.reconcile(t, "n3")
	if want := []string{"web-2 grace=0"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("deleted %v, want %v", w.deleted, want)
	}
}

// TestNodeOfTerminatingPod: only terminating pods bound to a node wake
// the Fencer.
func TestNodeOfTerminatingPod(t *testing.T) {
	if got := nodeOfTerminatingPod(context.Background(), terminatingPod("a", "n1")); len(got) != 1 || got[0].Name != "n1" {
		t.Errorf("terminating pod mapped to %v, want n1", got)
	}
	if got := nodeOfTerminatingPod(context.Background(), boundPod("b", "n1", "1")); len(got) != 0 {
		t.Errorf("running pod mapped to %v", got)
	}
}

// mounting returns p with a volume of claim name.
func mounting(p *corev1.Pod, claim string) *corev1.Pod {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: claim,
		VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
	return p
}

// deleteNode deletes the node from the fake cluster and tells the Fencer,
// as the watch does, returning what the Fencer answered.
func (w *fencerWorld) deleteNode(t *testing.T, name string) bool {
	t.Helper()
	n := &corev1.Node{}
	if err := w.client.Get(context.Background(), client.ObjectKey{Name: name}, n); err != nil {
		t.Fatal(err)
	}
	if err := w.client.Delete(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	w.deleted = nil
	return w.fencer.NodeDeleted(n, false)
}

func (w *fencerWorld) reconcileGone(t *testing.T, node string) ctrl.Result {
	t.Helper()
	res, err := w.fencer.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: node}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// stale returns the Huddle's AnnotationStaleAttachment.
func (w *fencerWorld) stale(t *testing.T) string {
	t.Helper()
	h := &huddlev1.Huddle{}
	if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	return h.Annotations[AnnotationStaleAttachment]
}

// unreachable: the kubelet stopped posting status, as the node lifecycle
// controller marks it.
func unreachable(name string) *corev1.Node {
	n := newNode(name).Node
	n.Status.Conditions[0].Status = corev1.ConditionUnknown
	return n
}

// TestFencerReleasesDeletedHome: a home whose Node is deleted after its
// kubelet stopped posting (a terminated instance) cannot be tainted, and
// the attach/detach controller would keep its volume for 6 minutes.
// Failover records on the Huddle that it releases the volume (so the
// pods are held, and a restarted huddle carries on), force-deletes the
// node's pods that mount the huddle's claim (and no others), then, once
// they are gone, deletes the VolumeAttachment, and once that is gone
// records until when the attach/detach controller may still count it;
// after that the record is removed.
func TestFencerReleasesDeletedHome(t *testing.T) {
	w := newFencerWorld(t, unreachable("n1"),
		mounting(boundPod("web-0", "n1", "100m"), "data"), boundPod("other", "n1", "100m"))
	w.fencer.DetachSync = time.Minute
	if !w.deleteNode(t, "n1") {
		t.Fatal("an unreachable node's deletion was not taken as its machine gone")
	}
	if res := w.reconcileGone(t, "n1"); res.RequeueAfter != releaseRetry {
		t.Fatalf("result %+v while the member was being deleted, want a retry in %s", res, releaseRetry)
	}
	if want := []string{"web-0 grace=0"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("deleted %v, want %v (the member only, at once, with its UID)", w.deleted, want)
	}
	if got, want := w.stale(t), "n1 2026-01-01T00:07:02Z releasing"; got != want {
		t.Fatalf("stale attachment %q, want %q (the release begun, bounded by the upstream 6-minute wait plus a sync)", got, want)
	}
	w.deleted = nil
	w.reconcileGone(t, "n1")
	if want := []string{"va-data grace=default"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("deleted %v, want the VolumeAttachment, with its UID", w.deleted)
	}
	// The watch of VolumeAttachments brings the node back once it is gone.
	w.fencer.Clock.(*clocktesting.FakeClock).Step(5 * time.Second)
	if res := w.reconcileGone(t, "n1"); res.RequeueAfter != time.Minute+staleMargin {
		t.Fatalf("result %+v once the VolumeAttachment is gone, want a look when the hold ends", res)
	}
	if got, want := w.stale(t), "n1 2026-01-01T00:01:07Z"; got != want {
		t.Fatalf("stale attachment %q, want %q (from when the VolumeAttachment was gone: the clock plus the sync period and its margin)", got, want)
	}
	if w.fencer.isGone("n1") {
		t.Error("the node is still remembered in memory after the Huddle recorded it")
	}
	w.fencer.Clock.(*clocktesting.FakeClock).Step(time.Minute + staleMargin)
	w.reconcileGone(t, "n1")
	if got := w.stale(t); got != "" {
		t.Errorf("stale attachment %q left after it expired", got)
	}
}

// TestFencerCarriesOnAfterRestart: a huddle that restarted in the middle
// of a release (nothing in memory) finds it on the Huddle and carries on.
func TestFencerCarriesOnAfterRestart(t *testing.T) {
	w := newFencerWorld(t, unreachable("n1"), mounting(boundPod("web-0", "n1", "100m"), "data"))
	w.fencer.DetachSync = time.Minute
	w.deleteNode(t, "n1")
	w.reconcileGone(t, "n1")
	w.fencer = &Fencer{Client: w.client, Recorder: record.NewFakeRecorder(100), Clock: w.fencer.Clock, DetachSync: time.Minute}
	w.deleted = nil
	h := &huddlev1.Huddle{}
	if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	if got := nodeOfStaleHuddle(context.Background(), h); len(got) != 1 || got[0].Name != "n1" {
		t.Fatalf("the marked Huddle maps to %v, want node n1", got)
	}
	w.reconcileGone(t, "n1")
	if want := []string{"va-data grace=default"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("after a restart deleted %v, want %v", w.deleted, want)
	}
}

// TestFencerReleasesWhatAStandbyRecorded: the replica that sees a Node
// deleted with its instance gone records it on the Huddle (RecordDeleted),
// leader or not; a leader that never saw the deletion (started after it,
// nothing in memory) finds the record and releases the volume. A record
// already there is left as it is.
func TestFencerReleasesWhatAStandbyRecorded(t *testing.T) {
	w := newFencerWorld(t, unreachable("n1"), mounting(boundPod("web-0", "n1", "100m"), "data"))
	w.fencer.DetachSync = time.Minute
	if !w.deleteNode(t, "n1") {
		t.Fatal("an unreachable node's deletion was not taken as its machine gone")
	}
	w.fencer.RecordDeleted(context.Background(), "n1")
	if got, want := w.stale(t), "n1 2026-01-01T00:07:02Z releasing"; got != want {
		t.Fatalf("stale attachment %q, want %q (the release begun, bounded by the upstream 6-minute wait plus a sync)", got, want)
	}
	if len(w.deleted) != 0 {
		t.Fatalf("recording deleted %v, want nothing: only a leader releases", w.deleted)
	}
	w.fencer.Clock.(*clocktesting.FakeClock).Step(time.Minute)
	w.fencer.RecordDeleted(context.Background(), "n1")
	if got, want := w.stale(t), "n1 2026-01-01T00:07:02Z releasing"; got != want {
		t.Fatalf("a second record changed the mark to %q, want %q", got, want)
	}
	w.fencer = &Fencer{Client: w.client, Recorder: record.NewFakeRecorder(100), Clock: w.fencer.Clock, DetachSync: time.Minute}
	w.reconcileGone(t, "n1")
	if want := []string{"web-0 grace=0"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("the next leader deleted %v, want %v", w.deleted, want)
	}
	w.deleted = nil
	w.reconcileGone(t, "n1")
	if want := []string{"va-data grace=default"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("the next leader deleted %v, want the VolumeAttachment", w.deleted)
	}
}

// TestFencerRecordsOverItsExpiredRecord: a record of the same node name
// past its bound (an earlier deletion of a Node of that name: EKS names
// nodes by their IP) does not stop a standby recording the new deletion,
// or the next leader would leave the volume to Kubernetes' 6 minutes.
func TestFencerRecordsOverItsExpiredRecord(t *testing.T) {
	w := newFencerWorld(t, unreachable("n1"), mounting(boundPod("web-0", "n1", "100m"), "data"))
	w.fencer.DetachSync = time.Minute
	w.deleteNode(t, "n1")
	w.fencer.RecordDeleted(context.Background(), "n1")
	if got, want := w.stale(t), "n1 2026-01-01T00:07:02Z releasing"; got != want {
		t.Fatalf("stale attachment %q, want %q", got, want)
	}
	w.fencer.Clock.(*clocktesting.FakeClock).Step(8 * time.Minute)
	w.fencer.RecordDeleted(context.Background(), "n1")
	if got, want := w.stale(t), "n1 2026-01-01T00:15:02Z releasing"; got != want {
		t.Fatalf("stale attachment %q after the record expired, want a new one %q", got, want)
	}
}

// TestFencerDropsReleaseOfNodeBack: a record of a release from a deleted
// Node (here a standby's) is dropped once a Node of that name exists
// again, so a later deletion of that Node while Ready releases nothing: its
// machine may be writing. A standby records nothing for a Node that is
// back, and never overwrites another node's release under way.
func TestFencerDropsReleaseOfNodeBack(t *testing.T) {
	w := newFencerWorld(t, unreachable("n1"), mounting(boundPod("web-0", "n1", "100m"), "data"))
	w.fencer.DetachSync = time.Minute
	w.deleteNode(t, "n1")
	w.fencer.RecordDeleted(context.Background(), "n1")
	if got := w.stale(t); !strings.HasSuffix(got, " releasing") {
		t.Fatalf("stale attachment %q, want a release recorded", got)
	}
	back := newNode("n1").Node
	if err := w.client.Create(context.Background(), back); err != nil {
		t.Fatal(err)
	}
	w.fencer = &Fencer{Client: w.client, Recorder: record.NewFakeRecorder(100), Clock: w.fencer.Clock, DetachSync: time.Minute}
	w.reconcile(t, "n1")
	if got := w.stale(t); got != "" {
		t.Fatalf("stale attachment %q kept with the Node back, want it dropped", got)
	}
	w.fencer.RecordDeleted(context.Background(), "n1")
	if got := w.stale(t); got != "" {
		t.Fatalf("a standby recorded %q for a Node that is back", got)
	}
	if w.deleteNode(t, "n1") {
		t.Fatal("a Ready node's deletion was taken as its machine gone")
	}
	w.reconcileGone(t, "n1")
	if len(w.deleted) != 0 {
		t.Fatalf("deleted %v after a Ready node was deleted, want nothing", w.deleted)
	}

	other := newFencerWorld(t, unreachable("n2"), mounting(boundPod("web-0", "n2", "100m"), "data"))
	h := &huddlev1.Huddle{}
	if err := other.client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	held := "n9 2026-01-01T00:01:00Z"
	h.Annotations = map[string]string{AnnotationStaleAttachment: held}
	if err := other.client.Update(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	other.deleteNode(t, "n2")
	other.fencer.RecordDeleted(context.Background(), "n2")
	if got := other.stale(t); got != held {
		t.Fatalf("stale attachment %q, want another node's hold under way (%q) kept", got, held)
	}

	// A release record past its bound acts on nothing either.
	old := newFencerWorld(t, newNode("n1").Node, mounting(boundPod("web-0", "n1", "100m"), "data"))
	if err := old.client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	h.Annotations = map[string]string{AnnotationStaleAttachment: "n1 2025-12-31T23:00:00Z releasing"}
	if err := old.client.Update(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	old.deleteNode(t, "n1")
	old.reconcileGone(t, "n1")
	if len(old.deleted) != 0 {
		t.Fatalf("an expired release record deleted %v, want nothing", old.deleted)
	}
}

// TestFencerLeavesNodeDeletedWhileAlive: a Node deleted while its kubelet
// still reports (Ready, or NotReady without the cloud's shutdown taint),
// or whose last state the watch missed, may be a live machine still
// writing to the disk (a `kubectl delete node` by hand): it is left to the
// attach/detach controller's own wait. So is a node of the same name that
// was deleted before, came back, and is deleted again while Ready.
func TestFencerLeavesNodeDeletedWhileAlive(t *testing.T) {
	for name, n := range map[string]*corev1.Node{
		"Ready":                     newNode("n1").Node,
		"NotReady, kubelet alive":   newNode("n1").notReady().Node,
		"deleted again while Ready": unreachable("n1"),
	} {
		t.Run(name, func(t *testing.T) {
			w := newFencerWorld(t, n, mounting(boundPod("web-0", "n1", "100m"), "data"))
			if name == "deleted again while Ready" {
				if !w.deleteNode(t, "n1") {
					t.Fatal("first deletion not taken")
				}
				back := newNode("n1").Node
				if err := w.client.Create(context.Background(), back); err != nil {
					t.Fatal(err)
				}
				w.reconcile(t, "n1") // the Node is found: forgotten
			}
			if w.deleteNode(t, "n1") {
				t.Fatal("the deletion of a node whose kubelet reports was taken as its machine gone")
			}
			w.reconcileGone(t, "n1")
			if len(w.deleted) != 0 || w.stale(t) != "" {
				t.Fatalf("deleted %v, marked %q for a node deleted while alive", w.deleted, w.stale(t))
			}
		})
	}
	t.Run("state unknown", func(t *testing.T) {
		w := newFencerWorld(t, unreachable("n1"))
		if w.fencer.NodeDeleted(unreachable("n1"), true) {
			t.Error("a deletion whose last state is not known was taken as the machine gone")
		}
	})
}

// TestFencerBacksOffFromHeldPod: a pod of the deleted node that was
// deleted with no grace period and that a finalizer keeps is not deleted
// again every second; the Huddle is told which finalizer holds the
// volume, and the retries back off.
func TestFencerBacksOffFromHeldPod(t *testing.T) {
	held := mounting(boundPod("web-0", "n1", "100m"), "data")
	held.Finalizers = []string{"example.com/keep"}
	held.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	held.DeletionGracePeriodSeconds = ptr.To[int64](0)
	w := newFencerWorld(t, unreachable("n1"), held)
	w.deleteNode(t, "n1")
	var waits []time.Duration
	for range 4 {
		waits = append(waits, w.reconcileGone(t, "n1").RequeueAfter)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second}; !slices.Equal(waits, want) {
		t.Errorf("retries after %v, want %v", waits, want)
	}
	if len(w.deleted) != 0 {
		t.Errorf("deleted %v again", w.deleted)
	}
	events := w.fencer.Recorder.(*record.FakeRecorder).Events
	found := false
	for len(events) > 0 {
		if e := <-events; strings.Contains(e, "ReleaseBlocked") && strings.Contains(e, "example.com/keep") {
			found = true
		}
	}
	if !found {
		t.Error("no ReleaseBlocked event naming the finalizer")
	}
}

func TestInstanceGone(t *testing.T) {
	for _, tc := range []struct {
		name string
		node *corev1.Node
		want bool
	}{
		{"Ready", newNode("n").Node, false},
		{"NotReady", newNode("n").notReady().Node, false},
		{"Unknown", unreachable("n"), true},
		{"NotReady, shut down", shutDown("n").Node, true},
		{"no condition", &corev1.Node{}, false},
	} {
		if got := instanceGone(tc.node); got != tc.want {
			t.Errorf("%s: instanceGone %v, want %v", tc.name, got, tc.want)
		}
	}
}
