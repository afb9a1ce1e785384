package controller

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

// TestOneFirstMemberWhenTheCacheLags: two placers (two workers whose
// cache lags, or a replica that just took over from another) decide the
// first two members of a new huddle. The second one's cache has the
// Huddle's placing record but not yet the member it names, so from the
// cache alone that member looks gone and a second first member would be
// released to the same candidates, where the scheduler may put the two on
// different nodes (issue 8, case 11: a split, then evictions). The record
// is checked on the API server: the second member stays gated.
func TestOneFirstMemberWhenTheCacheLags(t *testing.T) {
	objs := append(sharedClaim("data"), realisticOwners("data")...)
	first, second := realisticPod("web-0", "", "data", true), realisticPod("web-1", "", "data", true)
	var nodes []*corev1.Node
	for _, name := range []string{"n1", "n2", "n3"} {
		n := realisticNode(name)
		n.Labels["zone"], n.Labels["kubernetes.io/os"] = "a", "linux" // the members' affinity and selector
		nodes = append(nodes, n)
	}
	objs = append(objs, first, second)
	store := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV).Build()
	lagging := interceptor.NewClient(store, interceptor.Funcs{
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			if pods, ok := list.(*corev1.PodList); ok {
				kept := pods.Items[:0]
				for _, p := range pods.Items {
					if p.Name != first.Name {
						kept = append(kept, p)
					}
				}
				pods.Items = kept
			}
			return nil
		},
	})
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC))
	placer := func(reader client.Client) *Placer {
		cluster := NewCluster()
		for _, n := range nodes {
			cluster.setNode(must(TrimNode(n.DeepCopy())))
		}
		g := &Gatherer{Reader: reader, Scope: scope.Scope{ClusterWide: true}, Cluster: cluster, Clock: clk}
		return &Placer{Client: reader, APIReader: store, Gatherer: g, Recorder: record.NewFakeRecorder(10), Clock: clk, MissingClaimGrace: time.Minute, MaxCandidates: 16}
	}
	stored := func(name string) *corev1.Pod {
		p := &corev1.Pod{}
		if err := store.Get(context.Background(), client.ObjectKey{Namespace: gatherNS, Name: name}, p); err != nil {
			t.Fatal(err)
		}
		return p
	}

	if _, err := placer(store).Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(first)}); err != nil {
		t.Fatal(err)
	}
	if p := stored(first.Name); placement.HasGate(p) {
		t.Fatalf("the first member was not released: held %q", p.Annotations[placement.AnnotationHeld])
	}
	hud := &huddlev1.Huddle{}
	if err := store.Get(context.Background(), client.ObjectKey{Namespace: gatherNS, Name: "data"}, hud); err != nil || hud.Annotations[AnnotationPlacing] == "" {
		t.Fatalf("no placing record on the Huddle (%v): %v", err, hud.Annotations)
	}

	res, err := placer(lagging).Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(second)})
	if err != nil {
		t.Fatal(err)
	}
	if p := stored(second.Name); !placement.HasGate(p) {
		t.Fatalf("a second first member was released (%q) while %s, recorded as placing, is in flight", p.Annotations[placement.AnnotationPinnedBy], first.Name)
	}
	if !res.Requeue && res.RequeueAfter == 0 {
		t.Fatalf("the second member is not looked at again: %+v", res)
	}
}
