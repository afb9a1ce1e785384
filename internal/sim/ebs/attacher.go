package ebs

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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
// VolumeAttachments it handles and on their PersistentVolumes
// ("external-attacher/" + driver, dots replaced).
const attachFinalizer = "external-attacher/ebs-csi-aws-com"

// ZoneLabel is the topology label the driver reports and puts in PV node
// affinity.
const ZoneLabel = corev1.LabelTopologyZone

// byVolume indexes VolumeAttachments by the PersistentVolume they attach.
const byVolume = "ebs-attacher-pv"

// Attacher processes VolumeAttachments for DriverName as the CSI
// external-attacher does, and removes its finalizer from deleted
// PersistentVolumes that no VolumeAttachment uses any more. VolumeAttachments
// are queued by name, PersistentVolumes as "pv:name".
type Attacher struct {
	client  kubernetes.Interface
	cloud   *Cloud
	vas     storagelisters.VolumeAttachmentLister
	vasByPV cache.Indexer
	pvs     corelisters.PersistentVolumeLister
	nodes   corelisters.NodeLister
	queue   workqueue.TypedRateLimitingInterface[string]
}

// NewAttacher wires an attacher to the informers of factory.
func NewAttacher(client kubernetes.Interface, cloud *Cloud, factory informers.SharedInformerFactory) *Attacher {
	vaInformer := factory.Storage().V1().VolumeAttachments().Informer()
	_ = vaInformer.AddIndexers(cache.Indexers{byVolume: func(obj any) ([]string, error) {
		if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.Source.PersistentVolumeName != nil {
			return []string{*va.Spec.Source.PersistentVolumeName}, nil
		}
		return nil, nil
	}})
	a := &Attacher{
		client:  client,
		cloud:   cloud,
		vas:     factory.Storage().V1().VolumeAttachments().Lister(),
		vasByPV: vaInformer.GetIndexer(),
		pvs:     factory.Core().V1().PersistentVolumes().Lister(),
		nodes:   factory.Core().V1().Nodes().Lister(),
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
	_, _ = vaInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		// A VolumeAttachment gone may free its PV's finalizer.
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if va, ok := obj.(*storagev1.VolumeAttachment); ok && va.Spec.Attacher == DriverName && va.Spec.Source.PersistentVolumeName != nil {
				a.queue.Add("pv:" + *va.Spec.Source.PersistentVolumeName)
			}
		},
	})
	enqueuePV := func(obj any) {
		if pv, ok := obj.(*corev1.PersistentVolume); ok && pv.DeletionTimestamp != nil && slices.Contains(pv.Finalizers, attachFinalizer) {
			a.queue.Add("pv:" + pv.Name)
		}
	}
	_, _ = factory.Core().V1().PersistentVolumes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueuePV,
		UpdateFunc: func(_, obj any) { enqueuePV(obj) },
	})
	factory.Core().V1().Nodes().Informer()
	return a
}

// Run processes VolumeAttachments with workers goroutines until ctx ends.
// Like the external-attacher's, a worker waits for the cloud's attach or
// detach to finish (the driver's ControllerPublishVolume returns once
// the volume is attached), so workers bound the attaches in flight.
func (a *Attacher) Run(ctx context.Context, workers int) {
	defer a.queue.ShutDown()
	for range workers {
		go wait.UntilWithContext(ctx, a.worker, time.Second)
	}
	<-ctx.Done()
}

func (a *Attacher) worker(ctx context.Context) {
	for {
		key, quit := a.queue.Get()
		if quit {
			return
		}
		var err error
		if name, ok := strings.CutPrefix(key, "pv:"); ok {
			err = a.syncVolume(ctx, name)
		} else {
			err = a.sync(ctx, key)
		}
		if err != nil {
			klog.FromContext(ctx).V(2).Info("VolumeAttachment sync failed, retrying", "key", key, "err", err)
			a.queue.AddRateLimited(key)
		} else {
			a.queue.Forget(key)
		}
		a.queue.Done(key)
	}
}

// sync attaches or detaches one VolumeAttachment with the API calls the
// external-attacher makes (csi_handler.go): a finalizer on the PV and on
// the VolumeAttachment, then the attach, then status; merge patches, so
// a cache a moment behind costs no conflict and no retry.
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
	// As the external-attacher, check what can be checked before the
	// VolumeAttachment's finalizer, which would hold up its deletion.
	volumeID, node, err := a.resolve(ctx, va)
	if err == nil && !slices.Contains(va.Finalizers, attachFinalizer) {
		err = a.patch(ctx, va.Name, map[string]any{"metadata": map[string]any{"finalizers": append(slices.Clone(va.Finalizers), attachFinalizer)}})
	}
	if err == nil {
		err = a.cloud.AttachVolume(ctx, volumeID, node.Name, node.Labels[ZoneLabel])
	}
	if err != nil {
		msg := fmt.Sprintf("rpc error: code = Internal desc = Could not attach volume %q to node %q: %v", volumeID, va.Spec.NodeName, err)
		status := map[string]any{"status": map[string]any{"attached": false, "attachError": storagev1.VolumeError{Time: metav1.Now(), Message: msg}}}
		if perr := a.patch(ctx, va.Name, status, "status"); perr != nil && !apierrors.IsNotFound(perr) {
			utilruntime.HandleErrorWithContext(ctx, perr, "Record attach error", "volumeAttachment", name)
		}
		return err
	}
	return a.patch(ctx, va.Name, map[string]any{"status": map[string]any{
		"attached": true, "attachError": nil, "attachmentMetadata": map[string]string{"devicePath": "/dev/xvdba"},
	}}, "status")
}

