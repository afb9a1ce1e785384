package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

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

	// A node an autoscaler drains for removal (a taint, no cordon) takes
	// no new pods.
	for _, key := range []string{"karpenter.sh/disrupted", "ToBeDeletedByClusterAutoscaler"} {
		nh.OnUpdate(old.Node, copyNode(old).taint(key, "", corev1.TaintEffectNoSchedule).Node)
		for _, n := range view(c) {
			if n.Name == "n2" && !n.Cordoned {
				t.Errorf("n2 tainted %s not taken as cordoned", key)
			}
		}
	}
	nh.OnUpdate(old.Node, old.Node)
	for _, n := range view(c) {
		if n.Name == "n2" && n.Cordoned {
			t.Errorf("n2 with only its own taint taken as cordoned")
		}
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

// TestClusterCountsExtendedResources: the tracker sums extended resources
// (GPUs) per node from pod events, once per pod however often it is
// updated, and gives them back when the pod goes.
func TestClusterCountsExtendedResources(t *testing.T) {
	const gpu = corev1.ResourceName("nvidia.com/gpu")
	c := NewCluster()
	c.setNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: corev1.NodeStatus{
		Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), gpu: resource.MustParse("2")},
		Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}})
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", UID: "p"}, Spec: corev1.PodSpec{NodeName: "n1",
		Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{gpu: resource.MustParse("1")}}}}}}
	free := func() placement.Resources {
		var r placement.Resources
		c.View(func(nodes placement.Nodes) { r = nodes.Get("n1").Free() })
		return r
	}
	c.setPod(pod, false)
	c.setPod(pod.DeepCopy(), false) // an update that changes nothing
	if got := free().Scalar[gpu]; got != 1 {
		t.Fatalf("free GPUs %d after one pod asking for one, want 1", got)
	}
	c.setPod(pod, true)
	if got := free().Scalar[gpu]; got != 2 {
		t.Fatalf("free GPUs %d after the pod went, want 2", got)
	}
}

// TestClusterCountsAttachments: attach limits come from CSINodes and the
// attached count per driver from VolumeAttachments, whichever arrives
// first, and survive node updates.
func TestClusterCountsAttachments(t *testing.T) {
	const ebs = "ebs.csi.aws.com"
	c := NewCluster()
	va := func(uid, node string) *storagev1.VolumeAttachment {
		return &storagev1.VolumeAttachment{ObjectMeta: metav1.ObjectMeta{Name: uid, UID: types.UID(uid)}, Spec: storagev1.VolumeAttachmentSpec{Attacher: ebs, NodeName: node}}
	}
	attach := c.AttachmentHandler()
	attach.OnAdd(va("a", "n1"), false)
	c.CSINodeHandler().OnAdd(&storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{
		{Name: ebs, Allocatable: &storagev1.VolumeNodeResources{Count: ptr.To[int32](25)}}}}}, false)
	c.setNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}})
	attach.OnAdd(va("b", "n1"), false)
	attach.OnUpdate(va("b", "n1"), va("b", "n1"))
	c.setNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}) // an update
	get := func() *placement.Node {
		var n placement.Node
		c.View(func(nodes placement.Nodes) { n = *nodes.Get("n1") })
		return &n
	}
	if n := get(); n.AttachLimit[ebs] != 25 || n.Attached[ebs] != 2 {
		t.Fatalf("limit %d attached %d, want 25 and 2", n.AttachLimit[ebs], n.Attached[ebs])
	}
	select {
	case e := <-c.Detached:
		t.Fatalf("freed slot on %s before any attachment went", e.Object.GetName())
	default:
	}
	attach.OnDelete(va("a", "n1"))
	if n := get(); n.Attached[ebs] != 1 {
		t.Fatalf("attached %d after one attachment went, want 1", n.Attached[ebs])
	}
	// The placer hears of the freed slot: pods held for want of a node
	// under its attach limit may go there now.
	select {
	case e := <-c.Detached:
		if e.Object.GetName() != "n1" {
			t.Errorf("freed slot on %s, want n1", e.Object.GetName())
		}
	default:
		t.Error("no freed slot told after an attachment went")
	}
	// A full channel never blocks the informer.
	for range detachedBuffer + 1 {
		c.freedSlot("n1")
	}
}

// TestRequestsAsTheSchedulerCounts: a pod's requests include its
// RuntimeClass overhead and restartable sidecars, and an init container
// larger than the rest.
func TestRequestsAsTheSchedulerCounts(t *testing.T) {
	res := func(cpu string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
	}
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{Spec: corev1.PodSpec{
		Overhead: res("250m"),
		InitContainers: []corev1.Container{
			{Name: "sidecar", RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: res("100m")}},
			{Name: "init", Resources: corev1.ResourceRequirements{Requests: res("50m")}},
		},
		Containers: []corev1.Container{{Name: "app", Resources: corev1.ResourceRequirements{Requests: res("500m")}}},
	}}
	if got := Requests(p); got.MilliCPU != 850 || got.Pods != 1 {
		t.Fatalf("got %+v, want 850m (500m app + 100m sidecar + 250m overhead) and one pod", got)
	}
	p.Spec.InitContainers[1].Resources.Requests = res("2")
	if got := Requests(p); got.MilliCPU != 2000+100+250 {
		t.Fatalf("got %dm, want 2350m (init 2 CPU beside the sidecar, plus overhead)", got.MilliCPU)
	}
}
