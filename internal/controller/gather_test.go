package controller

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

const gatherNS = "apps"

func fakeGatherer(t *testing.T, objs ...client.Object) *Gatherer {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := huddlev1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV).Build()
	cluster := NewCluster()
	for _, n := range []string{"n1", "n2"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
		cluster.setNode(node)
	}
	return &Gatherer{Reader: c, Scope: scope.Scope{ClusterWide: true}, Cluster: cluster, Clock: clock.RealClock{}}
}

// sharedClaim is a claim bound to an EBS-like CSI volume.
func sharedClaim(name string) []client.Object {
	pv := &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-" + name}, Spec: corev1.PersistentVolumeSpec{
		AccessModes:            []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: name}},
	}}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: name}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, VolumeName: pv.Name,
	}}
	return []client.Object{pv, pvc}
}

func podOf(name, node string, owner *metav1.OwnerReference, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: name, UID: types.UID("uid-" + name)}, Spec: corev1.PodSpec{NodeName: node,
		Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}}}}
	if owner != nil {
		p.OwnerReferences = []metav1.OwnerReference{*owner}
	}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

func gatedPod(p *corev1.Pod) *corev1.Pod {
	p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: placement.Gate}}
	return p
}

func controllerRef(kind, name string) *metav1.OwnerReference {
	return &metav1.OwnerReference{APIVersion: "apps/v1", Kind: kind, Name: name, UID: types.UID("uid-" + kind + name), Controller: ptr.To(true)}
}

// TestOwnerDemandPerClaim: a StatefulSet's volumeClaimTemplates claim is
// mounted by one of its pods, so its owner counts that pod, not every
// replica; a claim its template mounts counts every replica.
func TestOwnerDemandPerClaim(t *testing.T) {
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: "web", UID: "uid-StatefulSetweb"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](50),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}},
			Volumes:    []corev1.Volume{{Name: "shared", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "shared"}}}},
		}}}}
	objs := []client.Object{sts, podOf("web-0", "n1", controllerRef("StatefulSet", "web"), "data-web-0", "shared")}
	objs = append(objs, sharedClaim("data-web-0")...)
	objs = append(objs, sharedClaim("shared")...)
	g := fakeGatherer(t, objs...)
	for claim, want := range map[string]int64{"data-web-0": 0, "shared": 50} {
		f, err := g.Claim(context.Background(), gatherNS, claim)
		if err != nil {
			t.Fatal(err)
		}
		if got := f.Owners["StatefulSet/web"].MaxPods; got != want {
			t.Errorf("%s: owner MaxPods %d, want %d", claim, got, want)
		}
		if d := placement.Demand([]*placement.Claim{&f.Claim}); claim == "data-web-0" && d.MilliCPU != 100 {
			t.Errorf("%s: demand %dm CPU, want one pod's 100m", claim, d.MilliCPU)
		}
	}
}

// TestOthersGathered: a member that also mounts another shared claim
// carries that claim's home, or its first member in flight.
func TestOthersGathered(t *testing.T) {
	objs := []client.Object{
		podOf("a-0", "n2", nil, "a"),              // a's home: n2
		gatedPod(podOf("b-0", "", nil, "b", "a")), // mounts b and a
		gatedPod(podOf("b-1", "", nil, "b", "c")), // mounts b and c
		podOf("c-0", "", nil, "c"),                // c's first member, released
	}
	objs = append(objs, sharedClaim("a")...)
	objs = append(objs, sharedClaim("b")...)
	objs = append(objs, sharedClaim("c")...)
	g := fakeGatherer(t, objs...)
	f, err := g.Claim(context.Background(), gatherNS, "b")
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]placement.OtherClaim{}
	for _, m := range f.Members {
		got[m.Name] = m.Others
	}
	if o := got["b-0"]; len(o) != 1 || o[0] != (placement.OtherClaim{Key: gatherNS + "/a", Home: "n2"}) {
		t.Errorf("b-0 others %+v, want a at home n2", o)
	}
	if o := got["b-1"]; len(o) != 1 || o[0] != (placement.OtherClaim{Key: gatherNS + "/c", FirstMember: "c-0"}) {
		t.Errorf("b-1 others %+v, want c with first member c-0", o)
	}
}

