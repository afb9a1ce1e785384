// Package controller holds huddle's reconcilers: the Placer, which releases
// gated pods with their node affinity narrowed to their huddle's home, and
// Status, which keeps each Huddle's status true. Both gather their inputs
// from informer caches (Gatherer, Cluster) and leave the deciding to
// package placement.
package controller

import (
	"context"
	"maps"
	"strings"
	"time"

	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

// indexGated indexes pods that carry huddle's gate; indexHeldFor gated
// pods by the node changes that can release them.
const (
	indexGated   = "huddle.io/gated"
	indexHeldFor = "huddle.io/held-for"
)

// IndexHuddleHome indexes Huddles by status.home, IndexAttachmentNode
// VolumeAttachments by node.
const (
	IndexHuddleHome     = "huddle.io/home"
	IndexAttachmentNode = "huddle.io/node"
)

// indexHomeless indexes the Huddles with members and no home: their Fits
// is judged on every node, so any node's change may change it.
const indexHomeless = "huddle.io/homeless"

// attachmentNode is the IndexAttachmentNode index function.
func attachmentNode(o client.Object) []string {
	if va, ok := o.(*storagev1.VolumeAttachment); ok {
		return []string{va.Spec.NodeName}
	}
	return nil
}

// huddleHome is the IndexHuddleHome index function.
func huddleHome(o client.Object) []string {
	if h, ok := o.(*huddlev1.Huddle); ok && h.Status.Home != "" {
		return []string{h.Status.Home}
	}
	return nil
}

// homeless is the indexHomeless index function.
func homeless(o client.Object) []string {
	if h, ok := o.(*huddlev1.Huddle); ok && h.Status.Home == "" && h.Status.MemberCount > 0 {
		return []string{"true"}
	}
	return nil
}

// Options configure the controllers.
type Options struct {
	// Recorder records the controllers' events (NewEventRecorder).
	Recorder          record.EventRecorder
	Scope             scope.Scope
	MissingClaimGrace time.Duration
	MaxCandidates     int
	// Workers is the number of concurrent reconciles per controller.
	Workers int
	// EvictionsPerSecond limits repair's evictions cluster-wide.
	EvictionsPerSecond float64
	// Failover fences shut-down home nodes with the out-of-service taint,
	// and releases the volumes of deleted ones.
	Failover bool
	// DetachSync is kube-controller-manager's
	// --attach-detach-reconcile-sync-period (see Fencer.DetachSync).
	DetachSync time.Duration
	// MaxMovesPerHour caps each huddle's moves (0: no moves).
	MaxMovesPerHour int
	// Clock is the one clock of every controller (nil: the real one).
	Clock clock.Clock
	// MoveDeadline bounds a whole move; an unfinished move is abandoned
	// after it.
	MoveDeadline time.Duration
	// UnschedulableDeadline is how long a pinned member may stay
	// Unschedulable before it is replaced (see placement.PlanStuck).
	UnschedulableDeadline time.Duration
	// RecreatingOwners are controller kinds ("group/Kind"), besides
	// ReplicaSet and StatefulSet, known to recreate the pods huddle
	// evicts; only such pods are evicted or replaced.
	RecreatingOwners []string
}

// minMoveInterval is the least time between two moves of a huddle for a
// cap of perHour moves an hour (below zero, for 0: moves are off).
func minMoveInterval(perHour int) time.Duration {
	if perHour <= 0 {
		return -1
	}
	return time.Hour / time.Duration(perHour)
}

// newKeeper makes the repair controller's reconciler from the options.
func newKeeper(c client.Client, g *Gatherer, rec record.EventRecorder, clk clock.Clock, o Options) *Keeper {
	return &Keeper{Client: c, Gatherer: g, Recorder: rec, Clock: clk,
		Evictions: rate.NewLimiter(rate.Limit(o.EvictionsPerSecond), max(1, int(o.EvictionsPerSecond*2))),
		PerHuddle: func() *rate.Limiter {
			return rate.NewLimiter(rate.Every(perHuddleEvictionEvery), perHuddleEvictionBurst)
		},
		MinMoveInterval:       minMoveInterval(o.MaxMovesPerHour),
		MoveDeadline:          o.MoveDeadline,
		UnschedulableDeadline: o.UnschedulableDeadline,
	}
}

// Per-huddle eviction limits: a burst for a split huddle, then one every
// few seconds, so a huddle that keeps splitting cannot evict in a loop.
const (
	perHuddleEvictionBurst = 10
	perHuddleEvictionEvery = 2 * time.Second
)

// Setup registers the indexes, the cluster tracker and both controllers.
func Setup(ctx context.Context, mgr ctrl.Manager, o Options) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &corev1.Pod{}, IndexPodClaims, PodClaimKeys); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, indexGated, func(o client.Object) []string {
		if p, ok := o.(*corev1.Pod); ok && placement.HasGate(p) {
			return []string{"true"}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &corev1.Pod{}, indexHeldFor, func(o client.Object) []string {
		if p, ok := o.(*corev1.Pod); ok && placement.HasGate(p) && p.Annotations[placement.AnnotationHeldFor] != "" {
			return []string{p.Annotations[placement.AnnotationHeldFor]}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &storagev1.VolumeAttachment{}, IndexAttachmentNode, attachmentNode); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &huddlev1.Huddle{}, IndexHuddleHome, huddleHome); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &huddlev1.Huddle{}, indexHomeless, homeless); err != nil {
		return err
	}
	clk := o.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	cluster := NewCluster()
	// Taken before the informers start, so no node change is missed.
	keeperNodes, statusNodes := cluster.Changes(), cluster.Changes()
	for obj, h := range map[client.Object]toolscache.ResourceEventHandler{
		&corev1.Pod{}:                 cluster.PodHandler(),
		&corev1.Node{}:                cluster.NodeHandler(),
		&storagev1.CSINode{}:          cluster.CSINodeHandler(),
		&storagev1.VolumeAttachment{}: cluster.AttachmentHandler(),
	} {
		inf, err := mgr.GetCache().GetInformer(ctx, obj)
		if err != nil {
			return err
		}
		reg, err := inf.AddEventHandler(h)
		if err != nil {
			return err
		}
		cluster.TrackSync(reg.HasSynced)
	}
	recreating, err := RecreatingOwners(o.RecreatingOwners)
	if err != nil {
		return err
	}
	g := &Gatherer{Reader: mgr.GetClient(), Scope: o.Scope, Cluster: cluster, Clock: clk, Recreating: recreating}
	workers := max(o.Workers, 1)
	m := &mapper{reader: mgr.GetClient()}

	placer := &Placer{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Gatherer: g, Recorder: o.Recorder, Clock: clk,
		MissingClaimGrace: o.MissingClaimGrace, MaxCandidates: o.MaxCandidates}
	err = ctrl.NewControllerManagedBy(mgr).Named("placement").
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(m.gatedPeers)).
		Watches(&corev1.PersistentVolumeClaim{}, handler.EnqueueRequestsFromMapFunc(m.gatedOfClaim)).
		Watches(&storagev1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(m.gatedOfAttachment)).
		Watches(&huddlev1.Huddle{}, handler.EnqueueRequestsFromMapFunc(m.gatedOfClaim)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(m.heldForNode), builder.WithPredicates(nodeSchedulingChanged)).
		WatchesRawSource(source.Channel(cluster.Detached, handler.EnqueueRequestsFromMapFunc(m.heldForNode))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(timed{"placement", afterSync{cluster: cluster, next: placer}})
	if err != nil {
		return err
	}
	keeper := newKeeper(mgr.GetClient(), g, o.Recorder, clk, o)
	err = ctrl.NewControllerManagedBy(mgr).Named("repair").
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(m.claimsOfPod)).
		Watches(&huddlev1.Huddle{}, &handler.EnqueueRequestForObject{}).
		Watches(&storagev1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(m.claimOfAttachment)).
		Watches(&corev1.Node{}, handler.EnqueueRequestsFromMapFunc(m.huddlesAt), builder.WithPredicates(nodeSchedulingChanged)).
		Watches(&policyv1.PodDisruptionBudget{}, handler.EnqueueRequestsFromMapFunc(keeper.WaitingIn)).
		WatchesRawSource(keeperNodes.Source(keeper.Waiting)).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(timed{"repair", afterSync{cluster: cluster, next: keeper}})
	if err != nil {
		return err
	}
	if o.Failover {
		if err := idx.IndexField(ctx, &corev1.Pod{}, indexPodNode, podNode); err != nil {
			return err
		}
		if err := idx.IndexField(ctx, &huddlev1.Huddle{}, indexStaleNode, staleNode); err != nil {
			return err
		}
		fencer := &Fencer{Client: mgr.GetClient(), Recorder: o.Recorder, Clock: clk, DetachSync: o.DetachSync}
		// Every replica records Node deletions as its cache sees them, not
		// only the leader's controller, in memory and on the Huddles
		// (RecordDeleted): a Node deleted while no replica leads (the
		// leader just died) is released by the next leader, whichever it
		// is, whose VolumeAttachment and Huddle watches bring the node to
		// it, instead of left to the attach/detach controller's 6-minute
		// wait.
		nodes, err := mgr.GetCache().GetInformer(ctx, &corev1.Node{})
		if err != nil {
			return err
		}
		if _, err := nodes.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
			stateUnknown := false
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj, stateUnknown = d.Obj, true
			}
			if n, ok := obj.(client.Object); ok && fencer.NodeDeleted(n, stateUnknown) {
				go fencer.RecordDeleted(ctx, n.GetName())
			}
		}}); err != nil {
			return err
		}
		err = ctrl.NewControllerManagedBy(mgr).Named("failover").
			For(&corev1.Node{}, builder.WithPredicates(nodeHealthChanged)).
			Watches(&corev1.Node{}, handler.Funcs{DeleteFunc: func(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
				if fencer.NodeDeleted(e.Object, e.DeleteStateUnknown) {
					q.Add(reconcile.Request{NamespacedName: client.ObjectKey{Name: e.Object.GetName()}})
				}
			}}).
			Watches(&storagev1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(nodeOfAttachment)).
			Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(nodeOfTerminatingPod)).
			Watches(&huddlev1.Huddle{}, handler.EnqueueRequestsFromMapFunc(nodeOfStaleHuddle)).
			Complete(timed{"failover", fencer})
		if err != nil {
			return err
		}
	}
	status := &Status{Client: mgr.GetClient(), Gatherer: g, Recorder: o.Recorder, MaxCandidates: o.MaxCandidates, Clock: clk}
	return ctrl.NewControllerManagedBy(mgr).Named("huddle-status").
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(m.claimsOfPod)).
		Watches(&corev1.PersistentVolumeClaim{}, &handler.EnqueueRequestForObject{}).
		Watches(&huddlev1.Huddle{}, &handler.EnqueueRequestForObject{}).
		Watches(&storagev1.VolumeAttachment{}, handler.EnqueueRequestsFromMapFunc(m.claimOfAttachment)).
		WatchesRawSource(statusNodes.Source(m.statusOfNodes(status.fitMayChange))).
		WithOptions(controller.Options{MaxConcurrentReconciles: workers}).
		Complete(timed{"huddle-status", afterSync{cluster: cluster, next: status}})
}

