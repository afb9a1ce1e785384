package controller

import (
	"context"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
)

// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims;persistentvolumes;nodes;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=storage.k8s.io,resources=volumeattachments;csidrivers;csinodes;storageclasses,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments;replicasets;statefulsets,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch

// Placer releases gated pods: for each, it gathers the pod's claims and
// their huddles from the caches, asks placement.Decide, and applies the
// answer with one patch of the pod (narrowed affinity, annotation, gate
// removed). Everything it decides is written to the pod, so a restarted
// Placer picks up where the last one stopped.
type Placer struct {
	Client client.Client
	// APIReader reads from the API server, past the cache: the record of
	// a new huddle's first member is checked there before another is
	// released (see markPlacing).
	APIReader client.Reader
	Gatherer  *Gatherer
	Recorder  record.EventRecorder
	Clock     clock.Clock
	// MissingClaimGrace is how long a pod waits for a claim that does not
	// exist before it is released anyway.
	MissingClaimGrace time.Duration
	// MaxCandidates caps the nodes of a fresh placement's pin.
	MaxCandidates int
}

// recheck is how often a held pod is looked at again even if nothing it
// watches changed: a safety net, since every reason to hold a pod ends
// with an event the placer watches (a pod bound or gone, a node change, an
// attachment gone under a node's attach limit (Cluster.Detached), a
// claim created). At 5,000 gated pods a 30 s recheck was most of the
// placer's work.
const recheck = 5 * time.Minute

// quietFollow is how long a member of a new huddle may wait for the first
// member before the wait is written on the pod and in an event.
const quietFollow = 5 * time.Second

// Reconcile places one pod.
func (r *Placer) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	pod := &corev1.Pod{}
	if err := r.Client.Get(ctx, req.NamespacedName, pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !placement.HasGate(pod) || pod.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}
	in, facts, err := r.Gatherer.Input(ctx, pod)
	if err != nil {
		return ctrl.Result{}, err
	}
	in.Now = r.Clock.Now()
	in.MissingClaimGrace = r.MissingClaimGrace
	in.MaxCandidates = r.MaxCandidates
	var d placement.Decision
	hostnames := map[string]string{}
	r.Gatherer.Cluster.View(func(nodes placement.Nodes) {
		in.Nodes = nodes
		d = placement.Decide(in)
		for _, n := range d.Nodes {
			hostnames[n] = n
			if node := nodes.Get(n); node != nil && node.Labels[corev1.LabelHostname] != "" {
				hostnames[n] = node.Labels[corev1.LabelHostname]
			}
		}
	})
	decisions.WithLabelValues(string(d.Action), d.Reason).Inc()
	logger := log.FromContext(ctx).WithValues("action", d.Action, "reason", d.Reason, "claim", d.Claim)

	if d.Action == placement.Hold {
		if age := in.Now.Sub(pod.CreationTimestamp.Time); d.Reason == placement.ReasonFollowing && age < quietFollow {
			// Following the first member takes a scheduling cycle; say so
			// on the pod only if it takes longer, and spare the API server
			// two writes per member of every new huddle.
			return ctrl.Result{RequeueAfter: quietFollow - age}, nil
		}
		if pod.Annotations[placement.AnnotationHeld] != d.Message {
			updated := placement.Apply(pod, d, func(n string) string { return hostnames[n] })
			if err := patchTrimmed(ctx, r.Client, pod, updated); err != nil {
				return ctrl.Result{}, ignoreConflict(err)
			}
			r.Recorder.Event(pod, corev1.EventTypeNormal, d.Reason, d.Message)
			logger.V(1).Info("Holding pod", "message", d.Message)
		}
		after := recheck
		if d.Reason == placement.ReasonWaitClaim {
			after = max(time.Second, r.MissingClaimGrace-in.Now.Sub(pod.CreationTimestamp.Time))
		}
		if !d.Until.IsZero() {
			after = max(100*time.Millisecond, d.Until.Sub(in.Now))
		}
		if d.Reason == placement.ReasonFollowing && !mounts(in, d.Claim) {
			// Following the first member of a claim the pod does not
			// mount (a peer's other claim): that member's binding does
			// not wake this pod, so look again soon.
			after = quietFollow
		}
		return ctrl.Result{RequeueAfter: after}, nil
	}

	if d.Action == placement.PinCandidates {
		// The first member of a huddle with no home: record it on the
		// Huddle first, with optimistic concurrency, so no other placer
		// releases a first member meanwhile.
		if requeue, err := r.markPlacing(ctx, facts, pod.Name); err != nil || requeue {
			return ctrl.Result{Requeue: requeue}, err
		}
	}
	updated := placement.Apply(pod, d, func(n string) string { return hostnames[n] })
	if err := patchTrimmed(ctx, r.Client, pod, updated); err != nil {
		return ctrl.Result{}, ignoreConflict(err)
	}
	placementLatency.Observe(r.Clock.Since(pod.CreationTimestamp.Time).Seconds())
	switch {
	case d.Action == placement.Release:
		r.Recorder.Event(pod, corev1.EventTypeNormal, d.Reason, "released to the scheduler: "+d.Message)
	case !d.Fits:
		r.Recorder.Event(pod, corev1.EventTypeWarning, d.Reason, d.Message+"; "+d.Shortfall)
	default:
		r.Recorder.Event(pod, corev1.EventTypeNormal, d.Reason, updated.Annotations[placement.AnnotationPinnedBy])
	}
	logger.Info("Released pod", "nodes", d.Nodes, "fits", d.Fits)
	return ctrl.Result{}, nil
}

