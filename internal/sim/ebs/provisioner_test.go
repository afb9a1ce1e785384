package ebs

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
)

// TestProvisionerRetryGetsTheSameVolume: the provisioner passes the
// driver's client token (from the PV name) to CreateVolume, waits while the
// volume is creating, and when creating the PersistentVolume fails, the
// retry gets the same EBS volume, not a second one.
func TestProvisionerRetryGetsTheSameVolume(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	class := &storagev1.StorageClass{
		ObjectMeta:        metav1.ObjectMeta{Name: "gp3"},
		Provisioner:       DriverName,
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingWaitForFirstConsumer),
	}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{ZoneLabel: "us-east-1b"}}}
	claim := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "data", UID: "1234",
			Annotations: map[string]string{annStorageProvisioner: DriverName, annSelectedNode: "node-1"},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: ptr.To("gp3"),
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1500Mi")}},
		},
		Status: corev1.PersistentVolumeClaimStatus{Phase: corev1.ClaimPending},
	}
	client := fake.NewClientset(class, node, claim)
	failures := 1
	client.PrependReactor("create", "persistentvolumes", func(k8stesting.Action) (bool, runtime.Object, error) {
		if failures > 0 {
			failures--
			return true, nil, errors.New("etcdserver: request timed out")
		}
		return false, nil, nil
	})
	p := testProfile(time.Millisecond, time.Millisecond)
	p.ProvisionLatency = constant(50 * time.Millisecond)
	cloud := NewCloud(p, 1)
	factory := informers.NewSharedInformerFactory(client, 0)
	prov := NewProvisioner(client, cloud, factory, record.NewFakeRecorder(100))
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())

	requeue, err := prov.syncClaim(ctx, "default/data")
	if err != nil {
		t.Fatal(err)
	}
	if requeue <= 0 || requeue > 50*time.Millisecond {
		t.Fatalf("first sync asks to be called again after %s, want when the volume is due (≤ 50ms)", requeue)
	}
	time.Sleep(requeue)
	if _, err := prov.syncClaim(ctx, "default/data"); err == nil {
		t.Fatal("sync with a failing PV create: no error")
	}
	if _, err := prov.syncClaim(ctx, "default/data"); err != nil {
		t.Fatal(err)
	}
	pv, err := client.CoreV1().PersistentVolumes().Get(ctx, "pvc-1234", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cloud.volumes); n != 1 {
		t.Fatalf("%d EBS volumes after a retried provisioning, want 1", n)
	}
	v, err := cloud.CreateVolume(CreateVolumeInput{ClientToken: ClientToken("pvc-1234"), Zone: "us-east-1b", SizeGiB: 2})
	if err != nil {
		t.Fatalf("the driver's token for pvc-1234: %v", err)
	}
	if pv.Spec.CSI == nil || pv.Spec.CSI.VolumeHandle != v.ID {
		t.Fatalf("PV %s names volume %v; the token of its name gives %s", pv.Name, pv.Spec.CSI, v.ID)
	}
	if got := pv.Spec.Capacity[corev1.ResourceStorage]; got.Cmp(resource.MustParse("2Gi")) != 0 {
		t.Errorf("PV capacity %s, want 2Gi (1500Mi rounded up to whole GiB)", got.String())
	}
}
