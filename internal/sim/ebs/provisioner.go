package ebs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
)

// Annotations and finalizers shared with the PV controller, as the CSI
// external-provisioner uses them.
const (
	annStorageProvisioner = "volume.kubernetes.io/storage-provisioner"
	annSelectedNode       = "volume.kubernetes.io/selected-node"
	annProvisionedBy      = "pv.kubernetes.io/provisioned-by"
	provisionerFinalizer  = "external-provisioner.volume.kubernetes.io/finalizer"
)

// Provisioner creates and deletes EBS-backed PersistentVolumes.
type Provisioner struct {
	client   kubernetes.Interface
	cloud    *Cloud
	claims   corelisters.PersistentVolumeClaimLister
	pvs      corelisters.PersistentVolumeLister
	nodes    corelisters.NodeLister
	classes  storagelisters.StorageClassLister
	recorder record.EventRecorder
	queue    workqueue.TypedRateLimitingInterface[string]

	mu sync.Mutex
	// provisioning holds the claims whose volume is being created.
	provisioning map[types.UID]bool
}

// NewProvisioner wires a provisioner to the informers of factory. Claims
// are queued as "namespace/name", volumes as "pv:name".
func NewProvisioner(client kubernetes.Interface, cloud *Cloud, factory informers.SharedInformerFactory, recorder record.EventRecorder) *Provisioner {
	p := &Provisioner{
		client:       client,
		cloud:        cloud,
		claims:       factory.Core().V1().PersistentVolumeClaims().Lister(),
		pvs:          factory.Core().V1().PersistentVolumes().Lister(),
		nodes:        factory.Core().V1().Nodes().Lister(),
		classes:      factory.Storage().V1().StorageClasses().Lister(),
		recorder:     recorder,
		provisioning: map[types.UID]bool{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](200*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ebs-provisioner"}),
	}
	claimHandler := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			p.queue.Add(key)
		}
	}
	_, _ = factory.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    claimHandler,
		UpdateFunc: func(_, obj any) { claimHandler(obj) },
	})
	pvHandler := func(obj any) {
		if pv, ok := obj.(*corev1.PersistentVolume); ok && pv.Annotations[annProvisionedBy] == DriverName {
			p.queue.Add("pv:" + pv.Name)
		}
	}
	_, _ = factory.Core().V1().PersistentVolumes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    pvHandler,
		UpdateFunc: func(_, obj any) { pvHandler(obj) },
	})
	factory.Core().V1().Nodes().Informer()
	factory.Storage().V1().StorageClasses().Informer()
	return p
}

// Run provisions with workers goroutines until ctx ends.
func (p *Provisioner) Run(ctx context.Context, workers int) {
	defer p.queue.ShutDown()
	for range workers {
		go wait.UntilWithContext(ctx, p.worker, time.Second)
	}
	<-ctx.Done()
}

func (p *Provisioner) worker(ctx context.Context) {
	for {
		key, quit := p.queue.Get()
		if quit {
			return
		}
		var err error
		var requeue time.Duration
		if name, ok := strings.CutPrefix(key, "pv:"); ok {
			err = p.syncVolume(ctx, name)
		} else {
			requeue, err = p.syncClaim(ctx, key)
		}
		switch {
		case err != nil:
			klog.FromContext(ctx).V(2).Info("Provisioning failed, retrying", "key", key, "err", err)
			p.queue.AddRateLimited(key)
		case requeue > 0:
			p.queue.Forget(key)
			p.queue.AddAfter(key, requeue)
		default:
			p.queue.Forget(key)
		}
		p.queue.Done(key)
	}
}

