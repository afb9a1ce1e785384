package ebs

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"
)

// attachFixture is a PV of an existing EBS volume, a node in its zone,
// and the VolumeAttachments asked for, with a running attacher's caches.
type attachFixture struct {
	ctx    context.Context
	client *fake.Clientset
	cloud  *Cloud
	a      *Attacher
}

func newAttachFixture(t *testing.T, attach time.Duration, volumes int) *attachFixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cloud := NewCloud(testProfile(attach, time.Millisecond), 1)
	objs := []runtime.Object{&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-1", Labels: map[string]string{ZoneLabel: "us-east-1a"}}}}
	for i := range volumes {
		id := fmt.Sprintf("vol-%017x", i+1)
		if err := cloud.AddExistingVolume(id, "us-east-1a", 1); err != nil {
			t.Fatal(err)
		}
		pv := fmt.Sprintf("pv-%d", i)
		objs = append(objs,
			&corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: pv, Finalizers: []string{"kubernetes.io/pv-protection"}},
				Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{
					CSI: &corev1.CSIPersistentVolumeSource{Driver: DriverName, VolumeHandle: id},
				}},
			},
			&storagev1.VolumeAttachment{
				ObjectMeta: metav1.ObjectMeta{Name: "va-" + pv},
				Spec: storagev1.VolumeAttachmentSpec{
					Attacher: DriverName, NodeName: "node-1",
					Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To(pv)},
				},
			})
	}
	client := fake.NewClientset(objs...)
	factory := informers.NewSharedInformerFactory(client, 0)
	a := NewAttacher(client, cloud, factory)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return &attachFixture{ctx: ctx, client: client, cloud: cloud, a: a}
}

// writes lists the fake client's writes since it was last reset.
func (f *attachFixture) writes() []string {
	var w []string
	for _, act := range f.client.Actions() {
		if act.GetVerb() == "list" || act.GetVerb() == "watch" {
			continue
		}
		s := act.GetVerb() + " " + act.GetResource().Resource
		if sub := act.GetSubresource(); sub != "" {
			s += "/" + sub
		}
		w = append(w, s)
	}
	f.client.ClearActions()
	return w
}

