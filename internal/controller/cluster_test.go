package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/huddle-io/huddle/internal/placement"
)

func boundPod(name, node, cpu string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID(name)},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// view returns the tracker's nodes, in its order, as copies.
func view(c *Cluster) []placement.Node {
	var out []placement.Node
	c.View(func(nodes placement.Nodes) {
		for i := range nodes.Len() {
			out = append(out, *nodes.At(i))
		}
	})
	return out
}

func milliCPU(c *Cluster, node string) int64 {
	var got int64 = -1
	c.View(func(nodes placement.Nodes) {
		if n := nodes.Get(node); n != nil {
			got = n.Requested.MilliCPU
		}
	})
	return got
}

// TestClusterTracksNodesAndUsage: the tracker follows nodes (added, changed
// by value, deleted) and the requests of the pods bound to them.
func TestClusterTracksNodesAndUsage(t *testing.T) {
	c := NewCluster()
	nh, ph := c.NodeHandler(), c.PodHandler()
	// A pod seen before its node still counts once the node comes.
	ph.OnAdd(boundPod("a", "n2", "500m"), true)
	nh.OnAdd(newNode("n2").Node, true)
	nh.OnAdd(newNode("n1").Node, true)
	if got := view(c); len(got) != 2 || got[0].Name != "n1" || got[1].Name != "n2" {
		t.Fatalf("nodes %v, want n1, n2 in order", got)
	}
	if got := milliCPU(c, "n2"); got != 500 {
		t.Fatalf("n2 requests %dm, want 500m", got)
	}

	// Binding, a second pod, and a finished pod.
	b := boundPod("b", "", "250m")
	ph.OnAdd(b, false)
	bound := b.DeepCopy()
	bound.Spec.NodeName = "n2"
	ph.OnUpdate(b, bound)
	if got := milliCPU(c, "n2"); got != 750 {
		t.Fatalf("n2 requests %dm after binding b, want 750m", got)
	}
	done := bound.DeepCopy()
	done.Status.Phase = corev1.PodSucceeded
	ph.OnUpdate(bound, done)
	if got := milliCPU(c, "n2"); got != 500 {
		t.Fatalf("n2 requests %dm after b finished, want 500m", got)
	}

	// A node update keeps usage and shows the new values of same-count
	// labels and taints.
	old := newNode("n2").taint("dedicated", "db", corev1.TaintEffectNoSchedule).label("zone", "a")
	nh.OnUpdate(newNode("n2").Node, old.Node)
	changed := copyNode(old).label("zone", "b").notReady()
	changed.Spec.Taints[0].Value = "web"
	changed.Spec.Unschedulable = true
	nh.OnUpdate(old.Node, changed.Node)
	var n2 placement.Node
	for _, n := range view(c) {
		if n.Name == "n2" {
			n2 = n
		}
	}
	if n2.Labels["zone"] != "b" || n2.Taints[0].Value != "web" || n2.Ready || !n2.Cordoned || n2.Requested.MilliCPU != 500 {
		t.Fatalf("n2 after update: %+v", n2)
	}

	// Deletions, also as a tombstone.
	ph.OnDelete(cache.DeletedFinalStateUnknown{Key: "shop/a", Obj: boundPod("a", "n2", "500m")})
	if got := milliCPU(c, "n2"); got != 0 {
		t.Fatalf("n2 requests %dm after a was deleted, want 0", got)
	}
	nh.OnDelete(cache.DeletedFinalStateUnknown{Key: "n1", Obj: newNode("n1").Node})
	if got := view(c); len(got) != 1 || got[0].Name != "n2" {
		t.Fatalf("nodes %v after n1 was deleted, want n2", got)
	}
}

// slowHandler delays each node it is given, as a busy handler would.
type slowHandler struct{ cache.ResourceEventHandler }

func (s slowHandler) OnAdd(o any, initial bool) {
	time.Sleep(2 * time.Millisecond)
	s.ResourceEventHandler.OnAdd(o, initial)
}

// TestClusterHasSynced: once the tracker says it has synced, it holds
// every node the informer listed at start, even when its handler is
// slower than the informer's own store.
func TestClusterHasSynced(t *testing.T) {
	const n = 50
	client := fake.NewClientset()
	for i := range n {
		if _, err := client.CoreV1().Nodes().Create(context.Background(), newNode(fmt.Sprintf("n%02d", i)).Node, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	inf := factory.Core().V1().Nodes().Informer()
	c := NewCluster()
	reg, err := inf.AddEventHandler(slowHandler{c.NodeHandler()})
	if err != nil {
		t.Fatal(err)
	}
	c.TrackSync(reg.HasSynced)
	stop := make(chan struct{})
	defer close(stop)
	factory.Start(stop)
	deadline := time.Now().Add(10 * time.Second)
	for !c.HasSynced() {
		if time.Now().After(deadline) {
			t.Fatal("the tracker never synced")
		}
		time.Sleep(time.Millisecond)
	}
	if !inf.HasSynced() {
		t.Fatal("the tracker synced before its informer")
	}
	if got := len(view(c)); got != n {
		t.Fatalf("synced with %d nodes, want %d", got, n)
	}
}