// syncPoll is how often a reconcile that came before the node tracker
// synced is retried.
const syncPoll = 100 * time.Millisecond

// afterSync holds a controller's reconciles until the node tracker has seen
// every node and pod the informers listed at start: a decision made before
// would see nodes missing or empty (a full home as free, no home at all).
type afterSync struct {
	cluster *Cluster
	next    reconcile.Reconciler
}

// Reconcile passes the request on once the tracker has synced.
func (a afterSync) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	if !a.cluster.HasSynced() {
		return reconcile.Result{RequeueAfter: syncPoll}, nil
	}
	return a.next.Reconcile(ctx, req)
}

// mapper maps watched objects to the requests of the two controllers.
type mapper struct{ reader client.Reader }

// gatedPeers: the pod itself if gated, and the gated pods that share a
// claim with it (they may follow it now).
func (m *mapper) gatedPeers(ctx context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	seen := map[types.NamespacedName]bool{}
	var out []reconcile.Request
	add := func(n types.NamespacedName) {
		if !seen[n] {
			seen[n] = true
			out = append(out, reconcile.Request{NamespacedName: n})
		}
	}
	if placement.HasGate(p) {
		add(types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	}
	for _, key := range PodClaimKeys(p) {
		for _, r := range m.gatedWith(ctx, p.Namespace, key) {
			add(r.NamespacedName)
		}
	}
	return out
}

func (m *mapper) gatedOfClaim(ctx context.Context, o client.Object) []reconcile.Request {
	return m.gatedWith(ctx, o.GetNamespace(), o.GetNamespace()+"/"+o.GetName())
}

func (m *mapper) gatedWith(ctx context.Context, namespace, claimKey string) []reconcile.Request {
	pods := &corev1.PodList{}
	if err := m.reader.List(ctx, pods, client.InNamespace(namespace), client.MatchingFields{IndexPodClaims: claimKey}, client.UnsafeDisableDeepCopy); err != nil {
		return nil
	}
	var out []reconcile.Request
	for i := range pods.Items {
		if placement.HasGate(&pods.Items[i]) {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
	}
	return out
}

// heldForNode maps a node change to the gated pods that a change of that
// node (or of any node) can release, as their huddle.io/held-for
// annotation says. Most gated pods wait for a peer, not a node: on a large
// cluster, where some node changes every second, looking at every gated
// pod on every node event was most of the placer's work.
func (m *mapper) heldForNode(ctx context.Context, o client.Object) []reconcile.Request {
	var out []reconcile.Request
	for _, key := range []string{placement.WaitsOnNode(o.GetName()), placement.WaitsOnAnyNode} {
		pods := &corev1.PodList{}
		// Only names are read: no need for the cache to copy every pod.
		if err := m.reader.List(ctx, pods, client.MatchingFields{indexHeldFor: key}, client.UnsafeDisableDeepCopy); err != nil {
			return nil
		}
		for i := range pods.Items {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&pods.Items[i])})
		}
	}
	return out
}

