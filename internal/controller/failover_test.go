package controller

import (
	"context"
	"slices"
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
	fencer  *Fencer
	client  client.Client
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
	w.client = fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
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
		WithInterceptorFuncs(interceptor.Funcs{Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
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
		}}).Build()
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
	if err := w.client.Get(context.Background(), client.ObjectKey{Name: name}, n); err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	if ready {
		n.Status.Conditions[0].Status = corev1.ConditionTrue
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == TaintShutdown })
	}
	status := n.Status
	if err := w.client.Update(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	n.Status = status
	if err := w.client.Status().Update(context.Background(), n); err != nil {
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
	return w.fencer.NodeDeleted(n)
}

func (w *fencerWorld) reconcileGone(t *testing.T, node string) ctrl.Result {
	t.Helper()
	res, err := w.fencer.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKey{Name: node}})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestFencerReleasesDeletedHome: a home whose Node is deleted while
// NotReady (a terminated instance) cannot be tainted, and the attach/detach
// controller would keep its volume for 6 minutes. Failover force-deletes
// the node's pods that mount the huddle's claim (and no others), then,
// once they are gone, deletes the VolumeAttachment and records on the
// Huddle until when the attach/detach controller may still count it.
func TestFencerReleasesDeletedHome(t *testing.T) {
	w := newFencerWorld(t, newNode("n1").notReady().Node,
		mounting(boundPod("web-0", "n1", "100m"), "data"), boundPod("other", "n1", "100m"))
	w.fencer.DetachSync = time.Minute
	if !w.deleteNode(t, "n1") {
		t.Fatal("a NotReady node's deletion was not taken as its machine gone")
	}
	if res := w.reconcileGone(t, "n1"); res.RequeueAfter != releaseRetry {
		t.Fatalf("result %+v while the member was being deleted, want a retry in %s", res, releaseRetry)
	}
	if want := []string{"web-0 grace=0"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("deleted %v, want %v (the member only, at once, with its UID)", w.deleted, want)
	}
	w.deleted = nil
	if res := w.reconcileGone(t, "n1"); res.RequeueAfter != 0 {
		t.Fatalf("result %+v once the member is gone, want done", res)
	}
	if want := []string{"va-data grace=default"}; !slices.Equal(w.deleted, want) {
		t.Fatalf("deleted %v, want the VolumeAttachment, with its UID", w.deleted)
	}
	h := &huddlev1.Huddle{}
	if err := w.client.Get(context.Background(), client.ObjectKey{Namespace: "shop", Name: "data"}, h); err != nil {
		t.Fatal(err)
	}
	if got, want := h.Annotations[AnnotationStaleAttachment], "n1 2026-01-01T00:01:02Z"; got != want {
		t.Fatalf("stale attachment %q, want %q (the clock plus the sync period and its margin)", got, want)
	}
	if w.fencer.isGone("n1") {
		t.Error("the node is still remembered after its volumes were released")
	}
}

// TestFencerLeavesNodeDeletedWhileReady: a Node deleted while Ready may be
// a live machine (`kubectl delete node`) still writing to the disk: it is
// left to the attach/detach controller's own wait.
func TestFencerLeavesNodeDeletedWhileReady(t *testing.T) {
	w := newFencerWorld(t, newNode("n1").Node, mounting(boundPod("web-0", "n1", "100m"), "data"))
	if w.deleteNode(t, "n1") {
		t.Fatal("a Ready node's deletion was taken as its machine gone")
	}
	w.reconcileGone(t, "n1")
	if len(w.deleted) != 0 {
		t.Fatalf("deleted %v for a node deleted while Ready", w.deleted)
	}
}
