package controller

import (
	"context"
	"strings"
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
	objs = append(objs, first, second)
	w := newPlacerWorld(t, objs...)
	store := w.store
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
	placer := w.placerOn
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

	// Once the recorded member terminates on the API server too (drained,
	// say; a finalizer keeps it), the record holds no one: the next member
	// goes first.
	p := stored(first.Name)
	p.Finalizers = append(p.Finalizers, "example.com/keep")
	if err := store.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if err := store.Delete(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if _, err := placer(lagging).Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(second)}); err != nil {
		t.Fatal(err)
	}
	if p := stored(second.Name); placement.HasGate(p) {
		t.Fatalf("the second member still waits for %s, which terminates: held %q", first.Name, p.Annotations[placement.AnnotationHeld])
	}
}

// TestFirstMemberRecordedOnEveryClaim: a first member that mounts two
// claims, neither with a home, is recorded as placing on both Huddles: a
// pod of the second claim alone, whose cache lags, must find it there.
func TestFirstMemberRecordedOnEveryClaim(t *testing.T) {
	objs := append(append(sharedClaim("data"), sharedClaim("logs")...), realisticOwners("data")...)
	first := realisticPod("web-0", "", "data", true)
	first.Spec.Volumes = append(first.Spec.Volumes, corev1.Volume{Name: "logs",
		VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "logs"}}})
	objs = append(objs, first, realisticPod("web-1", "", "data", true))
	w := newPlacerWorld(t, objs...)
	store, placer := w.store, w.placerOn(w.store)
	if _, err := placer.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(first)}); err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{}
	if err := store.Get(context.Background(), client.ObjectKeyFromObject(first), p); err != nil || placement.HasGate(p) {
		t.Fatalf("the first member was not released (%v): held %q", err, p.Annotations[placement.AnnotationHeld])
	}
	for _, claim := range []string{"data", "logs"} {
		hud := &huddlev1.Huddle{}
		if err := store.Get(context.Background(), client.ObjectKey{Namespace: gatherNS, Name: claim}, hud); err != nil || !strings.HasPrefix(hud.Annotations[AnnotationPlacing], first.Name+" ") {
			t.Errorf("Huddle %s: placing record %q (%v), want %s", claim, hud.Annotations[AnnotationPlacing], err, first.Name)
		}
	}
}

// placerWorld is an API server (store) holding objs, three nodes the
// realistic members may use, and a clock: placerOn makes a placer that
// reads its cache through reader and the API server through store.
type placerWorld struct {
	store client.WithWatch
	nodes []*corev1.Node
	clk   *clocktesting.FakeClock
}

func newPlacerWorld(t *testing.T, objs ...client.Object) *placerWorld {
	w := &placerWorld{clk: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC))}
	for _, name := range []string{"n1", "n2", "n3"} {
		n := realisticNode(name)
		n.Labels["zone"], n.Labels["kubernetes.io/os"] = "a", "linux" // the members' affinity and selector
		w.nodes = append(w.nodes, n)
	}
	w.store = fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV).Build()
	return w
}

func (w *placerWorld) placerOn(reader client.Client) *Placer {
	cluster := NewCluster()
	for _, n := range w.nodes {
		cluster.setNode(must(TrimNode(n.DeepCopy())))
	}
	g := &Gatherer{Reader: reader, Scope: scope.Scope{ClusterWide: true}, Cluster: cluster, Clock: w.clk}
	return &Placer{Client: reader, APIReader: w.store, Gatherer: g, Recorder: record.NewFakeRecorder(10), Clock: w.clk, MissingClaimGrace: time.Minute, MaxCandidates: 16}
}