// claimOf finds the claim bound to the PV of a VolumeAttachment.
func (m *mapper) claimOf(ctx context.Context, o client.Object) (types.NamespacedName, bool) {
	va, ok := o.(*storagev1.VolumeAttachment)
	if !ok || va.Spec.Source.PersistentVolumeName == nil {
		return types.NamespacedName{}, false
	}
	pv := &corev1.PersistentVolume{}
	if err := m.reader.Get(ctx, client.ObjectKey{Name: *va.Spec.Source.PersistentVolumeName}, pv); err != nil || pv.Spec.ClaimRef == nil {
		return types.NamespacedName{}, false
	}
	return types.NamespacedName{Namespace: pv.Spec.ClaimRef.Namespace, Name: pv.Spec.ClaimRef.Name}, true
}

func (m *mapper) gatedOfAttachment(ctx context.Context, o client.Object) []reconcile.Request {
	if c, ok := m.claimOf(ctx, o); ok {
		return m.gatedWith(ctx, c.Namespace, c.Namespace+"/"+c.Name)
	}
	return nil
}

func (m *mapper) claimOfAttachment(ctx context.Context, o client.Object) []reconcile.Request {
	if c, ok := m.claimOf(ctx, o); ok {
		return []reconcile.Request{{NamespacedName: c}}
	}
	return nil
}

