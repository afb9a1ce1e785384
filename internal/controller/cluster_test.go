package controller

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/placement"
)

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
	attach.OnDelete(va("a", "n1"))
	if n := get(); n.Attached[ebs] != 1 {
		t.Fatalf("attached %d after one attachment went, want 1", n.Attached[ebs])
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
