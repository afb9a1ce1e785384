package controller

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	"github.com/huddle-io/huddle/internal/placement"
)

// +kubebuilder:rbac:groups="",resources=nodes,verbs=get;list;watch;patch
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
	// AnnotationStaleAttachment on a Huddle records that failover is
	// releasing its volume from a deleted node, "<node> <RFC3339 time>
	// releasing", or has removed the VolumeAttachment there and until when
	// the attach/detach controller may still count the volume attached,
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
// A home whose Node object is deleted after its kubelet stopped posting
// (an instance terminated: the cloud node lifecycle controller deletes
// the Node of an instance that no longer exists, and Auto Scaling groups
// and Karpenter replace it) cannot be fenced: there is no Node to taint,
// and the attach/detach controller waits its full 6 minutes before it
// force-detaches a volume the node last reported in use. The Fencer
// releases such a node's huddle volumes itself (releaseDeleted). A Node
// deleted while its kubelet still reports is left alone: its machine may
// be alive and writing (a `kubectl delete node` by hand), which is why
// upstream keeps the 6-minute wait.
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
	// gone are the nodes seen deleted while their instance was gone whose
	// release is not recorded on the Huddles yet; tries counts the
	// retries of a release waiting for pods to go.
	gone  map[string]bool
	tries map[string]int
}

// Reconcile fences or unfences one node, or releases the volumes of a
// deleted one.
func (r *Fencer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	node := &corev1.Node{}
	if err := r.Client.Get(ctx, req.NamespacedName, node); err != nil {
		if apierrors.IsNotFound(err) {
			return r.releaseDeleted(ctx, req.Name)
		}
		return ctrl.Result{}, err
	}
	r.forget(node.Name, true) // a Node of that name exists (again)
	if err := r.clearMarks(ctx, node.Name); err != nil {
		return ctrl.Result{}, err
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
		if err := patchTrimmed(ctx, r.Client, node, n); err != nil {
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
		if err := patchTrimmed(ctx, r.Client, node, n); err != nil {
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
		if err := r.forceDelete(ctx, p); err != nil {
			return err
		}
		log.FromContext(ctx).Info("Deleted a terminating pod of a fenced node", "pod", klog.KObj(p), "node", node.Name)
	}
	return nil
}

// NodeDeleted records a Node deletion seen by the watch (obj is its last
// state, stateUnknown if the watch missed the deletion and obj may be
// stale) and says whether its huddle volumes are to be released: only if
// that state shows the machine gone (instanceGone). A Node deleted while
// its kubelet still reported is left alone, and so is one whose last
// state is not known.
func (r *Fencer) NodeDeleted(obj client.Object, stateUnknown bool) bool {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if stateUnknown || !instanceGone(node) {
		delete(r.gone, node.Name)
		return false
	}
	if r.gone == nil {
		r.gone = map[string]bool{}
	}
	r.gone[node.Name] = true
	return true
}

// instanceGone says whether a Node's state shows its machine stopped: the
// kubelet stopped posting status (Ready Unknown, as the node lifecycle
// controller marks it after the node monitor grace period), or the cloud
// reports the instance shut down. Ready False is a kubelet still alive
// and reporting, whose pods may still be writing.
func instanceGone(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionUnknown || (c.Status != corev1.ConditionTrue && hasTaint(n, TaintShutdown))
		}
	}
	return false
}

func (r *Fencer) isGone(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gone[node]
}

// forget drops what the Fencer remembers of a node: its deletion (a Node
// of that name exists again, or the deletion is recorded on the Huddles)
// and, with retries, how often its release was retried.
func (r *Fencer) forget(node string, retries bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.gone, node)
	if retries {
		delete(r.tries, node)
	}
}

// retry is how soon to look again at a node whose pods are still being
// deleted: releaseRetry, doubling with each try up to releaseRetryMax
// (a pod held by a finalizer may never go).
func (r *Fencer) retry(node string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.tries == nil {
		r.tries = map[string]int{}
	}
	r.tries[node]++
	return min(releaseRetry<<min(r.tries[node]-1, 6), releaseRetryMax)
}

