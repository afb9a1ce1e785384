package controller

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// BenchmarkClaimMemory measures the heap huddle's caches retain for each
// ReadWriteOnce claim in use with --cluster-wide: the claim, its
// PersistentVolume, its VolumeAttachment and its Huddle (realistic EBS
// objects, each decoded from its own JSON), with managedFields stripped
// (as huddle cached them before) and through the trims, and, scaled, the
// MiB at 50,000 claims (issue 10's cluster-wide size). Their pods run on
// 500 nodes; the pods themselves are in BenchmarkCacheMemory.
//
//	go test -run '^$' -bench ClaimMemory -benchtime 1x ./internal/controller/
func BenchmarkClaimMemory(b *testing.B) {
	const claims = 5000
	strip := cache.TransformStripManagedFields()
	for _, tc := range []struct {
		name string
		// trimmed says whether the objects go through huddle's trims
		// (of Huddles only the strings they repeat are shared).
		trimmed bool
	}{{"strip-managed-fields", false}, {"trim", true}} {
		b.Run(tc.name, func(b *testing.B) {
			for b.Loop() {
				var total float64
				for _, kind := range []struct {
					name string
					obj  any
					trim toolscache.TransformFunc
				}{
					{"claim", realisticClaim(), TrimClaim},
					{"volume", realisticVolume(), TrimVolume},
					{"attachment", realisticAttachment(), TrimAttachment},
					{"huddle", realisticHuddle(), ShareHuddle},
				} {
					per := retained(b, claims, func(i int) any {
						var obj any
						name := fmt.Sprintf("data-%d", i)
						switch o := kind.obj.(type) {
						case *corev1.PersistentVolumeClaim:
							obj = decode[corev1.PersistentVolumeClaim](b, o, name)
						case *corev1.PersistentVolume:
							obj = decode[corev1.PersistentVolume](b, o, name)
						case *storagev1.VolumeAttachment:
							a := decode[storagev1.VolumeAttachment](b, o, name)
							a.Spec.NodeName = benchNode(i)
							obj = a
						case *huddlev1.Huddle:
							h := decode[huddlev1.Huddle](b, o, name)
							home := benchNode(i)
							h.Status.Home, h.Status.Members[0].Node = home, home
							h.Status.Members[0].Pod = fmt.Sprintf("web-%d", i)
							// Owned by its own claim; messages as status.go
							// words them.
							h.OwnerReferences[0].Name, h.OwnerReferences[0].UID = name, types.UID("uid-claim-"+name)
							h.Status.Conditions[0].Message = fmt.Sprintf("All 1 pods that mount claim %s/%s run on %s.", gatherNS, name, home)
							h.Status.Conditions[1].Message = fmt.Sprintf("The whole huddle (cpu 500m, memory 1Gi) fits on %s.", home)
							obj = h
						}
						if tc.trimmed {
							return must(kind.trim(obj))
						}
						return must(strip(obj))
					})
					b.ReportMetric(per, "B/"+kind.name)
					total += per
				}
				b.ReportMetric(total*50000/(1<<20), "MiB@50k-claims")
			}
		})
	}
}

// benchNode is the node of the i-th claim's pod: one of 500, named as
// on EKS, each name its own string as decoded from the wire.
func benchNode(i int) string {
	return fmt.Sprintf("ip-10-0-%d-%d.eu-west-1.compute.internal", i%500/250, i%250)
}

var (
	benchTime = metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	benchMF   = []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsType: "FieldsV1",
		FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:pv.kubernetes.io/bind-completed":{}}},"f:spec":{"f:volumeName":{}},"f:status":{"f:phase":{}}}`)}}}
)

// realisticClaim is a bound gp3 claim provisioned by the EBS CSI driver,
// as the API server stores it.
func realisticClaim() *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: "data", UID: "uid-data", ResourceVersion: "12345", CreationTimestamp: benchTime,
			Labels: map[string]string{"app": "sentry"},
			Annotations: map[string]string{
				"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes",
				"volume.beta.kubernetes.io/storage-provisioner": "ebs.csi.aws.com", "volume.kubernetes.io/storage-provisioner": "ebs.csi.aws.com",
				"volume.kubernetes.io/selected-node": "ip-10-0-1-12.eu-west-1.compute.internal",
			},
			Finalizers: []string{"kubernetes.io/pvc-protection"}, ManagedFields: benchMF},
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}},
			StorageClassName: ptr.To("gp3"), VolumeMode: ptr.To(corev1.PersistentVolumeFilesystem), VolumeName: "pvc-0d6f5c8e-3b1a-4f2e-9c7d-8a6b5e4f3c2d"},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimBound, AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}},
	}
}