// detach detaches the volume, then, as the external-attacher's
// markAsDetached, removes the finalizer first (a deleted VolumeAttachment
// without it is detached whatever its status says) and then marks it
// detached, which finds it gone once the finalizer was the last.
func (a *Attacher) detach(ctx context.Context, va *storagev1.VolumeAttachment) error {
	if !slices.Contains(va.Finalizers, attachFinalizer) {
		return nil
	}
	// A VolumeAttachment whose PV is gone has nothing left to detach.
	if volumeID, err := a.volumeID(va); err == nil {
		if err := a.cloud.DetachVolume(ctx, volumeID, va.Spec.NodeName); err != nil {
			status := map[string]any{"status": map[string]any{"detachError": storagev1.VolumeError{Time: metav1.Now(), Message: err.Error()}}}
			_ = a.patch(ctx, va.Name, status, "status")
			return err
		}
	}
	rest := slices.DeleteFunc(slices.Clone(va.Finalizers), func(f string) bool { return f == attachFinalizer })
	if err := a.patch(ctx, va.Name, map[string]any{"metadata": map[string]any{"finalizers": rest}}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	err := a.patch(ctx, va.Name, map[string]any{"status": map[string]any{"attached": false, "detachError": nil, "attachmentMetadata": nil}}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// syncVolume removes the attacher's finalizer from a deleted
// PersistentVolume once no VolumeAttachment names it.
func (a *Attacher) syncVolume(ctx context.Context, name string) error {
	pv, err := a.pvs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pv.DeletionTimestamp == nil || !slices.Contains(pv.Finalizers, attachFinalizer) {
		return nil
	}
	if users, err := a.vasByPV.ByIndex(byVolume, name); err != nil || len(users) > 0 {
		return err // the VolumeAttachment's deletion queues the PV again
	}
	// Each copy, last first so the indices hold; the tests make a patch
	// from a stale cache fail rather than remove another finalizer.
	var ops []map[string]any
	for i := len(pv.Finalizers) - 1; i >= 0; i-- {
		if pv.Finalizers[i] == attachFinalizer {
			path := fmt.Sprintf("/metadata/finalizers/%d", i)
			ops = append(ops, map[string]any{"op": "test", "path": path, "value": attachFinalizer}, map[string]any{"op": "remove", "path": path})
		}
	}
	patch, _ := json.Marshal(ops)
	_, err = a.client.CoreV1().PersistentVolumes().Patch(ctx, name, types.JSONPatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// patch merge-patches a VolumeAttachment (or one of its subresources).
func (a *Attacher) patch(ctx context.Context, name string, change map[string]any, subresources ...string) error {
	data, err := json.Marshal(change)
	if err != nil {
		return err
	}
	_, err = a.client.StorageV1().VolumeAttachments().Patch(ctx, name, types.MergePatchType, data, metav1.PatchOptions{}, subresources...)
	return err
}

// resolve finds the EBS volume and the node of a VolumeAttachment, and
// puts the attacher's finalizer on the PersistentVolume first, as the
// external-attacher does, so the PV outlives its attachments.
func (a *Attacher) resolve(ctx context.Context, va *storagev1.VolumeAttachment) (string, *corev1.Node, error) {
	if name := va.Spec.Source.PersistentVolumeName; name != nil {
		pv, err := a.pvs.Get(*name)
		if err != nil {
			return "", nil, fmt.Errorf("persistent volume %q: %w", *name, err)
		}
		if pv.DeletionTimestamp != nil {
			return "", nil, fmt.Errorf("PersistentVolume %q is marked for deletion", pv.Name)
		}
		if !slices.Contains(pv.Finalizers, attachFinalizer) {
			op := map[string]any{"op": "add", "path": "/metadata/finalizers/-", "value": attachFinalizer}
			if len(pv.Finalizers) == 0 {
				op = map[string]any{"op": "add", "path": "/metadata/finalizers", "value": []string{attachFinalizer}}
			}
			patch, _ := json.Marshal([]map[string]any{op})
			if _, err := a.client.CoreV1().PersistentVolumes().Patch(ctx, pv.Name, types.JSONPatchType, patch, metav1.PatchOptions{}); err != nil {
				return "", nil, fmt.Errorf("could not add PersistentVolume finalizer: %w", err)
			}
		}
	}
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