const (
	// staleMargin is added to DetachSync for the state sync's own work.
	staleMargin = 2 * time.Second
	// releaseRetry and releaseRetryMax bound how soon releasing a deleted
	// node's volumes looks again while its pods are still being deleted.
	releaseRetry    = time.Second
	releaseRetryMax = time.Minute
	// releaseBound is how long the pods of a volume whose release has
	// begun wait at most for it: the attach/detach controller's own
	// maximum wait for unmount (6 minutes, no flag), after which it
	// force-detaches the volume by itself once the pods are gone.
	releaseBound = 6 * time.Minute
	// staleReleasing ends AnnotationStaleAttachment while the release is
	// under way.
	staleReleasing = "releasing"
)

// releaseDeleted releases the huddle volumes of a node deleted while its
// instance was gone. For each such volume it first records on the Huddle
// that the release has begun ("<node> <until> releasing", until at most
// releaseBound away), so the volume's pods are held and a restarted
// huddle carries on; then force-deletes the node's pods that mount it (as
// the pod garbage collector would after its 40-second quarantine); once
// none is left (the attach/detach controller would attach the volume
// again for them) deletes the VolumeAttachment; and once that is gone,
// records until when the attach/detach controller may still count the
// volume attached: its next state sync. Nodes that were not seen deleted
// this way and that no Huddle names are left to Kubernetes.
func (r *Fencer) releaseDeleted(ctx context.Context, name string) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	marked := &huddlev1.HuddleList{}
	if err := r.Client.List(ctx, marked, client.MatchingFields{indexStaleNode: name}); err != nil {
		return ctrl.Result{}, err
	}
	gone := r.isGone(name)
	if !gone && len(marked.Items) == 0 {
		return ctrl.Result{}, nil
	}
	vas := &storagev1.VolumeAttachmentList{}
	if err := r.Client.List(ctx, vas, client.MatchingFields{IndexAttachmentNode: name}); err != nil {
		return ctrl.Result{}, err
	}
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.MatchingFields{indexPodNode: name}); err != nil {
		return ctrl.Result{}, err
	}
	now := r.Clock.Now()
	attached := map[client.ObjectKey]bool{}
	waiting := false
	for i := range vas.Items {
		va := &vas.Items[i]
		hud, err := r.huddleOf(ctx, va)
		if err != nil {
			return ctrl.Result{}, err
		}
		if hud == nil {
			continue // not a huddle's volume: the attach/detach controller's
		}
		key := client.ObjectKeyFromObject(hud)
		attached[key] = true
		mark := parseStale(hud.Annotations[AnnotationStaleAttachment])
		switch {
		case mark == nil || mark.node != name || !now.Before(mark.until):
			// No record of this node, or one that outlived its bound
			// (the attach/detach controller's own wait is over): only a
			// deletion seen now begins a release.
			if !gone {
				continue // not ours to release
			}
			if err := r.markStale(ctx, hud, name, now.Add(releaseBound+r.DetachSync+staleMargin), true); err != nil {
				return ctrl.Result{}, err
			}
		case !mark.releasing:
			continue // released already; a VolumeAttachment seen late
		}
		users, err := r.deleteUsers(ctx, hud, pods.Items, key)
		if err != nil {
			return ctrl.Result{}, err
		}
		if users > 0 {
			waiting = true // the cache catches up with the deletes
			continue
		}
		if va.DeletionTimestamp != nil {
			continue // detaching; the watch of VolumeAttachments brings the node back
		}
		if err := r.Client.Delete(ctx, va, client.Preconditions{UID: &va.UID}); client.IgnoreNotFound(err) != nil {
			return ctrl.Result{}, err
		}
		logger.Info("Deleted the VolumeAttachment of a deleted node", "node", name, "volumeAttachment", va.Name, "huddle", klog.KObj(hud))
	}
	r.forget(name, !waiting) // the marks on the Huddles carry it on
	var again time.Duration
	for i := range marked.Items {
		hud := &marked.Items[i]
		mark := parseStale(hud.Annotations[AnnotationStaleAttachment])
		switch {
		case mark == nil || attached[client.ObjectKeyFromObject(hud)]:
		case mark.releasing && now.Before(mark.until):
			until := now.Add(r.DetachSync + staleMargin)
			if err := r.markStale(ctx, hud, name, until, false); err != nil {
				return ctrl.Result{}, err
			}
			fences.WithLabelValues("detach-deleted").Inc()
			r.Recorder.Event(hud, corev1.EventTypeWarning, "HomeDeleted", fmt.Sprintf("Node %s was deleted while its instance was gone: huddle deleted its pods of this huddle and its VolumeAttachment, so the volume is released now, not after the attach/detach controller's 6-minute timeout; the pods wait until %s for the attach/detach controller to notice (its state sync)",
				name, until.UTC().Format(time.RFC3339)))
			again = placement.Sooner(again, until.Sub(now))
		case now.Before(mark.until):
			again = placement.Sooner(again, mark.until.Sub(now))
		default:
			// Expired: the attach/detach controller has noticed.
			patch := client.MergeFrom(hud.DeepCopy())
			delete(hud.Annotations, AnnotationStaleAttachment)
			if err := r.Client.Patch(ctx, hud, patch); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, err
			}
		}
	}
	if waiting {
		return ctrl.Result{RequeueAfter: placement.Sooner(again, r.retry(name))}, nil
	}
	return ctrl.Result{RequeueAfter: again}, nil
}

