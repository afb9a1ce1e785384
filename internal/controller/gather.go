package controller

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
	"github.com/huddle-io/huddle/internal/webhook"
)

// Cache indexes the gatherer relies on.
const (
	// IndexPodClaims indexes pods by the "namespace/claim" keys they mount.
	IndexPodClaims = "huddle.io/claims"
	// IndexAttachmentPV indexes VolumeAttachments by PV name.
	IndexAttachmentPV = "huddle.io/pv"
)

// PodClaimKeys is the IndexPodClaims index function.
func PodClaimKeys(o client.Object) []string {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return nil
	}
	var keys []string
	for _, c := range webhook.ClaimNames(p) {
		keys = append(keys, p.Namespace+"/"+c)
	}
	return keys
}

// AttachmentPV is the IndexAttachmentPV index function.
func AttachmentPV(o client.Object) []string {
	va, ok := o.(*storagev1.VolumeAttachment)
	if !ok || va.Spec.Source.PersistentVolumeName == nil {
		return nil
	}
	return []string{*va.Spec.Source.PersistentVolumeName}
}

// Gatherer reads what placement needs from the informer caches.
type Gatherer struct {
	Reader  client.Reader
	Scope   scope.Scope
	Cluster *Cluster
	// Clock is the controllers' one clock (FakeClock in tests).
	Clock clock.Clock
	// Recreating are the group/kinds of controllers known to recreate a
	// pod huddle evicts or deletes (see RecreatingOwners).
	Recreating map[string]bool
}

// ClaimFacts is a claim as gathered: placement's view plus the objects.
type ClaimFacts struct {
	placement.Claim
	Object *corev1.PersistentVolumeClaim
	PV     *corev1.PersistentVolume
	Huddle *huddlev1.Huddle
	Pods   []*corev1.Pod
}

// Claim gathers one claim and its members, with the homes of the other
// shared claims its members mount.
func (g *Gatherer) Claim(ctx context.Context, namespace, name string) (*ClaimFacts, error) {
	f, err := g.claim(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	if err := g.others(ctx, []*ClaimFacts{f}); err != nil {
		return nil, err
	}
	return f, nil
}

// others fills in each member's Others: where the other shared claims it
// mounts live, or which of their members is on its way to set that. Each
// other claim is gathered once however many members mount it, and the
// claims in facts are not gathered again; a pod that mounts one claim, the
// common case, costs nothing here.
func (g *Gatherer) others(ctx context.Context, facts []*ClaimFacts) error {
	gathered := map[string]*placement.Claim{}
	for _, f := range facts {
		gathered[f.Key] = &f.Claim
	}
	known := map[string]*placement.OtherClaim{}
	for _, f := range facts {
		for i, p := range f.Pods {
			for _, name := range webhook.ClaimNames(p) {
				key := p.Namespace + "/" + name
				if key == f.Key {
					continue
				}
				o, ok := known[key]
				if !ok {
					c := gathered[key]
					if c == nil {
						other, err := g.claim(ctx, p.Namespace, name)
						if err != nil {
							return fmt.Errorf("gather claim %s: %w", key, err)
						}
						c = &other.Claim
					}
					o = g.summary(c)
					known[key] = o
				}
				if o != nil {
					f.Members[i].Others = append(f.Members[i].Others, *o)
				}
			}
		}
	}
	return nil
}

// summary is a claim as another claim's placement sees it, nil if it is
// missing or not shared.
func (g *Gatherer) summary(c *placement.Claim) *placement.OtherClaim {
	if c.Missing || !c.Shared {
		return nil
	}
	o := &placement.OtherClaim{Key: c.Key, Home: c.MoveTarget}
	if o.Home == "" && g.Cluster != nil {
		g.Cluster.View(func(nodes placement.Nodes) { o.Home, _ = placement.Home(c, nodes) })
	}
	if o.Home == "" {
		o.FirstMember = placement.FirstInFlight(c, "")
	}
	return o
}

// claim gathers one claim and its members.
func (g *Gatherer) claim(ctx context.Context, namespace, name string) (*ClaimFacts, error) {
	key := namespace + "/" + name
	f := &ClaimFacts{Claim: placement.Claim{Key: key, Owners: map[string]placement.Owner{}}}
	claim := &corev1.PersistentVolumeClaim{}
	if err := g.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, claim); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, err
		}
		f.Missing = true
		return f, nil
	}
	f.Object = claim
	ns := &corev1.Namespace{}
	if err := g.Reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		ns = nil
	}
	if !g.Scope.OptedIn(ns, namespace, claim) {
		f.NotShared = "not opted in (label the namespace " + scope.LabelEnabled + "=true or annotate the claim " + scope.AnnotationShare + "=true)"
	} else if err := g.volume(ctx, f); err != nil {
		return nil, err
	}

	pods := &corev1.PodList{}
	if err := g.Reader.List(ctx, pods, client.InNamespace(namespace), client.MatchingFields{IndexPodClaims: key}); err != nil {
		return nil, err
	}
	resolved := map[types.UID]string{}
	for i := range pods.Items {
		p := &pods.Items[i]
		f.Pods = append(f.Pods, p)
		m := g.member(ctx, p, name, f.Owners, resolved)
		f.Members = append(f.Members, m)
	}
	hud := &huddlev1.Huddle{}
	if err := g.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, hud); err == nil {
		f.Huddle = hud
		f.Headroom = placement.FromList(hud.Spec.Headroom.List())
		f.Placing, f.PlacingSince = placingOf(hud, g.Clock.Now())
		f.StaleAttachment = staleAttachmentOf(hud, g.Clock.Now())
		if mv := hud.Status.LastMove; mv != nil && mv.Finished == nil {
			f.MoveTarget = mv.To
		}
	} else if !apierrors.IsNotFound(err) {
		return nil, err
	}
	return f, nil
}

