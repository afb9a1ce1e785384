package ebs

import (
	"context"
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// attachFinalizer is the finalizer the external-attacher puts on the
// VolumeAttachments it handles ("external-attacher/" + driver, dots
// replaced).
const attachFinalizer = "external-attacher/ebs-csi-aws-com"

// ZoneLabel is the topology label the driver reports and puts in PV node
// affinity.
const ZoneLabel = corev1.LabelTopologyZone

// Attacher processes VolumeAttachments for DriverName.
type Attacher struct {
	client kubernetes.Interface
	cloud  *Cloud
	vas    storagelisters.VolumeAttachmentLister
	pvs    corelisters.PersistentVolumeLister
	nodes  corelisters.NodeLister
	queue  workqueue.TypedRateLimitingInterface[string]
}

// NewAttacher wires an attacher to the informers of factory.
func NewAttacher(client kubernetes.Interface, cloud *Cloud, factory informers.SharedInformerFactory) *Attacher {
	a := &Attacher{
		client: client,
		cloud:  cloud,
		vas:    factory.Storage().V1().VolumeAttachments().Lister(),
		pvs:    factory.Core().V1().PersistentVolumes().Lister(),
		nodes:  factory.Core().V1().Nodes().Lister(),
		// The external-attacher retries failed attaches with exponential
		// backoff; keep its shape, capped lower so tests stay quick.
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ebs-attacher"}),
	}
	enqueue := func(obj any) {
		if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.Attacher == DriverName {
			a.queue.Add(va.Name)
		}
	}
	_, _ = factory.Storage().V1().VolumeAttachments().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	factory.Core().V1().PersistentVolumes().Informer()
	factory.Core().V1().Nodes().Informer()
	return a
}

// Run processes VolumeAttachments with workers goroutines until ctx ends.
func (a *Attacher) Run(ctx context.Context, workers int) {
	defer a.queue.ShutDown()
	for range workers {
		go wait.UntilWithContext(ctx, a.worker, time.Second)
	}
	<-ctx.Done()
}

func (a *Attacher) worker(ctx context.Context) {
	for {
		name, quit := a.queue.Get()
		if quit {
			return
		}
		err := a.sync(ctx, name)
		if err != nil {
			klog.FromContext(ctx).V(2).Info("VolumeAttachment sync failed, retrying", "volumeAttachment", name, "err", err)
			a.queue.AddRateLimited(name)
		} else {
			a.queue.Forget(name)
		}
		a.queue.Done(name)
	}
}

func (a *Attacher) sync(ctx context.Context, name string) error {
	va, err := a.vas.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if va.DeletionTimestamp != nil {
		return a.detach(ctx, va)
	}
	if va.Status.Attached {
		return nil
	}
	if !slices.Contains(va.Finalizers, attachFinalizer) {
		va = va.DeepCopy()
		va.Finalizers = append(va.Finalizers, attachFinalizer)
		if va, err = a.client.StorageV1().VolumeAttachments().Update(ctx, va, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	volumeID, node, err := a.resolve(va)
	if err == nil {
		err = a.cloud.AttachVolume(ctx, volumeID, node.Name, node.Labels[ZoneLabel])
	}
	va = va.DeepCopy()
	if err != nil {
		va.Status.Attached = false
		va.Status.AttachError = &storagev1.VolumeError{Time: metav1.Now(), Message: fmt.Sprintf("rpc error: code = Internal desc = Could not attach volume %q to node %q: %v", volumeID, va.Spec.NodeName, err)}
		// A conflict only means the object moved on; the retry records it.
		if _, uerr := a.client.StorageV1().VolumeAttachments().UpdateStatus(ctx, va, metav1.UpdateOptions{}); uerr != nil && !apierrors.IsConflict(uerr) {
			utilruntime.HandleErrorWithContext(ctx, uerr, "Record attach error", "volumeAttachment", name)
		}
		return err
	}
	va.Status.Attached = true
	va.Status.AttachError = nil
	va.Status.AttachmentMetadata = map[string]string{"devicePath": "/dev/xvdba"}
	_, err = a.client.StorageV1().VolumeAttachments().UpdateStatus(ctx, va, metav1.UpdateOptions{})
	return err
}

func (a *Attacher) detach(ctx context.Context, va *storagev1.VolumeAttachment) error {
	if !slices.Contains(va.Finalizers, attachFinalizer) {
		return nil
	}
	if volumeID, err := a.volumeID(va); err == nil {
		if err := a.cloud.DetachVolume(ctx, volumeID, va.Spec.NodeName); err != nil {
			va = va.DeepCopy()
			va.Status.DetachError = &storagev1.VolumeError{Time: metav1.Now(), Message: err.Error()}
			_, _ = a.client.StorageV1().VolumeAttachments().UpdateStatus(ctx, va, metav1.UpdateOptions{})
			return err
		}
	}
	// A VolumeAttachment whose PV is gone has nothing left to detach.
	fresh, err := a.client.StorageV1().VolumeAttachments().Get(ctx, va.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	fresh.Status.Attached = false
	if fresh, err = a.client.StorageV1().VolumeAttachments().UpdateStatus(ctx, fresh, metav1.UpdateOptions{}); err != nil {
		return err
	}
	fresh.Finalizers = slices.DeleteFunc(fresh.Finalizers, func(f string) bool { return f == attachFinalizer })
	_, err = a.client.StorageV1().VolumeAttachments().Update(ctx, fresh, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// resolve finds the EBS volume and the node of a VolumeAttachment.
func (a *Attacher) resolve(va *storagev1.VolumeAttachment) (string, *corev1.Node, error) {
	volumeID, err := a.volumeID(va)
	if err != nil {
		return "", nil, err
	}
	node, err := a.nodes.Get(va.Spec.NodeName)
	if err != nil {
		return volumeID, nil, fmt.Errorf("InvalidInstanceID.NotFound: instance for node %q: %w", va.Spec.NodeName, err)
	}
	return volumeID, node, nil
}

func (a *Attacher) volumeID(va *storagev1.VolumeAttachment) (string, error) {
	src := va.Spec.Source
	switch {
	case src.PersistentVolumeName != nil:
		pv, err := a.pvs.Get(*src.PersistentVolumeName)
		if err != nil {
			return "", fmt.Errorf("persistent volume %q: %w", *src.PersistentVolumeName, err)
		}
		// The external-attacher translates a migrated in-tree PV
		// (awsElasticBlockStore) to its CSI form.
		if pv, err = CSIVolume(pv); err != nil {
			return "", fmt.Errorf("persistent volume %q: %w", *src.PersistentVolumeName, err)
		}
		if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != DriverName {
			return "", fmt.Errorf("persistent volume %q is not an %s volume", pv.Name, DriverName)
		}
		return pv.Spec.CSI.VolumeHandle, nil
	case src.InlineVolumeSpec != nil && src.InlineVolumeSpec.CSI != nil:
		return src.InlineVolumeSpec.CSI.VolumeHandle, nil
	}
	return "", fmt.Errorf("VolumeAttachment %s has no persistent volume source", va.Name)
}
