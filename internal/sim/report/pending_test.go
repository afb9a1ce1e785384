package report

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/placement"
)

// TestHuddleTimers: what huddle has due holds the wait until a little
// after it is due, by the keeper's rules: a member waiting at a healthy
// home for room holds nothing (huddle reports it, it does not replace it),
// nor does a pod huddle would not replace (a bare pod).
func TestHuddleTimers(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	unschedulable := func(name, pinnedBy string, since time.Duration) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "app", Annotations: map[string]string{placement.AnnotationPinnedBy: pinnedBy},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: "rs", Controller: ptr.To(true)}}},
			Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
				Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonUnschedulable,
				LastTransitionTime: metav1.NewTime(now.Add(-since)),
			}}},
		}
	}
	bare := unschedulable("bare", "claim app/fresh candidates n1,n2", time.Minute)
	bare.OwnerReferences = nil
	node := func(name string, ready bool) *corev1.Node {
		status := corev1.ConditionTrue
		if !ready {
			status = corev1.ConditionUnknown
		}
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}}}}
	}
	client := fake.NewClientset(
		node("n1", true), node("n2", true), node("n7", false),
		unschedulable("first", "claim app/fresh candidates n1,n2", time.Minute),  // replacement due in 4m
		unschedulable("late", "claim app/fresh candidates n1,n2", 6*time.Minute), // overdue past slack: not held
		unschedulable("waits", "claim app/data home n1", 10*time.Minute),         // healthy home, move Never
		unschedulable("mover", "claim app/moving home n1", 2*time.Minute),        // move due in 1m
		unschedulable("stale", "claim app/data home n9", 30*time.Second),         // pinned away from home
		unschedulable("downhome", "claim app/down home n7", 2*time.Minute),       // home not Ready: replaced
		bare, // never replaced: reported only
		&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bound", Namespace: "app"}, Spec: corev1.PodSpec{NodeName: "n1"}}, // not pinned
	)
	scheme := runtime.NewScheme()
	if err := huddlev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	huddle := func(name, home string, move huddlev1.MovePolicy, after time.Duration) *huddlev1.Huddle {
		h := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "app"}, Spec: huddlev1.HuddleSpec{Move: move}, Status: huddlev1.HuddleStatus{Home: home}}
		if after > 0 {
			h.Spec.MoveAfter = &metav1.Duration{Duration: after}
		}
		return h
	}
	moving := huddle("busy", "n1", huddlev1.MoveWhenStuck, 0)
	moving.Status.LastMove = &huddlev1.Move{From: "n1", To: "n2", Started: metav1.NewTime(now.Add(-20 * time.Second))}
	moving.Status.Conditions = []metav1.Condition{{Type: huddlev1.ConditionMoving, Status: metav1.ConditionTrue, Reason: "MoveStarted"}}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{huddlesResource: "HuddleList"},
		huddle("data", "n1", huddlev1.MoveNever, 0), huddle("moving", "n1", huddlev1.MoveWhenStuck, 3*time.Minute), huddle("down", "n7", huddlev1.MoveNever, 0), moving)
	timers := HuddleTimers{Client: client, Huddles: dyn, Namespaces: []string{"app"}, UnschedulableDeadline: 5 * time.Minute, MoveDeadline: 10 * time.Minute, Slack: 30 * time.Second}
	dues, err := timers.Pending(context.Background(), now)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dues {
		got = append(got, d.String(now))
	}
	want := []string{
		"claim app/moving: a move (pod mover Unschedulable at home since 09:58:00, moveAfter 3m0s), due in 1m0s",
		"pod downhome: replacement (Unschedulable since 09:58:00, unschedulable deadline 5m0s), due in 3m0s",
		"pod first: replacement (Unschedulable since 09:59:00, unschedulable deadline 5m0s), due in 4m0s",
		"pod stale: replacement (Unschedulable since 09:59:30, unschedulable deadline 5m0s), due in 4m30s",
		"claim app/busy: the move to n2 (started 20s ago) finishing, or abandoned at its deadline 10m0s, due in 9m40s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("pending:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRecreatingOwnersAgree: the timers replace the pods the keeper
// replaces by default.
func TestRecreatingOwnersAgree(t *testing.T) {
	if len(recreating) != len(controller.DefaultRecreatingOwners) {
		t.Fatalf("report's %v and the controller's %v differ", recreating, controller.DefaultRecreatingOwners)
	}
	for _, k := range controller.DefaultRecreatingOwners {
		if !recreating[k] {
			t.Errorf("the controller replaces %s's pods; the timers do not wait for it", k)
		}
	}
}
