package controller

import (
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/huddle-io/huddle/internal/placement"
)

// WorkloadOwner is the owner placement counts for a workload that creates
// pods: its key ("Deployment/web"), how many of its pods may run at once
// and the requests of one of them, from its template. ok is false for a
// kind whose pods huddle does not count by owner (a DaemonSet's pods
// belong to their nodes; a bare pod counts by itself). The controller
// calls it on the owners it reads from its caches, and kubectl huddle plan
// on the workloads of a manifest, so both compute the same demand.
func WorkloadOwner(obj any) (key string, owner placement.Owner, template *corev1.PodTemplateSpec, ok bool) {
	made := func(key string, maxPods int64, t *corev1.PodTemplateSpec) (string, placement.Owner, *corev1.PodTemplateSpec, bool) {
		return key, placement.Owner{MaxPods: maxPods, PerPod: TemplateRequests(t)}, t, true
	}
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return made("Deployment/"+w.Name, deploymentMaxPods(w), &w.Spec.Template)
	case *appsv1.ReplicaSet:
		return made("ReplicaSet/"+w.Name, int64(replicas(w.Spec.Replicas)), &w.Spec.Template)
	case *appsv1.StatefulSet:
		return made("StatefulSet/"+w.Name, int64(replicas(w.Spec.Replicas)), &w.Spec.Template)
	case *batchv1.Job:
		return made("Job/"+w.Name, int64(replicas(w.Spec.Parallelism)), &w.Spec.Template)
	}
	return "", placement.Owner{}, nil, false
}

// OwnerFor is WorkloadOwner for the huddle of claim: an owner whose
// template does not mount claim by name makes pods that each mount a claim
// of their own (a StatefulSet's volumeClaimTemplates, a generic ephemeral
// volume), so only the pods that mount this one count, not every replica
// (MaxPods 0).
func OwnerFor(obj any, claim string) (string, placement.Owner, bool) {
	key, owner, template, ok := WorkloadOwner(obj)
	if ok && !TemplateMounts(template, claim) {
		owner.MaxPods = 0
	}
	return key, owner, ok
}

// TemplateMounts reports whether every pod made from t mounts claim by
// name.
func TemplateMounts(t *corev1.PodTemplateSpec, claim string) bool {
	for _, v := range t.Spec.Volumes {
		if v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim {
			return true
		}
	}
	return false
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

// TemplateRequests are the requests of a pod made from t, with what the
// API server fills in at creation that a template lacks: a container's
// limits stand for its missing requests. LimitRange defaults and
// RuntimeClass overhead are added by admission; placement.Demand takes
// them from the real members' requests.
func TemplateRequests(t *corev1.PodTemplateSpec) placement.Resources {
	return Requests(templatePod(t))
}

// templatePod is a pod made from t as the API server admits it: the
// limits of a container, and the pod's own (pod-level resources), stand
// in for the requests they do not set.
func templatePod(t *corev1.PodTemplateSpec) *corev1.Pod {
	pod := &corev1.Pod{Spec: *t.Spec.DeepCopy()}
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			limitsAsRequests(&cs[i].Resources)
		}
	}
	if pod.Spec.Resources != nil {
		limitsAsRequests(pod.Spec.Resources)
	}
	return pod
}

// limitsAsRequests sets each limit of r as its request where r has none.
func limitsAsRequests(r *corev1.ResourceRequirements) {
	for name, q := range r.Limits {
		if _, ok := r.Requests[name]; !ok {
			if r.Requests == nil {
				r.Requests = corev1.ResourceList{}
			}
			r.Requests[name] = q
		}
	}
}
