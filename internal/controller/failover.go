package controller

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;update
// +kubebuilder:rbac:groups="",resources=pods,verbs=delete
// +kubebuilder:rbac:groups=storage.k8s.io,resources=volumeattachments,verbs=delete

// Taints and annotations of failover.
const (
	// TaintShutdown is the cloud node lifecycle controller's mark of a
	// stopped instance.
	TaintShutdown = "node.cloudprovider.kubernetes.io/shutdown"
	// outOfServiceValue is the value huddle gives the out-of-service taint.
	outOfServiceValue = "nodeshutdown"
	// AnnotationFenced on a node records that huddle added the
	// out-of-service taint, and when; only such taints are removed.
	AnnotationFenced = "huddle.io/fenced"
	// AnnotationStaleAttachment on a Huddle records that failover removed
	// the VolumeAttachment of a deleted node, and until when the
	// attach/detach controller may still count the volume attached there:
	// "<node> <RFC3339 time>". Until then the volume's pods are held.
	AnnotationStaleAttachment = "huddle.io/stale-attachment"
)

// Fencer is failover: a node that is NotReady, that the cloud reports shut
// down, and that holds a volume of a huddle gets the out-of-service taint
// (node.kubernetes.io/out-of-service=nodeshutdown:NoExecute). With it,
// Kubernetes' non-graceful node shutdown handling deletes the node's pods
// and the attach/detach controller detaches their volumes at once instead
// of waiting for its 6-minute force detach. A node that is only
// unreachable is never fenced: it may still be writing to the disk. The
// taint is removed when the node is Ready again, and only if huddle added
// it: an out-of-service taint someone else set is theirs to remove.
//
// On a fenced node the Fencer also deletes the terminating pods itself,
// with no grace period: their kubelet is gone and will never confirm, and
// the out-of-service taint is what authorises the force deletion (the pod
// garbage collector does the same, but only every 20 seconds). Their
// volumes detach as soon as they are gone.
//
// A home whose Node object is deleted while NotReady (an instance
// terminated: the cloud node lifecycle controller deletes the Node of an
// instance that no longer exists, and Auto Scaling groups and Karpenter
// replace it) cannot be fenced: there is no Node to taint, and the
// attach/detach controller waits its full 6 minutes before it
// force-detaches a volume the node last reported in use. The Fencer
// force-deletes the node's pods that mount a huddle's claim and then
// deletes the VolumeAttachments of huddles' volumes there (the CSI
// attacher detaches, which for a terminated instance is already so); the
// attach/detach controller notices at its next state sync, and the
// volume's pods are held until then (AnnotationStaleAttachment). A Node
// deleted while Ready is left alone: its machine may be alive and
// writing (a `kubectl delete node` by hand), which is why upstream keeps
// the 6-minute wait.
type Fencer struct {
	Client   client.Client
	Recorder record.EventRecorder
	Clock    clock.Clock
	// DetachSync is kube-controller-manager's
	// --attach-detach-reconcile-sync-period: how long after a
	// VolumeAttachment is deleted the attach/detach controller may still
	// count its volume attached.
	DetachSync time.Duration

	mu sync.Mutex
	// gone are the nodes deleted while NotReady whose huddle volumes are
	// not released yet.
	gone map[string]bool
}

// Reconcile fences or unfences one node, or releases the volumes of a
// deleted one.
func (r *Fencer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err != nil {
		if apierrors.IsNotFound(err) && r.isGone(req.Name) {
			return r.releaseDeleted(ctx, req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	logger := log.FromContext(ctx)
	ready, shutdown := nodeReady(node), hasTaint(node, TaintShutdown)
	_, fenced := node.Annotations[AnnotationFenced]
	switch {
	case !ready && shutdown && hasTaint(node, corev1.TaintNodeOutOfService):
		// Fenced, by huddle or by someone else: nothing to add.
		return ctrl.Result{}, r.deleteTerminating(ctx, node)
	case fenced && ready:
		n := node.DeepCopy()
		n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool {
			return t.Key == corev1.TaintNodeOutOfService && t.Value == outOfServiceValue
		})
		delete(n.Annotations, AnnotationFenced)
		if err := r.Client.Update(ctx, n); err != nil {
			return ctrl.Result{}, ignoreConflict(err)
		}
		fences.WithLabelValues("unfence").Inc()
		r.Recorder.Event(node, corev1.EventTypeNormal, "Unfenced", "Node is Ready again: huddle removed the out-of-service taint it had added")
		logger.Info("Unfenced node", "node", node.Name)
	case !fenced && !ready && shutdown:
		huddles, err := r.huddlesOn(ctx, node.Name)
		if err != nil || len(huddles) == 0 {
			return ctrl.Result{}, err
		}
		// The out-of-service taint is absent (the case above): huddle adds
		// it, and records that it did.
		n := node.DeepCopy()
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: corev1.TaintNodeOutOfService, Value: outOfServiceValue,
			Effect: corev1.TaintEffectNoExecute, TimeAdded: &metav1.Time{Time: r.Clock.Now()}})
		metav1.SetMetaDataAnnotation(&n.ObjectMeta, AnnotationFenced, r.Clock.Now().UTC().Format(time.RFC3339))
		if err := r.Client.Update(ctx, n); err != nil {
			return ctrl.Result{}, ignoreConflict(err)
		}
		fences.WithLabelValues("fence").Inc()
		msg := fmt.Sprintf("Node %s is NotReady and the cloud reports it shut down (%s): huddle added the out-of-service taint so its pods are deleted and its volumes detach now, not after the attach/detach controller's 6-minute timeout", node.Name, TaintShutdown)
		r.Recorder.Event(node, corev1.EventTypeWarning, "Fenced", msg)
		for _, h := range huddles {
			r.Recorder.Event(h, corev1.EventTypeWarning, "HomeFenced", msg)
		}
		logger.Info("Fenced node", "node", node.Name, "huddles", len(huddles))
	}
	return ctrl.Result{}, nil
}