// staleMark is AnnotationStaleAttachment read.
type staleMark struct {
	node      string
	until     time.Time
	releasing bool
}

func parseStale(v string) *staleMark {
	f := strings.Fields(v)
	if len(f) < 2 {
		return nil
	}
	until, err := time.Parse(time.RFC3339, f[1])
	if err != nil {
		return nil
	}
	return &staleMark{node: f[0], until: until, releasing: len(f) > 2 && f[2] == staleReleasing}
}

// markStale writes AnnotationStaleAttachment with a merge patch: no
// resourceVersion, so the status controller's writes to the same Huddle
// never make it fail with a conflict.
func (r *Fencer) markStale(ctx context.Context, hud *huddlev1.Huddle, node string, until time.Time, releasing bool) error {
	v := node + " " + until.UTC().Format(time.RFC3339)
	if releasing {
		v += " " + staleReleasing
	}
	patch := client.MergeFrom(hud.DeepCopy())
	metav1.SetMetaDataAnnotation(&hud.ObjectMeta, AnnotationStaleAttachment, v)
	return r.Client.Patch(ctx, hud, patch)
}

// clearMarks removes, from the Huddles, the records of a release from a
// deleted Node of this name, now that a Node of that name exists (again):
// its volume detaches the normal way, from a live node, and a record left
// behind would make a later deletion of this Node, even while Ready,
// release the volume under a machine that may be writing. An expired hold
// goes too.
func (r *Fencer) clearMarks(ctx context.Context, name string) error {
	marked := &huddlev1.HuddleList{}
	if err := r.Client.List(ctx, marked, client.MatchingFields{indexStaleNode: name}); err != nil {
		return err
	}
	now := r.Clock.Now()
	for i := range marked.Items {
		hud := &marked.Items[i]
		mark := parseStale(hud.Annotations[AnnotationStaleAttachment])
		if mark == nil || mark.node != name || (!mark.releasing && now.Before(mark.until)) {
			continue
		}
		patch := client.MergeFrom(hud.DeepCopy())
		delete(hud.Annotations, AnnotationStaleAttachment)
		if err := r.Client.Patch(ctx, hud, patch); client.IgnoreNotFound(err) != nil {
			return err
		}
		log.FromContext(ctx).Info("Node exists again: dropped the record of its release", "node", name, "huddle", klog.KObj(hud))
	}
	return nil
}

// RecordDeleted writes, on the Huddles whose volumes are attached to a
// Node just seen deleted with its instance gone (NodeDeleted true), the
// durable mark that their release has begun. Every replica calls it from
// its own cache's watch, leader or not: the mark is a fact any leader acts
// on (releaseDeleted), so a deletion that no leader saw is not lost when
// the next leader starts with a fresh cache (the killed leader's
// replacement, say). Best effort: the leader writes the same mark when it
// releases the volume itself.
func (r *Fencer) RecordDeleted(ctx context.Context, name string) {
	logger := log.FromContext(ctx).WithValues("node", name)
	vas := &storagev1.VolumeAttachmentList{}
	if err := r.Client.List(ctx, vas, client.MatchingFields{IndexAttachmentNode: name}); err != nil {
		logger.Error(err, "Cannot record the deleted node's attachments")
		return
	}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: name}, &corev1.Node{}); !apierrors.IsNotFound(err) {
		return // back already (or unknown): nothing to record
	}
	now := r.Clock.Now()
	until := now.Add(releaseBound + r.DetachSync + staleMargin)
	for i := range vas.Items {
		hud, err := r.huddleOf(ctx, &vas.Items[i])
		if err != nil || hud == nil {
			continue
		}
		if mark := parseStale(hud.Annotations[AnnotationStaleAttachment]); mark != nil && now.Before(mark.until) {
			// Recorded already, or another node's release or hold is
			// under way: never overwritten from here (the leader, which
			// saw this deletion too, releases it in memory). A record
			// past its bound is inert (releaseDeleted ignores it), so a
			// new deletion of a Node of the same name is recorded over
			// it.
			continue
		}
		if err := r.markStale(ctx, hud, name, until, true); err != nil {
			logger.Error(err, "Cannot record the deleted node on its huddle", "huddle", klog.KObj(hud))
		}
	}
}

