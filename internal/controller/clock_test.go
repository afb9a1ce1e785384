package controller

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/scope"
)

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := huddlev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func fakeClient(t *testing.T, objs ...client.Object) client.WithWatch {
	return fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithStatusSubresource(&huddlev1.Huddle{}).Build()
}

// TestGathererUsesItsClock: whether a recorded first member still holds
// its huddle is judged by the injected clock, not the wall clock.
func TestGathererUsesItsClock(t *testing.T) {
	recorded := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "data",
		Annotations: map[string]string{scope.AnnotationShare: "false"}}}
	hud := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "data",
		Annotations: map[string]string{AnnotationPlacing: "web-0 " + recorded.Format(time.RFC3339)}}}
	clk := clocktesting.NewFakeClock(recorded.Add(10 * time.Second))
	g := &Gatherer{Reader: fakeClient(t, claim, hud), Cluster: NewCluster(), Clock: clk}
	f, err := g.Claim(context.Background(), "shop", "data")
	if err != nil {
		t.Fatal(err)
	}
	if f.Placing != "web-0" {
		t.Fatalf("10s after it was recorded, placing = %q, want web-0", f.Placing)
	}
	clk.Step(placingTTL)
	if f, err = g.Claim(context.Background(), "shop", "data"); err != nil || f.Placing != "" {
		t.Fatalf("past its TTL, placing = %q (err %v), want none", f.Placing, err)
	}
}