// realisticVolume is the EBS volume of realisticClaim.
func realisticVolume() *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "pvc-0d6f5c8e-3b1a-4f2e-9c7d-8a6b5e4f3c2d", UID: "uid-pv", ResourceVersion: "12346", CreationTimestamp: benchTime,
			Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": "ebs.csi.aws.com", "volume.kubernetes.io/provisioner-deletion-secret-name": "", "volume.kubernetes.io/provisioner-deletion-secret-namespace": ""},
			Finalizers:  []string{"external-provisioner.volume.kubernetes.io/finalizer", "kubernetes.io/pv-protection", "external-attacher/ebs-csi-aws-com"}, ManagedFields: benchMF},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-0123456789abcdef0", FSType: "ext4",
				VolumeAttributes: map[string]string{"storage.kubernetes.io/csiProvisionerIdentity": "1767225600000-8081-ebs.csi.aws.com"}}},
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: gatherNS, Name: "data", UID: "uid-data", APIVersion: "v1", ResourceVersion: "12340"},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete, StorageClassName: "gp3", VolumeMode: ptr.To(corev1.PersistentVolumeFilesystem),
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: "topology.kubernetes.io/zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"eu-west-1a"}}}}}}},
		},
		Status: corev1.PersistentVolumeStatus{Phase: corev1.VolumeBound, LastPhaseTransitionTime: &benchTime},
	}
}

// realisticAttachment is the attachment of realisticVolume to its node.
func realisticAttachment() *storagev1.VolumeAttachment {
	return &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "csi-3f0c9e7d2b1a4c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e", UID: "uid-va", ResourceVersion: "12350", CreationTimestamp: benchTime,
			Annotations: map[string]string{"csi.alpha.kubernetes.io/node-id": "i-0123456789abcdef0"}, Finalizers: []string{"external-attacher/ebs-csi-aws-com"}, ManagedFields: benchMF},
		Spec: storagev1.VolumeAttachmentSpec{Attacher: "ebs.csi.aws.com", NodeName: "ip-10-0-1-12.eu-west-1.compute.internal",
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To("pvc-0d6f5c8e-3b1a-4f2e-9c7d-8a6b5e4f3c2d")}},
		Status: storagev1.VolumeAttachmentStatus{Attached: true, AttachmentMetadata: map[string]string{"devicePath": "/dev/xvdaa"}},
	}
}

// realisticHuddle is the Huddle of realisticClaim with one member
// running at home, as huddle's status controller writes it.
func realisticHuddle() *huddlev1.Huddle {
	return &huddlev1.Huddle{
		ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: "data", UID: "uid-huddle", ResourceVersion: "12360", CreationTimestamp: benchTime, Generation: 1,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "PersistentVolumeClaim", Name: "data", UID: "uid-data", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields:   benchMF},
		Status: huddlev1.HuddleStatus{ObservedGeneration: 1, Home: "ip-10-0-1-12.eu-west-1.compute.internal", Phase: huddlev1.PhaseHuddled,
			Members:     []huddlev1.Member{{Pod: "web-7c9f8d6b5-x2x4z", Node: "ip-10-0-1-12.eu-west-1.compute.internal", Phase: corev1.PodRunning, Ready: true}},
			MemberCount: 1, ReadyCount: 1,
			Demand: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m"), corev1.ResourceMemory: resource.MustParse("1Gi")},
			Conditions: []metav1.Condition{
				{Type: huddlev1.ConditionHuddled, Status: metav1.ConditionTrue, Reason: "Huddled", Message: "All 1 members run on ip-10-0-1-12.eu-west-1.compute.internal.", ObservedGeneration: 1, LastTransitionTime: benchTime},
				{Type: huddlev1.ConditionFits, Status: metav1.ConditionTrue, Reason: "Fits", Message: "The whole huddle (cpu 500m, memory 1Gi) fits on ip-10-0-1-12.eu-west-1.compute.internal.", ObservedGeneration: 1, LastTransitionTime: benchTime},
				{Type: huddlev1.ConditionMoving, Status: metav1.ConditionFalse, Reason: "NotMoving", Message: "The huddle is not moving.", ObservedGeneration: 1, LastTransitionTime: benchTime},
			}},
	}
}