// syncClaim provisions a volume for a pending claim. Like the CSI
// external-provisioner and the EBS driver, it names the volume after the
// PV ("pvc-" + claim UID) and passes a client token derived from that name
// to CreateVolume, so a retry finds the same volume instead of creating
// another; while the volume is still being created it asks to be called
// again when it is due (the driver polls DescribeVolumes).
func (p *Provisioner) syncClaim(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	claim, err := p.claims.PersistentVolumeClaims(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if claim.Spec.VolumeName != "" || claim.Status.Phase != corev1.ClaimPending || claim.Annotations[annStorageProvisioner] != DriverName {
		return 0, nil
	}
	pvName := "pvc-" + string(claim.UID)
	if _, err := p.pvs.Get(pvName); err == nil {
		return 0, nil // provisioned; the PV controller binds it
	}
	if claim.Spec.StorageClassName == nil {
		return 0, nil
	}
	class, err := p.classes.Get(*claim.Spec.StorageClassName)
	if err != nil {
		return 0, err
	}
	zone, err := p.zoneFor(claim, class)
	if err != nil || zone == "" {
		return 0, err // WaitForFirstConsumer: the scheduler has not chosen a node yet
	}
	size := claim.Spec.Resources.Requests[corev1.ResourceStorage]
	gib := max((size.Value()+(1<<30-1))>>30, 1)
	vol, err := p.cloud.CreateVolume(CreateVolumeInput{ClientToken: ClientToken(pvName), Zone: zone, SizeGiB: gib})
	if err != nil {
		p.recorder.Eventf(claim, corev1.EventTypeWarning, "ProvisioningFailed", "failed to provision volume with StorageClass %q: rpc error: code = Internal desc = Could not create volume %q: %v", class.Name, pvName, err)
		return 0, err
	}
	if vol.State == Creating {
		if !p.announced(claim.UID) {
			p.recorder.Eventf(claim, corev1.EventTypeNormal, "Provisioning", "External provisioner is provisioning volume for claim %q", key)
		}
		return max(time.Until(vol.AvailableAt), time.Millisecond), nil
	}
	fsType := class.Parameters["csi.storage.k8s.io/fstype"]
	if fsType == "" {
		fsType = "ext4"
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        pvName,
			Annotations: map[string]string{annProvisionedBy: DriverName},
			Finalizers:  []string{provisionerFinalizer},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(vol.SizeGiB<<30, resource.BinarySI)},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    claim.Spec.VolumeMode,
			MountOptions:                  class.MountOptions,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:           DriverName,
				VolumeHandle:     vol.ID,
				FSType:           fsType,
				VolumeAttributes: map[string]string{"storage.kubernetes.io/csiProvisionerIdentity": "huddle-sim-" + DriverName},
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
					Key: ZoneLabel, Operator: corev1.NodeSelectorOpIn, Values: []string{zone},
				}}}},
			}},
		},
	}
	// A failed create is retried; the client token gives the retry the
	// same volume.
	if _, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		p.recorder.Eventf(claim, corev1.EventTypeWarning, "ProvisioningFailed", "failed to create PersistentVolume %s: %v", pvName, err)
		return 0, err
	}
	p.forget(claim.UID)
	p.recorder.Eventf(claim, corev1.EventTypeNormal, "ProvisioningSucceeded", "Successfully provisioned volume %s (%s in %s)", pvName, vol.ID, zone)
	return 0, nil
}

// ClientToken is the CreateVolume client token the EBS CSI driver derives
// from the CSI volume name: the hex SHA-256 of the name (EC2 allows at most
// 64 characters).
func ClientToken(volumeName string) string {
	sum := sha256.Sum256([]byte(volumeName))
	return hex.EncodeToString(sum[:])
}

// announced reports whether the Provisioning event of a claim was already
// recorded, and notes that it now is.
func (p *Provisioner) announced(uid types.UID) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.provisioning[uid] {
		return true
	}
	p.provisioning[uid] = true
	return false
}

func (p *Provisioner) forget(uid types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.provisioning, uid)
}

// zoneFor picks the availability zone of a new volume: the selected node's
// for WaitForFirstConsumer, else the first allowed topology or any node's.
func (p *Provisioner) zoneFor(claim *corev1.PersistentVolumeClaim, class *storagev1.StorageClass) (string, error) {
	if class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
		nodeName := claim.Annotations[annSelectedNode]
		if nodeName == "" {
			return "", nil
		}
		node, err := p.nodes.Get(nodeName)
		if err != nil {
			return "", fmt.Errorf("selected node %q: %w", nodeName, err)
		}
		if z := node.Labels[ZoneLabel]; z != "" {
			return z, nil
		}
		return "", fmt.Errorf("selected node %q has no %s label", nodeName, ZoneLabel)
	}
	for _, t := range class.AllowedTopologies {
		for _, e := range t.MatchLabelExpressions {
			if e.Key == ZoneLabel && len(e.Values) > 0 {
				return e.Values[0], nil
			}
		}
	}
	nodes, err := p.nodes.List(labels.Everything())
	if err != nil {
		return "", err
	}
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	for _, n := range nodes {
		if z := n.Labels[ZoneLabel]; z != "" {
			return z, nil
		}
	}
	return "", fmt.Errorf("no node has a %s label to place an Immediate volume", ZoneLabel)
}

// syncVolume deletes the EBS volume of a released PV whose reclaim policy
// is Delete, then the PV.
func (p *Provisioner) syncVolume(ctx context.Context, name string) error {
	pv, err := p.pvs.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pv.Status.Phase != corev1.VolumeReleased || pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		return nil
	}
	if pv.Spec.CSI != nil {
		if err := p.cloud.DeleteVolume(pv.Spec.CSI.VolumeHandle); err != nil {
			return err // still attached: retry after the detach
		}
	}
	if slices.Contains(pv.Finalizers, provisionerFinalizer) {
		pv = pv.DeepCopy()
		pv.Finalizers = slices.DeleteFunc(pv.Finalizers, func(f string) bool { return f == provisionerFinalizer })
		if _, err := p.client.CoreV1().PersistentVolumes().Update(ctx, pv, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	err = p.client.CoreV1().PersistentVolumes().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