// mounts: the pod being placed mounts the claim called key.
func mounts(in *placement.Input, key string) bool {
	for i := range in.Claims {
		if in.Claims[i].Key == key {
			return true
		}
	}
	return false
}

// markPlacing records pod as the member being placed first on the Huddle
// of every shared claim it mounts (none has a home, or the pod would be
// pinned there), creating a Huddle if needed: a pod of two claims
// recorded on one only would let a first member of the other go too. It
// asks for a requeue when another writer got there first, or when the API
// server (not the cache, which may lag behind it: a pod list without the
// recorded member, a replica that just took over) says another member
// recorded as placing is still in flight: two first members released at
// once land on two nodes and split the huddle.
func (r *Placer) markPlacing(ctx context.Context, facts []*ClaimFacts, pod string) (bool, error) {
	for _, f := range facts {
		if f.Object == nil || !f.Shared {
			continue
		}
		if requeue, err := r.markPlacingOn(ctx, f, pod); requeue || err != nil {
			return requeue, err
		}
	}
	return false, nil
}

// markPlacingOn records pod as placing on the Huddle of one claim (see
// markPlacing).
func (r *Placer) markPlacingOn(ctx context.Context, f *ClaimFacts, pod string) (bool, error) {
	claim := f.Key
	now := r.Clock.Now()
	record := pod + " " + now.UTC().Format(time.RFC3339)
	hud := &huddlev1.Huddle{}
	err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(f.Object), hud)
	if apierrors.IsNotFound(err) {
		hud = &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: f.Object.Name, Namespace: f.Object.Namespace}}
		if err := controllerutil.SetOwnerReference(f.Object, hud, r.Client.Scheme()); err != nil {
			return false, err
		}
		metav1.SetMetaDataAnnotation(&hud.ObjectMeta, AnnotationPlacing, record)
		err := r.Client.Create(ctx, hud)
		if apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return false, nil // the pod goes with its namespace
		}
		return apierrors.IsAlreadyExists(err), client.IgnoreAlreadyExists(err)
	}
	if err != nil {
		return false, err
	}
	previous := hud.Annotations[AnnotationPlacing]
	if other, since := placingOf(hud, now); other != "" && other != pod {
		inFlight, err := r.inFlight(ctx, hud.Namespace, other, since)
		if err != nil || inFlight {
			if inFlight {
				log.FromContext(ctx).Info("Not placed first: the API server has another member in flight", "claim", claim, "placing", previous)
			}
			return inFlight, err
		}
	}
	metav1.SetMetaDataAnnotation(&hud.ObjectMeta, AnnotationPlacing, record)
	err = r.Client.Update(ctx, hud)
	if err == nil && previous != "" && !strings.HasPrefix(previous, pod+" ") {
		// Worth a line: a record replaced while it lasted (its pod
		// gone, terminating or done) is how a second first member goes.
		log.FromContext(ctx).Info("Placing record replaced", "claim", claim, "previous", previous, "now", record)
	}
	return apierrors.IsConflict(err), client.IgnoreNotFound(ignoreConflict(err))
}

// inFlight says whether the pod called name, recorded as placing since,
// as the API server has it, exists and may still set its claim's home
// (placement.RecordedInFlight). A bound one has set it already, which the
// cache will show.
func (r *Placer) inFlight(ctx context.Context, namespace, name string, since time.Time) (bool, error) {
	p := &corev1.Pod{}
	if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, p); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	m := memberState(p)
	return placement.RecordedInFlight(&m, since), nil
}

// ignoreConflict turns a write conflict into a quiet retry: the cache is
// behind, and the watch will bring the pod back.
func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
