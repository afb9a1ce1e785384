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
	"k8s.io/apimachinery/pkg/util/intstr"
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

// Claim gathers one claim and its members.
func (g *Gatherer) Claim(ctx context.Context, namespace, name string) (*ClaimFacts, error) {
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
		m := g.member(ctx, p, f.Owners, resolved)
		f.Members = append(f.Members, m)
	}
	hud := &huddlev1.Huddle{}
	if err := g.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, hud); err == nil {
		f.Huddle = hud
		f.Headroom = placement.FromList(hud.Spec.Headroom.List())
		f.Placing = placingOf(hud, time.Now())
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

func placingOf(h *huddlev1.Huddle, now time.Time) string {
	pod, at, ok := strings.Cut(h.Annotations[AnnotationPlacing], " ")
	if !ok {
		return ""
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil || now.Sub(t) > placingTTL {
		return ""
	}
	return pod
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
		}
	}
	if driverName != "" {
		d := &storagev1.CSIDriver{}
		if err := g.Reader.Get(ctx, client.ObjectKey{Name: driverName}, d); err == nil {
			v.Driver = d
		}
	}
	f.Shared, f.NotShared = scope.Shared(v)
	if f.PV == nil {
		return nil
	}
	vas := &storagev1.VolumeAttachmentList{}
	if err := g.Reader.List(ctx, vas, client.MatchingFields{IndexAttachmentPV: f.PV.Name}); err != nil {
		return err
	}
	for _, va := range vas.Items {
		if va.DeletionTimestamp != nil {
			continue
		}
		f.VolumeNodes = append(f.VolumeNodes, va.Spec.NodeName)
		if va.Status.Attached {
			f.Attached = append(f.Attached, va.Spec.NodeName)
		}
	}
	return nil
}

// member converts a pod, resolving its owner workload into owners.
// resolved remembers, by controller UID, the owner key found for earlier
// members (members of a huddle mostly share their owners).
func (g *Gatherer) member(ctx context.Context, p *corev1.Pod, owners map[string]placement.Owner, resolved map[types.UID]string) placement.Member {
	m := placement.Member{
		Name:        p.Name,
		Created:     p.CreationTimestamp.Time,
		Node:        p.Spec.NodeName,
		Gated:       placement.HasGate(p),
		Pinned:      p.Annotations[placement.AnnotationPinnedBy] != "",
		PinnedTo:    placement.PinnedNode(p.Annotations[placement.AnnotationPinnedBy]),
		Running:     p.Status.Phase == corev1.PodRunning,
		Done:        p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		Terminating: p.DeletionTimestamp != nil,
		Controlled:  g.Recreating[ownerKind(p)],
		OwnerKind:   ownerKind(p),
		Requests:    Requests(p),
		Constraints: &placement.Constraints{NodeSelector: p.Spec.NodeSelector, Tolerations: p.Spec.Tolerations},
	}
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
	key, owner, ok := g.owner(ctx, p)
	resolved[ref.UID] = key
	if ok {
		m.Owner = key
		owners[key] = owner
	}
	return m
}

// owner finds the workload that creates the pod and how many pods it may
// run at once.
func (g *Gatherer) owner(ctx context.Context, p *corev1.Pod) (string, placement.Owner, bool) {
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
				return "Deployment/" + d.Name, placement.Owner{MaxPods: deploymentMaxPods(d), PerPod: templateRequests(&d.Spec.Template)}, true
			}
		}
		return "ReplicaSet/" + rs.Name, placement.Owner{MaxPods: int64(replicas(rs.Spec.Replicas)), PerPod: templateRequests(&rs.Spec.Template)}, true
	case "StatefulSet":
		s := &appsv1.StatefulSet{}
		if get(s, ref.Name) {
			return "StatefulSet/" + s.Name, placement.Owner{MaxPods: int64(replicas(s.Spec.Replicas)), PerPod: templateRequests(&s.Spec.Template)}, true
		}
	case "Job":
		j := &batchv1.Job{}
		if get(j, ref.Name) {
			return "Job/" + j.Name, placement.Owner{MaxPods: int64(replicas(j.Spec.Parallelism)), PerPod: templateRequests(&j.Spec.Template)}, true
		}
	}
	return "", placement.Owner{}, false
}

// deploymentMaxPods is replicas plus maxSurge for RollingUpdate.
func deploymentMaxPods(d *appsv1.Deployment) int64 {
	n := replicas(d.Spec.Replicas)
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return int64(n)
	}
	surge := intstr.FromString("25%")
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil && ru.MaxSurge != nil {
		surge = *ru.MaxSurge
	}
	s, err := intstr.GetScaledValueFromIntOrPercent(&surge, int(n), true)
	if err != nil {
		s = 1
	}
	return int64(int(n) + s)
}

func replicas(r *int32) int32 {
	if r == nil {
		return 1
	}
	return *r
}

func templateRequests(t *corev1.PodTemplateSpec) placement.Resources {
	return Requests(&corev1.Pod{Spec: t.Spec})
}

// Input gathers everything Decide needs for a gated pod.
func (g *Gatherer) Input(ctx context.Context, pod *corev1.Pod) (*placement.Input, []*ClaimFacts, error) {
	in := &placement.Input{}
	var facts []*ClaimFacts
	for _, name := range webhook.ClaimNames(pod) {
		f, err := g.Claim(ctx, pod.Namespace, name)
		if err != nil {
			return nil, nil, fmt.Errorf("gather claim %s/%s: %w", pod.Namespace, name, err)
		}
		facts = append(facts, f)
		in.Claims = append(in.Claims, f.Claim)
	}
	in.Pod = g.member(ctx, pod, map[string]placement.Owner{}, map[types.UID]string{})
	return in, facts, nil
}