// huddleOf returns the Huddle of a VolumeAttachment's volume, nil if the
// volume is not a claim's or the claim has no Huddle.
func (r *Fencer) huddleOf(ctx context.Context, va *storagev1.VolumeAttachment) (*huddlev1.Huddle, error) {
	key, ok, err := r.claimOfAttachment(ctx, va)
	if !ok || err != nil {
		return nil, err
	}
	hud := &huddlev1.Huddle{}
	if err := r.Client.Get(ctx, key, hud); err != nil {
		return nil, client.IgnoreNotFound(err)
	}
	return hud, nil
}

// claimOfAttachment returns the claim of a VolumeAttachment's volume, ok
// false if it is not a bound claim's.
func (r *Fencer) claimOfAttachment(ctx context.Context, va *storagev1.VolumeAttachment) (client.ObjectKey, bool, error) {
	if va.Spec.Source.PersistentVolumeName == nil {
		return client.ObjectKey{}, false, nil
	}
	pv := &corev1.PersistentVolume{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: *va.Spec.Source.PersistentVolumeName}, pv); err != nil || pv.Spec.ClaimRef == nil {
		return client.ObjectKey{}, false, client.IgnoreNotFound(err)
	}
	return client.ObjectKey{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name}, true, nil
}

// deleteUsers force-deletes the pods among pods that mount claim, and
// returns how many there were. A pod already deleted with no grace
// period is not deleted again: if a finalizer holds it, the Huddle gets
// a warning naming it.
func (r *Fencer) deleteUsers(ctx context.Context, hud *huddlev1.Huddle, pods []corev1.Pod, claim client.ObjectKey) (int, error) {
	users := 0
	for i := range pods {
		p := &pods[i]
		if !slices.Contains(PodClaimKeys(p), claim.String()) {
			continue
		}
		users++
		if p.DeletionGracePeriodSeconds != nil && *p.DeletionGracePeriodSeconds == 0 {
			if len(p.Finalizers) > 0 {
				r.Recorder.Event(hud, corev1.EventTypeWarning, "ReleaseBlocked", fmt.Sprintf("Pod %s of deleted node %s was deleted but its finalizers %v keep it, and the attach/detach controller keeps its volume for it: remove them, or the volume is released only after %s", p.Name, p.Spec.NodeName, p.Finalizers, releaseBound))
			}
			continue
		}
		if err := r.forceDelete(ctx, p); err != nil {
			return users, err
		}
		log.FromContext(ctx).Info("Deleted a pod of a deleted node", "pod", klog.KObj(p), "node", p.Spec.NodeName)
	}
	return users, nil
}

// forceDelete deletes a pod whose kubelet is gone with no grace period,
// and only if it is still the pod decided on (its UID).
func (r *Fencer) forceDelete(ctx context.Context, p *corev1.Pod) error {
	err := r.Client.Delete(ctx, p, client.GracePeriodSeconds(0), client.Preconditions{UID: &p.UID})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // gone already, or a new pod of the same name
	}
	if err == nil {
		fences.WithLabelValues("delete-pod").Inc()
	}
	return err
}

// indexStaleNode indexes Huddles by the node of their
// AnnotationStaleAttachment (failover only).
const indexStaleNode = "huddle.io/stale-node"

// staleNode is the indexStaleNode index function.
func staleNode(o client.Object) []string {
	if m := parseStale(o.GetAnnotations()[AnnotationStaleAttachment]); m != nil {
		return []string{m.node}
	}
	return nil
}

// nodeOfStaleHuddle maps a Huddle that records a deleted node's
// attachment to that node, so a restarted huddle carries on its release
// and clears the record once it has expired.
func nodeOfStaleHuddle(_ context.Context, o client.Object) []reconcile.Request {
	var out []reconcile.Request
	for _, n := range staleNode(o) {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: n}})
	}
	return out
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
	for i := range vas.Items {
		key, ok, err := r.claimOfAttachment(ctx, &vas.Items[i])
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if err := add(key); err != nil {
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