// eventually waits until the attacher's caches satisfy ok.
func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestAttacherCallsAsExternalAttacher: an attach makes the
// external-attacher's three writes (finalizer on the PV, on the
// VolumeAttachment, status) and no reads; a detach its two (finalizer
// off, status); the PV keeps the finalizer until no VolumeAttachment
// names it. The sidecar's 20 requests a second are spent as on EKS.
func TestAttacherCallsAsExternalAttacher(t *testing.T) {
	f := newAttachFixture(t, time.Millisecond, 1)
	f.writes()
	if err := f.a.sync(f.ctx, "va-pv-0"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.writes(), []string{"patch persistentvolumes", "patch volumeattachments", "patch volumeattachments/status"}; !slices.Equal(got, want) {
		t.Errorf("attach wrote %q, want %q", got, want)
	}
	va, err := f.client.StorageV1().VolumeAttachments().Get(f.ctx, "va-pv-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !va.Status.Attached || !slices.Contains(va.Finalizers, attachFinalizer) {
		t.Fatalf("VolumeAttachment after attach: attached %v, finalizers %q", va.Status.Attached, va.Finalizers)
	}
	pv, err := f.client.CoreV1().PersistentVolumes().Get(f.ctx, "pv-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"kubernetes.io/pv-protection", attachFinalizer}; !slices.Equal(pv.Finalizers, want) {
		t.Fatalf("PV finalizers %q, want %q", pv.Finalizers, want)
	}
	if v, _ := f.cloud.Describe("vol-00000000000000001"); v.State != InUse || v.Instance != "node-1" {
		t.Fatalf("volume %s on %q after attach, want in-use on node-1", v.State, v.Instance)
	}

	// The PV is deleted while its VolumeAttachment is still there: the
	// finalizer stays.
	pv.DeletionTimestamp = ptr.To(metav1.Now())
	if _, err := f.client.CoreV1().PersistentVolumes().Update(f.ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	va.DeletionTimestamp = ptr.To(metav1.Now())
	if _, err := f.client.StorageV1().VolumeAttachments().Update(f.ctx, va, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deletions in the caches", func() bool {
		pv, _ := f.a.pvs.Get("pv-0")
		va, _ := f.a.vas.Get("va-pv-0")
		return pv != nil && pv.DeletionTimestamp != nil && va != nil && va.DeletionTimestamp != nil
	})
	f.writes()
	if err := f.a.syncVolume(f.ctx, "pv-0"); err != nil {
		t.Fatal(err)
	}
	if got := f.writes(); len(got) > 0 {
		t.Errorf("PV sync while a VolumeAttachment names it wrote %q, want nothing", got)
	}

	if err := f.a.sync(f.ctx, "va-pv-0"); err != nil {
		t.Fatal(err)
	}
	if got, want := f.writes(), []string{"patch volumeattachments", "patch volumeattachments/status"}; !slices.Equal(got, want) {
		t.Errorf("detach wrote %q, want %q", got, want)
	}
	if v, _ := f.cloud.Describe("vol-00000000000000001"); v.State != Available {
		t.Fatalf("volume %s after detach, want available", v.State)
	}
	if err := f.client.StorageV1().VolumeAttachments().Delete(f.ctx, "va-pv-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the VolumeAttachment gone from the cache", func() bool { _, err := f.a.vas.Get("va-pv-0"); return err != nil })
	if err := f.a.syncVolume(f.ctx, "pv-0"); err != nil {
		t.Fatal(err)
	}
	pv, err = f.client.CoreV1().PersistentVolumes().Get(f.ctx, "pv-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"kubernetes.io/pv-protection"}; !slices.Equal(pv.Finalizers, want) {
		t.Errorf("PV finalizers once no VolumeAttachment names it: %q, want %q", pv.Finalizers, want)
	}
}

// TestAttacherRefusesDeletedVolume: a PV being deleted is not attached,
// and its VolumeAttachment gets no finalizer that would hold it up.
func TestAttacherRefusesDeletedVolume(t *testing.T) {
	f := newAttachFixture(t, time.Millisecond, 1)
	pv, _ := f.a.pvs.Get("pv-0")
	pv = pv.DeepCopy()
	pv.DeletionTimestamp = ptr.To(metav1.Now())
	if _, err := f.client.CoreV1().PersistentVolumes().Update(f.ctx, pv, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the deletion in the cache", func() bool { pv, _ := f.a.pvs.Get("pv-0"); return pv.DeletionTimestamp != nil })
	if err := f.a.sync(f.ctx, "va-pv-0"); err == nil {
		t.Fatal("attach of a PV being deleted: no error")
	}
	va, err := f.client.StorageV1().VolumeAttachments().Get(f.ctx, "va-pv-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if va.Status.Attached || va.Status.AttachError == nil || len(va.Finalizers) > 0 {
		t.Errorf("VolumeAttachment of a PV being deleted: attached %v, error %v, finalizers %q; want not attached, an error, no finalizer", va.Status.Attached, va.Status.AttachError, va.Finalizers)
	}
}

// TestAttachesRunConcurrently: each worker waits out its attach, as the
// external-attacher's do, but the workers wait together (no lock around
// the cloud's latency): 40 attaches of 500 ms on 40 workers take about
// 500 ms, not 20 s.
func TestAttachesRunConcurrently(t *testing.T) {
	const n = 40
	f := newAttachFixture(t, 500*time.Millisecond, n)
	start := time.Now()
	go f.a.Run(f.ctx, n)
	eventually(t, "every volume in use", func() bool {
		for i := range n {
			if v, _ := f.cloud.Describe(fmt.Sprintf("vol-%017x", i+1)); v.State != InUse {
				return false
			}
		}
		return true
	})
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("%d attaches of 500 ms on %d workers took %s, want about 500 ms", n, n, took)
	}
}