// huddlesAt maps a node to the Huddles whose home it is.
func (m *mapper) huddlesAt(ctx context.Context, o client.Object) []reconcile.Request {
	list := &huddlev1.HuddleList{}
	if err := m.reader.List(ctx, list, client.MatchingFields{IndexHuddleHome: o.GetName()}); err != nil {
		return nil
	}
	out := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return out
}

// statusOfNodes maps changed nodes (see NodeChanges) to the Huddles
// whose status they can change: those at home on a node whose
// availability changed, or whose free resources changed enough to turn
// their Fits (fitMayChange); the claims of volumes attached to a node
// whose availability changed (a volume's node is home only while it is
// Ready and schedulable); and, on any change, the Huddles with members
// and no home, whose Fits is judged on every node. Other Huddles are not
// looked at: at 50,000 of them, most never are between two safety
// resyncs.
func (m *mapper) statusOfNodes(fitMayChange func(claim, node string) bool) func(context.Context, map[string]bool) []reconcile.Request {
	return func(ctx context.Context, changed map[string]bool) []reconcile.Request {
		seen := map[types.NamespacedName]bool{}
		var out []reconcile.Request
		add := func(n types.NamespacedName) {
			if !seen[n] {
				seen[n] = true
				out = append(out, reconcile.Request{NamespacedName: n})
			}
		}
		for node, availability := range changed {
			list := &huddlev1.HuddleList{}
			if err := m.reader.List(ctx, list, client.MatchingFields{IndexHuddleHome: node}, client.UnsafeDisableDeepCopy); err == nil {
				for i := range list.Items {
					key := client.ObjectKeyFromObject(&list.Items[i])
					if availability || fitMayChange(key.String(), node) {
						add(key)
					}
				}
			}
			if !availability {
				continue
			}
			vas := &storagev1.VolumeAttachmentList{}
			if err := m.reader.List(ctx, vas, client.MatchingFields{IndexAttachmentNode: node}, client.UnsafeDisableDeepCopy); err == nil {
				for i := range vas.Items {
					if c, ok := m.claimOf(ctx, &vas.Items[i]); ok {
						add(c)
					}
				}
			}
		}
		list := &huddlev1.HuddleList{}
		if err := m.reader.List(ctx, list, client.MatchingFields{indexHomeless: "true"}, client.UnsafeDisableDeepCopy); err == nil {
			for i := range list.Items {
				add(client.ObjectKeyFromObject(&list.Items[i]))
			}
		}
		return out
	}
}

func (m *mapper) claimsOfPod(_ context.Context, o client.Object) []reconcile.Request {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	var out []reconcile.Request
	for _, key := range PodClaimKeys(p) {
		ns, name, _ := strings.Cut(key, "/")
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
	return out
}

// nodeSchedulingChanged passes node events that can change placement:
// new or deleted nodes, readiness, cordons, taints, labels, allocatable.
var nodeSchedulingChanged = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		o, ok1 := e.ObjectOld.(*corev1.Node)
		n, ok2 := e.ObjectNew.(*corev1.Node)
		if !ok1 || !ok2 {
			return true
		}
		// Compare values, not counts: a swapped label or taint value
		// (same count) changes which pods the node admits.
		return nodeReady(o) != nodeReady(n) || o.Spec.Unschedulable != n.Spec.Unschedulable ||
			!equality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints) || !maps.Equal(o.Labels, n.Labels) ||
			!equality.Semantic.DeepEqual(o.Status.Allocatable, n.Status.Allocatable)
	},
}