// AnnotationPlacing on a Huddle records the member released first into a
// huddle with no home, and when: "<pod> <RFC3339 time>".
const AnnotationPlacing = "huddle.io/placing"

// placingTTL bounds how long a recorded first member holds the others: if
// it is neither bound nor gone by then (deleted, say), the next member may
// go.
const placingTTL = time.Minute

func placingOf(h *huddlev1.Huddle, now time.Time) (string, time.Time) {
	pod, at, ok := strings.Cut(h.Annotations[AnnotationPlacing], " ")
	if !ok {
		return "", time.Time{}
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil || now.Sub(t) > placingTTL {
		return "", time.Time{}
	}
	return pod, t
}

// staleAttachmentOf reads AnnotationStaleAttachment while it lasts.
func staleAttachmentOf(h *huddlev1.Huddle, now time.Time) *placement.StaleAttachment {
	m := parseStale(h.Annotations[AnnotationStaleAttachment])
	if m == nil || !now.Before(m.until) {
		return nil
	}
	return &placement.StaleAttachment{Node: m.node, Until: m.until}
}

// volume fills in whether the claim is shared, its attachments and zone.
func (g *Gatherer) volume(ctx context.Context, f *ClaimFacts) error {
	v := scope.Volume{Claim: f.Object}
	if name := f.Object.Spec.VolumeName; name != "" {
		pv := &corev1.PersistentVolume{}
		if err := g.Reader.Get(ctx, client.ObjectKey{Name: name}, pv); err != nil {
			if !apierrors.IsNotFound(err) {
				return err
			}
		} else {
			v.PV, f.PV = pv, pv
			if pv.Spec.NodeAffinity != nil {
				f.VolumeAffinity = pv.Spec.NodeAffinity.Required
			}
		}
	}
	driverName := ""
	if v.PV != nil && v.PV.Spec.CSI != nil {
		driverName = v.PV.Spec.CSI.Driver
	}
	if cls := f.Object.Spec.StorageClassName; v.PV == nil && cls != nil && *cls != "" {
		class := &storagev1.StorageClass{}
		if err := g.Reader.Get(ctx, client.ObjectKey{Name: *cls}, class); err == nil {
			v.Class, driverName = class, class.Provisioner
			// Not bound yet (WaitForFirstConsumer): the volume will be
			// made where the class allows, so the huddle must go there.
			f.VolumeAffinity = allowedTopologies(class.AllowedTopologies)
		}
	}
	if driverName != "" {
		d := &storagev1.CSIDriver{}
		if err := g.Reader.Get(ctx, client.ObjectKey{Name: driverName}, d); err == nil {
			v.Driver = d
		}
	}
	f.Shared, f.NotShared = scope.Shared(v)
	f.Driver = driverName
	if f.PV == nil {
		return nil
	}
	vas := &storagev1.VolumeAttachmentList{}
	if err := g.Reader.List(ctx, vas, client.MatchingFields{IndexAttachmentPV: f.PV.Name}); err != nil {
		return err
	}
	for _, va := range vas.Items {
		if va.DeletionTimestamp != nil {
			f.Detaching = append(f.Detaching, va.Spec.NodeName)
			continue
		}
		f.VolumeNodes = append(f.VolumeNodes, va.Spec.NodeName)
		if va.Status.Attached {
			f.Attached = append(f.Attached, va.Spec.NodeName)
		}
	}
	return nil
}

// allowedTopologies is a StorageClass's allowedTopologies as a node
// selector (its terms ORed, each term's expressions ANDed), nil for none.
func allowedTopologies(terms []corev1.TopologySelectorTerm) *corev1.NodeSelector {
	if len(terms) == 0 {
		return nil
	}
	out := &corev1.NodeSelector{}
	for _, t := range terms {
		if len(t.MatchLabelExpressions) == 0 {
			return nil // an empty term allows every node
		}
		var term corev1.NodeSelectorTerm
		for _, e := range t.MatchLabelExpressions {
			term.MatchExpressions = append(term.MatchExpressions, corev1.NodeSelectorRequirement{Key: e.Key, Operator: corev1.NodeSelectorOpIn, Values: e.Values})
		}
		out.NodeSelectorTerms = append(out.NodeSelectorTerms, term)
	}
	return out
}

// memberState is where pod p stands as a member: its name, creation,
// node, gate, and whether it is done or terminating.
func memberState(p *corev1.Pod) placement.Member {
	return placement.Member{
		Name:        p.Name,
		Created:     p.CreationTimestamp.Time,
		Node:        p.Spec.NodeName,
		Gated:       placement.HasGate(p),
		Done:        p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		Terminating: p.DeletionTimestamp != nil,
	}
}

// member converts a pod that mounts claim, resolving its owner workload
// into owners. resolved remembers, by controller UID, the owner key found
// for earlier members (members of a huddle mostly share their owners).
func (g *Gatherer) member(ctx context.Context, p *corev1.Pod, claim string, owners map[string]placement.Owner, resolved map[types.UID]string) placement.Member {
	m := memberState(p)
	m.Pinned = p.Annotations[placement.AnnotationPinnedBy] != ""
	m.PinnedTo = placement.PinnedNode(p.Annotations[placement.AnnotationPinnedBy])
	m.Running = p.Status.Phase == corev1.PodRunning
	m.Controlled = g.Recreating[ownerKind(p)]
	m.OwnerKind = ownerKind(p)
	m.Requests = Requests(p)
	m.Constraints = &placement.Constraints{NodeSelector: p.Spec.NodeSelector, Tolerations: p.Spec.Tolerations}
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		m.Constraints.Affinity = placement.Unpinned(a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution, p.Annotations[placement.AnnotationPinnedBy])
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable && p.Spec.NodeName == "" {
			m.UnschedulableSince = c.LastTransitionTime.Time
		}
	}
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return m
	}
	if key, ok := resolved[ref.UID]; ok {
		m.Owner = key
		return m
	}
	key, owner, ok := g.owner(ctx, p, claim)
	resolved[ref.UID] = key
	if ok {
		m.Owner = key
		owners[key] = owner
	}
	return m
}