func TestDeploymentMaxPods(t *testing.T) {
	surge := func(v intstr.IntOrString) appsv1.DeploymentStrategy {
		return appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &v}}
	}
	for _, tc := range []struct {
		name     string
		replicas *int32
		strategy appsv1.DeploymentStrategy
		want     int64
	}{
		{"default: 25% surge rounds up", ptr.To[int32](4), appsv1.DeploymentStrategy{}, 5},
		{"one replica, default surge", ptr.To[int32](1), appsv1.DeploymentStrategy{}, 2},
		{"replicas unset means one", nil, appsv1.DeploymentStrategy{}, 2},
		{"Recreate: no surge", ptr.To[int32](3), appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}, 3},
		{"surge 2", ptr.To[int32](3), surge(intstr.FromInt32(2)), 5},
		{"surge 0", ptr.To[int32](3), surge(intstr.FromInt32(0)), 3},
		{"surge 50%", ptr.To[int32](3), surge(intstr.FromString("50%")), 5},
		{"zero replicas", ptr.To[int32](0), appsv1.DeploymentStrategy{}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Replicas: tc.replicas, Strategy: tc.strategy}}
			if got := deploymentMaxPods(d); got != tc.want {
				t.Fatalf("got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestTemplateRequests: a template's limits stand for its missing requests
// (the API server defaults a pod's requests from its limits), init
// containers and restartable sidecars count as the scheduler counts them.
func TestTemplateRequests(t *testing.T) {
	res := func(cpu string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
	}
	always := corev1.ContainerRestartPolicyAlways
	tmpl := &corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		InitContainers: []corev1.Container{
			{Name: "init", Resources: corev1.ResourceRequirements{Limits: res("2")}},                                 // 2 CPU, alone
			{Name: "sidecar", RestartPolicy: &always, Resources: corev1.ResourceRequirements{Requests: res("300m")}}, // runs alongside
		},
		Containers: []corev1.Container{
			{Name: "app", Resources: corev1.ResourceRequirements{Limits: res("500m")}},
			{Name: "log", Resources: corev1.ResourceRequirements{Requests: res("100m"), Limits: res("1")}},
		},
	}}
	// Running: 500m + 100m + sidecar 300m = 900m; the init container
	// alone needs 2 CPU, more.
	if got := TemplateRequests(tmpl); got.MilliCPU != 2000 || got.Pods != 1 {
		t.Fatalf("got %+v, want 2000m CPU and one pod", got)
	}
	tmpl.Spec.InitContainers[0].Resources.Limits = res("100m")
	if got := TemplateRequests(tmpl); got.MilliCPU != 900 {
		t.Fatalf("got %dm CPU, want 900m (app's limit 500m, log 100m, sidecar 300m)", got.MilliCPU)
	}
	if tmpl.Spec.Containers[0].Resources.Requests != nil {
		t.Fatal("TemplateRequests changed the template")
	}
	// Pod-level resources: the pod's limit stands for its missing
	// request, which is what the scheduler counts.
	tmpl.Spec.Resources = &corev1.ResourceRequirements{Limits: res("4")}
	if got := TemplateRequests(tmpl); got.MilliCPU != 4000 {
		t.Fatalf("got %dm CPU, want the pod-level limit's 4000m", got.MilliCPU)
	}
	if tmpl.Spec.Resources.Requests != nil {
		t.Fatal("TemplateRequests changed the template's pod-level resources")
	}
}

// TestAllowedTopologies: a claim not bound yet goes where its
// StorageClass's allowedTopologies let the volume be made; a first member
// sent elsewhere could never bind.
func TestAllowedTopologies(t *testing.T) {
	class := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: "gp3-b"}, Provisioner: "ebs.csi.aws.com",
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
		AllowedTopologies: []corev1.TopologySelectorTerm{{MatchLabelExpressions: []corev1.TopologySelectorLabelRequirement{{Key: corev1.LabelTopologyZone, Values: []string{"b"}}}}}}
	pvc := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: "data"}, Spec: corev1.PersistentVolumeClaimSpec{
		AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To("gp3-b")}}
	pod := gatedPod(podOf("p", "", nil, "data"))
	g := fakeGatherer(t, class, pvc, pod)
	for name, zone := range map[string]string{"n1": "a", "n2": "b", "n3": "a"} {
		g.Cluster.setNode(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{corev1.LabelTopologyZone: zone}},
			Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")},
				Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}})
	}
	in, _, err := g.Input(context.Background(), pod)
	if err != nil {
		t.Fatal(err)
	}
	var d placement.Decision
	g.Cluster.View(func(nodes placement.Nodes) { in.Nodes = nodes; d = placement.Decide(in) })
	if d.Action != placement.PinCandidates || len(d.Nodes) != 1 || d.Nodes[0] != "n2" {
		t.Fatalf("got %s %v (%s), want candidates [n2], the only node in zone b", d.Action, d.Nodes, d.Message)
	}
}

// TestStaleAttachmentOf: the Huddle's record of a volume released from a
// deleted node holds its pods until the recorded time, then nothing.
func TestStaleAttachmentOf(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationStaleAttachment: "n1 2026-01-01T00:01:00Z"}}}
	if s := staleAttachmentOf(h, now); s == nil || s.Node != "n1" || !s.Until.Equal(now.Add(time.Minute)) {
		t.Fatalf("before the time: %+v, want n1 until 00:01", s)
	}
	if s := staleAttachmentOf(h, now.Add(time.Minute)); s != nil {
		t.Fatalf("at the time: %+v, want none", s)
	}
	h.Annotations[AnnotationStaleAttachment] = "n1 soon"
	if s := staleAttachmentOf(h, now); s != nil {
		t.Fatalf("unreadable record: %+v, want none", s)
	}
}