// deleteTerminating force-deletes the terminating pods bound to a fenced
// node. Pods that are not terminating are left to the taint eviction
// controller, which honours their tolerations of the taint; the watch of
// pods brings the node back when it marks them.
func (r *Fencer) deleteTerminating(ctx context.Context, node *corev1.Node) error {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.MatchingFields{indexPodNode: node.Name}); err != nil {
		return err
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp == nil {
			continue
		}
		err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0), client.Preconditions{UID: &p.UID})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			continue // gone already, or a new pod of the same name
		}
		if err != nil {
			return err
		}
		fences.WithLabelValues("delete-pod").Inc()
		log.FromContext(ctx).Info("Deleted a terminating pod of a fenced node", "pod", klog.KObj(p), "node", node.Name)
	}
	return nil
}

// NodeDeleted records a Node deletion seen by the watch (obj is its last
// state): a node that was NotReady is gone with its machine, and its
// huddle volumes are released; one deleted while Ready is not.
func (r *Fencer) NodeDeleted(obj client.Object) bool {
	node, ok := obj.(*corev1.Node)
	if !ok || nodeReady(node) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.gone == nil {
		r.gone = map[string]bool{}
	}
	r.gone[node.Name] = true
	return true
}

func (r *Fencer) isGone(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone[node]
}

// staleMargin is added to DetachSync for the state sync's own work.
const staleMargin = 2 * time.Second

// releaseRetry is how soon releasing a deleted node's volumes looks again
// while its pods are still being deleted.
const releaseRetry = time.Second

// releaseDeleted releases the huddle volumes of a node deleted while
// NotReady: first its pods that mount them (force-deleted, as the pod
// garbage collector would after its 40-second quarantine), then, once no
// pod there mounts a volume any more (the attach/detach controller would
// attach it again), the VolumeAttachment, after recording on the Huddle
// until when its pods wait for the attach/detach controller to notice.
func (r *Fencer) releaseDeleted(ctx context.Context, name string) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	vas := &storagev1.VolumeAttachmentList{}
	if err := r.Client.List(ctx, vas, client.MatchingFields{IndexAttachmentNode: name}); err != nil {
		return ctrl.Result{}, err
	}
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.MatchingFields{indexPodNode: name}); err != nil {
		return ctrl.Result{}, err
	}
	waiting := false
	for i := range vas.Items {
		va := &vas.Items[i]
		hud, claim, err := r.huddleOf(ctx, va)
		if err != nil {
			return ctrl.Result{}, err
		}
		if hud == nil {
			continue // not a huddle's volume: the attach/detach controller's
		}
		users, err := r.deleteUsers(ctx, pods.Items, claim)
		if err != nil {
			return ctrl.Result{}, err
		}
		if users > 0 || va.DeletionTimestamp != nil {
			// Pods still there (the cache catches up with the deletes), or
			// the attacher is detaching already.
			waiting = waiting || users > 0
			continue
		}
		until := r.Clock.Now().Add(r.DetachSync + staleMargin)
		h := hud.DeepCopy()
		metav1.SetMetaDataAnnotation(&h.ObjectMeta, AnnotationStaleAttachment, name+" "+until.UTC().Format(time.RFC3339))
		if err := r.Client.Update(ctx, h); err != nil {
			return ctrl.Result{}, ignoreConflict(err)
		}
		err = r.Client.Delete(ctx, va, client.Preconditions{UID: &va.UID})
		if err != nil && !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		fences.WithLabelValues("detach-deleted").Inc()
		msg := fmt.Sprintf("Node %s was deleted while NotReady (its instance is gone): huddle deleted its pods of this huddle and its VolumeAttachment, so the volume is released now, not after the attach/detach controller's 6-minute timeout; the pods wait until %s for the attach/detach controller to notice (its state sync)",
			name, until.UTC().Format(time.RFC3339))
		r.Recorder.Event(hud, corev1.EventTypeWarning, "HomeDeleted", msg)
		logger.Info("Released the volume of a deleted node", "node", name, "volumeAttachment", va.Name, "huddle", klog.KObj(hud))
	}
	if waiting {
		return ctrl.Result{RequeueAfter: releaseRetry}, nil
	}
	r.mu.Lock()
	delete(r.gone, name)
	r.mu.Unlock()
	return ctrl.Result{}, nil
}