// owner finds the workload that creates the pod and what it counts for
// the huddle of claim (see OwnerFor).
func (g *Gatherer) owner(ctx context.Context, p *corev1.Pod, claim string) (string, placement.Owner, bool) {
	ref := metav1.GetControllerOf(p)
	if ref == nil {
		return "", placement.Owner{}, false
	}
	get := func(obj client.Object, name string) bool {
		return g.Reader.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: name}, obj) == nil
	}
	switch ref.Kind {
	case "ReplicaSet":
		rs := &appsv1.ReplicaSet{}
		if !get(rs, ref.Name) {
			return "", placement.Owner{}, false
		}
		if dref := metav1.GetControllerOf(rs); dref != nil && dref.Kind == "Deployment" {
			d := &appsv1.Deployment{}
			if get(d, dref.Name) {
				return OwnerFor(d, claim)
			}
		}
		return OwnerFor(rs, claim)
	case "StatefulSet":
		s := &appsv1.StatefulSet{}
		if get(s, ref.Name) {
			return OwnerFor(s, claim)
		}
	case "Job":
		j := &batchv1.Job{}
		if get(j, ref.Name) {
			return OwnerFor(j, claim)
		}
	}
	return "", placement.Owner{}, false
}

// Input gathers everything Decide needs for a gated pod.
func (g *Gatherer) Input(ctx context.Context, pod *corev1.Pod) (*placement.Input, []*ClaimFacts, error) {
	in := &placement.Input{}
	var facts []*ClaimFacts
	for _, name := range webhook.ClaimNames(pod) {
		f, err := g.claim(ctx, pod.Namespace, name)
		if err != nil {
			return nil, nil, fmt.Errorf("gather claim %s/%s: %w", pod.Namespace, name, err)
		}
		facts = append(facts, f)
	}
	if err := g.others(ctx, facts); err != nil {
		return nil, nil, err
	}
	for _, f := range facts {
		in.Claims = append(in.Claims, f.Claim)
	}
	in.Pod = g.member(ctx, pod, "", map[string]placement.Owner{}, map[types.UID]string{})
	return in, facts, nil
}
