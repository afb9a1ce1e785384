package controller

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// node is a small builder of Nodes for the controller's tests.
type node struct{ *corev1.Node }

func newNode(name string) node {
	return node{&corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelHostname: name}},
		Status: corev1.NodeStatus{
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("110")},
		},
	}}
}

func (n node) label(k, v string) node { n.Labels[k] = v; return n }
func (n node) taint(k, v string, e corev1.TaintEffect) node {
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Value: v, Effect: e})
	return n
}
func (n node) notReady() node {
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	return n
}
func (n node) annotate(k, v string) node {
	if n.Annotations == nil {
		n.Annotations = map[string]string{}
	}
	n.Annotations[k] = v
	return n
}
func (n node) allocatable(r corev1.ResourceName, q string) node {
	n.Status.Allocatable[r] = resource.MustParse(q)
	return n
}

// copyNode starts a changed node from a copy of n.
func copyNode(n node) node { return node{n.DeepCopy()} }

// TestNodePredicates: every change that can change placement or fencing
// passes, compared by value (a swapped label or taint value keeps the
// count); changes that cannot are filtered.
func TestNodePredicates(t *testing.T) {
	base := newNode("n1").label("zone", "a").taint("dedicated", "db", corev1.TaintEffectNoSchedule)
	heartbeat := copyNode(base)
	heartbeat.Status.Conditions[0].LastHeartbeatTime = metav1.Now()
	cordoned := copyNode(base)
	cordoned.Spec.Unschedulable = true
	for _, tc := range []struct {
		name               string
		to                 node
		scheduling, health bool
	}{
		{"heartbeat only", heartbeat, false, false},
		{"label value swapped", copyNode(base).label("zone", "b"), true, false},
		{"label key swapped", func() node { n := copyNode(base); delete(n.Labels, "zone"); return n.label("rack", "a") }(), true, false},
		{"taint value swapped", func() node { n := copyNode(base); n.Spec.Taints[0].Value = "web"; return n }(), true, true},
		{"taint effect swapped", func() node { n := copyNode(base); n.Spec.Taints[0].Effect = corev1.TaintEffectNoExecute; return n }(), true, true},
		{"taint added", copyNode(base).taint(TaintShutdown, "", corev1.TaintEffectNoSchedule), true, true},
		{"memory allocatable changed", copyNode(base).allocatable(corev1.ResourceMemory, "2Gi"), true, false},
		{"extended resource appeared", copyNode(base).allocatable("nvidia.com/gpu", "1"), true, false},
		{"cordoned", cordoned, true, false},
		{"NotReady", copyNode(base).notReady(), true, true},
		{"fenced annotation", copyNode(base).annotate(AnnotationFenced, "x"), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := event.UpdateEvent{ObjectOld: base.Node, ObjectNew: tc.to.Node}
			if got := nodeSchedulingChanged.Update(e); got != tc.scheduling {
				t.Errorf("nodeSchedulingChanged = %v, want %v", got, tc.scheduling)
			}
			if got := nodeHealthChanged.Update(e); got != tc.health {
				t.Errorf("nodeHealthChanged = %v, want %v", got, tc.health)
			}
		})
	}
	// Nodes that come and go always pass.
	for _, p := range []interface {
		Create(event.CreateEvent) bool
		Delete(event.DeleteEvent) bool
	}{nodeSchedulingChanged, nodeHealthChanged} {
		if !p.Create(event.CreateEvent{Object: base.Node}) || !p.Delete(event.DeleteEvent{Object: base.Node}) {
			t.Error("a node created or deleted was filtered")
		}
	}
}

type countingReconciler struct{ calls int }

func (c *countingReconciler) Reconcile(context.Context, reconcile.Request) (reconcile.Result, error) {
	c.calls++
	return reconcile.Result{}, nil
}

// TestAfterSync: no decision is made before the node tracker has been
// given every node and pod; the request is retried, not dropped.
func TestAfterSync(t *testing.T) {
	cluster := NewCluster()
	synced := false
	cluster.TrackSync(func() bool { return true })
	cluster.TrackSync(func() bool { return synced })
	next := &countingReconciler{}
	r := afterSync{cluster: cluster, next: next}
	req := reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "shop", Name: "web-0"}}
	res, err := r.Reconcile(context.Background(), req)
	if err != nil || res.RequeueAfter <= 0 || next.calls != 0 {
		t.Fatalf("before sync: result %+v, err %v, %d reconciles; want a requeue and none", res, err, next.calls)
	}
	synced = true
	if _, err := r.Reconcile(context.Background(), req); err != nil || next.calls != 1 {
		t.Fatalf("after sync: err %v, %d reconciles; want 1", err, next.calls)
	}
}