// huddleOf returns the Huddle and claim of a VolumeAttachment's volume,
// nil if the volume is not a claim's or the claim has no Huddle.
func (r *Fencer) huddleOf(ctx context.Context, va *storagev1.VolumeAttachment) (*huddlev1.Huddle, client.ObjectKey, error) {
	if va.Spec.Source.PersistentVolumeName == nil {
		return nil, client.ObjectKey{}, nil
	}
	pv := &corev1.PersistentVolume{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: *va.Spec.Source.PersistentVolumeName}, pv); err != nil || pv.Spec.ClaimRef == nil {
		return nil, client.ObjectKey{}, client.IgnoreNotFound(err)
	}
	key := client.ObjectKey{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name}
	hud := &huddlev1.Huddle{}
	if err := r.Client.Get(ctx, key, hud); err != nil {
		return nil, key, client.IgnoreNotFound(err)
	}
	return hud, key, nil
}

// deleteUsers force-deletes the pods among pods that mount claim, and
// returns how many there were.
func (r *Fencer) deleteUsers(ctx context.Context, pods []corev1.Pod, claim client.ObjectKey) (int, error) {
	users := 0
	for i := range pods {
		p := &pods[i]
		if !slices.Contains(PodClaimKeys(p), claim.String()) {
			continue
		}
		users++
		err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0), client.Preconditions{UID: &p.UID})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			continue
		}
		if err != nil {
			return users, err
		}
		fences.WithLabelValues("delete-pod").Inc()
		log.FromContext(ctx).Info("Deleted a pod of a deleted node", "pod", klog.KObj(p), "node", p.Spec.NodeName)
	}
	return users, nil
}

// indexPodNode indexes pods by the node they are bound to (failover only).
const indexPodNode = "huddle.io/pod-node"

// podNode is the indexPodNode index function.
func podNode(o client.Object) []string {
	if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
		return []string{p.Spec.NodeName}
	}
	return nil
}

// nodeOfTerminatingPod maps a terminating pod to its node, which may be
// fenced and waiting for it.
func nodeOfTerminatingPod(_ context.Context, o client.Object) []reconcile.Request {
	if p, ok := o.(*corev1.Pod); ok && p.DeletionTimestamp != nil && p.Spec.NodeName != "" {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: p.Spec.NodeName}}}
	}
	return nil
}

// huddlesOn lists the Huddles whose volume is attached to node, or whose
// status says node is home.
func (r *Fencer) huddlesOn(ctx context.Context, node string) ([]*huddlev1.Huddle, error) {
	seen := map[client.ObjectKey]bool{}
	var out []*huddlev1.Huddle
	add := func(key client.ObjectKey) error {
		if seen[key] {
			return nil
		}
		seen[key] = true
		h := &huddlev1.Huddle{}
		if err := r.Client.Get(ctx, key, h); err != nil {
			return client.IgnoreNotFound(err)
		}
		out = append(out, h)
		return nil
	}
	vas := &storagev1.VolumeAttachmentList{}
	if err := r.Client.List(ctx, vas, client.MatchingFields{IndexAttachmentNode: node}); err != nil {
		return nil, err
	}
	for _, va := range vas.Items {
		if va.Spec.Source.PersistentVolumeName == nil {
			continue
		}
		pv := &corev1.PersistentVolume{}
		if err := r.Client.Get(ctx, client.ObjectKey{Name: *va.Spec.Source.PersistentVolumeName}, pv); err != nil || pv.Spec.ClaimRef == nil {
			continue
		}
		if err := add(client.ObjectKey{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name}); err != nil {
			return nil, err
		}
	}
	homes := &huddlev1.HuddleList{}
	if err := r.Client.List(ctx, homes, client.MatchingFields{IndexHuddleHome: node}); err != nil {
		return nil, err
	}
	for i := range homes.Items {
		if err := add(client.ObjectKeyFromObject(&homes.Items[i])); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func hasTaint(n *corev1.Node, key string) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == key })
}

// nodeHealthChanged passes node events that can change fencing: readiness,
// taints, huddle's annotation.
var nodeHealthChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*corev1.Node)
		n, ok2 := e.ObjectNew.(*corev1.Node)
		if !ok1 || !ok2 {
			return true
		}
		return nodeReady(o) != nodeReady(n) || !equality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints) ||
			o.Annotations[AnnotationFenced] != n.Annotations[AnnotationFenced]
	},
}

// nodeOfAttachment maps a VolumeAttachment to its node.
func nodeOfAttachment(_ context.Context, o client.Object) []reconcile.Request {
	if va, ok := o.(*storagev1.VolumeAttachment); ok {
		return []reconcile.Request{{NamespacedName: client.ObjectKey{Name: va.Spec.NodeName}}}
	}
	return nil
}
