package controller

import (
	"context"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"weak"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CacheOptions are the informer cache options of huddle's manager. Pods,
// Nodes and the workloads that own pods are cached trimmed to the fields
// huddle decides with (TrimPod, TrimNode, TrimWorkload): on a large
// cluster they are most of huddle's memory, and most of a pod (images,
// env, probes, mounts, container statuses) and of a node (images, system
// info, addresses) is never read. Every other kind loses only its
// managedFields.
//
// A trimmed object must never be written back whole: every write that
// starts from one is a JSON merge patch, which sends only the fields it
// changes, and the lists such a patch replaces whole (a pod's
// schedulingGates and required node affinity terms, a node's taints) are
// kept whole by the trims.
func CacheOptions() cache.Options {
	strip := cache.TransformStripManagedFields()
	return cache.Options{
		DefaultTransform: strip,
		ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}:         {Transform: TrimPod},
			&corev1.Node{}:        {Transform: TrimNode},
			&appsv1.Deployment{}:  {Transform: TrimWorkload},
			&appsv1.ReplicaSet{}:  {Transform: TrimWorkload},
			&appsv1.StatefulSet{}: {Transform: TrimWorkload},
			&batchv1.Job{}:        {Transform: TrimWorkload},
		},
	}
}

// huddlePrefix is the prefix of the annotations huddle reads; no other
// annotation is kept in the trimmed caches.
const huddlePrefix = "huddle.io/"

// trimMeta keeps the object metadata huddle reads or needs to write and
// to record events: identity, resourceVersion (optimistic locking), times
// of creation and deletion, labels (PodDisruptionBudget selectors, node
// selectors), huddle's own annotations, owners and finalizers. Other
// annotations (kubectl's last-applied-configuration, sidecar injectors'
// status) and managedFields are dropped.
func trimMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion, Generation: m.Generation,
		CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
		DeletionGracePeriodSeconds: m.DeletionGracePeriodSeconds,
		Labels:                     m.Labels, OwnerReferences: m.OwnerReferences, Finalizers: m.Finalizers,
	}
	for k, v := range m.Annotations {
		if strings.HasPrefix(k, huddlePrefix) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out
}

// TrimPod is the cache transform of Pods. It keeps what placement,
// repair, status, failover and the indexes read: the node, the scheduling
// gates (whole: a release patch replaces the list), the claims mounted,
// the constraints a node must meet (node selector, tolerations, required
// node affinity with its terms whole: a pin patch replaces them), the
// phase, the PodScheduled condition while it is False, the Ready
// condition's status and the first container's waiting reason. Objects of
// other types pass unchanged; trimming a trimmed pod changes nothing.
//
// What the pod requests is kept as huddle counts it, not as it is made
// up: the containers, init containers, overhead and pod-level resources
// become one container, RequestsContainer, that requests what the whole
// pod does (Requests is the same for both). Each container's resource
// lists were half of what remained of a pod; huddle never writes
// containers, so the patches it makes from a trimmed pod leave them
// alone.
func TrimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	if !mountsClaims(p) {
		return trimPlainPod(p), nil
	}
	out := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: trimMeta(&p.ObjectMeta)}
	s := &p.Spec
	out.Spec = corev1.PodSpec{
		NodeName: s.NodeName, SchedulingGates: s.SchedulingGates, NodeSelector: s.NodeSelector, Tolerations: s.Tolerations,
		Containers: requestsContainers.of(p),
	}
	if a := s.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		out.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
		}}
	}
	for _, v := range s.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim}})
		case v.Ephemeral != nil:
			// The claim's name is the pod's and the volume's; its
			// template is read at admission only.
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}})
		}
	}
	out.Status.Phase = p.Status.Phase
	for _, c := range p.Status.Conditions {
		switch {
		case c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse:
			// Why and since when it waits (scheduledMessage,
			// UnschedulableSince); a scheduled pod's is never read.
			out.Status.Conditions = append(out.Status.Conditions, c)
		case c.Type == corev1.PodReady:
			out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: c.Type, Status: c.Status})
		}
	}
	for _, c := range p.Status.ContainerStatuses {
		// Only the first waiting reason is read (waitingReason).
		if w := c.State.Waiting; w != nil && w.Reason != "" {
			out.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: c.Name, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: w.Reason}}}}
			break
		}
	}
	return out, nil
}

// mountsClaims says whether a pod mounts a claim (a PersistentVolumeClaim
// or a generic ephemeral volume), which is what makes it a member of a
// huddle.
func mountsClaims(p *corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil || v.Ephemeral != nil {
			return true
		}
	}
	return false
}

// trimPlainPod trims a pod that mounts no claim, most pods of most
// clusters, further: huddle reads of it only what it takes from its node
// (its requests while it is bound and not finished) and, on a node
// failover fences, whether it is terminating (to delete it, by UID). Its
// labels, owners, constraints and conditions are never read: it is no
// member of any huddle, and its claims cannot change (a pod's volumes
// are immutable).
func trimPlainPod(p *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{TypeMeta: p.TypeMeta, ObjectMeta: metav1.ObjectMeta{
		Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
		CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		DeletionGracePeriodSeconds: p.DeletionGracePeriodSeconds,
	}}
	out.Spec = corev1.PodSpec{NodeName: p.Spec.NodeName, SchedulingGates: p.Spec.SchedulingGates,
		Containers: requestsContainers.of(p)}
	out.Status.Phase = p.Status.Phase
	return out
}

// RequestsContainer is the one container of a pod in huddle's cache: it
// requests what the whole pod does (see TrimPod).
const RequestsContainer = "huddle-requests"

// requestsContainers gives the cached pods that request the same one
// RequestsContainer to share: the container and its resource list are
// about 1 KB, 40% of a trimmed pod that mounts no claim, and most pods
// request what some other pod made from the same template does.
var requestsContainers = sharedContainers{byRequests: map[string]weak.Pointer[[1]corev1.Container]{}}

// sharedContainers holds each distinct RequestsContainer weakly, by what
// it requests: one no cached pod holds any more is collected, and its
// entry with it. Pods whose requests are all different (a vertical
// autoscaler's) share nothing and cost about 100 B more each (the entry
// and its cleanup), and leave nothing behind when they go.
//
// Cached objects are read-only (controller-runtime copies them for every
// Get and List unless told not to, and those readers only read), so the
// pods that share a container never see each other's changes: a pod that
// changes is trimmed again, into another container.
type sharedContainers struct {
	mu         sync.Mutex
	byRequests map[string]weak.Pointer[[1]corev1.Container]
}

// of returns the one-container list of a trimmed pod that requests what p
// does.
func (s *sharedContainers) of(p *corev1.Pod) []corev1.Container {
	requests := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
	key := requestsKey(requests)
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.byRequests[key].Value(); c != nil {
		return c[:]
	}
	c := &[1]corev1.Container{{Name: RequestsContainer}}
	if len(requests) > 0 {
		c[0].Resources.Requests = requests
	}
	w := weak.Make(c)
	s.byRequests[key] = w
	runtime.AddCleanup(c, s.forget, sharedEntry{key, w})
	return c[:]
}

// sharedEntry names a container of sharedContainers that was collected.
type sharedEntry struct {
	key string
	c   weak.Pointer[[1]corev1.Container]
}

// forget drops the entry of a collected container, unless its requests
// have a new container already.
func (s *sharedContainers) forget(e sharedEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byRequests[e.key] == e.c {
		delete(s.byRequests, e.key)
	}
}

// requestsKey is a resource list as a string, the same for lists whose
// quantities print the same: equal amounts written in different units
// ("1Gi", "1073741824") get different keys and do not share a container,
// which costs memory, never correctness.
func requestsKey(l corev1.ResourceList) string {
	names := slices.Sorted(maps.Keys(l))
	var b strings.Builder
	for _, n := range names {
		q := l[n]
		b.WriteString(string(n))
		b.WriteByte('=')
		b.WriteString(q.String())
		b.WriteByte(' ')
	}
	return b.String()
}

// trimContainers keeps of each container what its requests are computed
// from: its resources and, for a sidecar, its restart policy.
func trimContainers(cs []corev1.Container) []corev1.Container {
	if len(cs) == 0 {
		return nil
	}
	out := make([]corev1.Container, len(cs))
	for i := range cs {
		out[i] = corev1.Container{Name: cs[i].Name, Resources: cs[i].Resources, RestartPolicy: cs[i].RestartPolicy}
	}
	return out
}

// TrimNode is the cache transform of Nodes. It keeps the metadata (with
// huddle's annotations only), the whole spec (taints, which a fencing
// patch replaces whole, and cordons) and of the status the Ready
// condition and allocatable resources; images, system info, addresses,
// capacity and the volumes in use are dropped.
func TrimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{TypeMeta: n.TypeMeta, ObjectMeta: trimMeta(&n.ObjectMeta), Spec: n.Spec}
	out.Status.Allocatable = n.Status.Allocatable
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{c}
		}
	}
	return out, nil
}

// TrimWorkload is the cache transform of the workloads that own pods
// (Deployments, ReplicaSets, StatefulSets, Jobs), which huddle reads only
// to count a huddle's expected members (WorkloadOwner): their owners,
// replicas, rollout strategy, parallelism and their template's claims and
// requests. Labels, annotations, selectors, status and the rest of the
// template are dropped. huddle never writes them.
func TrimWorkload(obj any) (any, error) {
	switch w := obj.(type) {
	case *appsv1.Deployment:
		return &appsv1.Deployment{TypeMeta: w.TypeMeta, ObjectMeta: workloadMeta(&w.ObjectMeta),
			Spec: appsv1.DeploymentSpec{Replicas: w.Spec.Replicas, Strategy: w.Spec.Strategy, Template: trimTemplate(&w.Spec.Template)}}, nil
	case *appsv1.ReplicaSet:
		return &appsv1.ReplicaSet{TypeMeta: w.TypeMeta, ObjectMeta: workloadMeta(&w.ObjectMeta),
			Spec: appsv1.ReplicaSetSpec{Replicas: w.Spec.Replicas, Template: trimTemplate(&w.Spec.Template)}}, nil
	case *appsv1.StatefulSet:
		return &appsv1.StatefulSet{TypeMeta: w.TypeMeta, ObjectMeta: workloadMeta(&w.ObjectMeta),
			Spec: appsv1.StatefulSetSpec{Replicas: w.Spec.Replicas, Template: trimTemplate(&w.Spec.Template)}}, nil
	case *batchv1.Job:
		return &batchv1.Job{TypeMeta: w.TypeMeta, ObjectMeta: workloadMeta(&w.ObjectMeta),
			Spec: batchv1.JobSpec{Parallelism: w.Spec.Parallelism, Template: trimTemplate(&w.Spec.Template)}}, nil
	}
	return obj, nil
}

// workloadMeta keeps a workload's identity and owners (a ReplicaSet's
// Deployment).
func workloadMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Generation: m.Generation, CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
		OwnerReferences: m.OwnerReferences}
}

// trimTemplate keeps what TemplateMounts and TemplateRequests read.
func trimTemplate(t *corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	out := corev1.PodTemplateSpec{Spec: corev1.PodSpec{Overhead: t.Spec.Overhead, Resources: t.Spec.Resources,
		Containers: trimContainers(t.Spec.Containers), InitContainers: trimContainers(t.Spec.InitContainers)}}
	for _, v := range t.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			out.Spec.Volumes = append(out.Spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim}})
		}
	}
	return out
}

// placeholder is an annotation that exists only while a patch is made
// (see patchTrimmed); it is never sent.
const placeholder = huddlePrefix + "patch-placeholder"

// patchTrimmed writes what updated changes of cached, an object read from
// a trimmed cache, as one JSON merge patch guarded by cached's
// resourceVersion, as an Update would be. An Update would send the
// trimmed object whole: the API server would refuse it (a pod's
// containers changed) or drop what the trim dropped (others'
// annotations). The patch carries only the changed fields, and the lists
// it replaces whole (a pod's schedulingGates and required node affinity
// terms, a node's taints) are kept whole by the trims.
//
// One map needs care: a trimmed object's annotations are huddle's only,
// and removing the last of them would make the patch null the whole map
// on the server, everyone's annotations with it. The same placeholder in
// both keeps the map from ever being empty, so each removed annotation is
// patched away by itself.
func patchTrimmed(ctx context.Context, c client.Client, cached, updated client.Object) error {
	from := cached.DeepCopyObject().(client.Object)
	for _, o := range []client.Object{from, updated} {
		a := o.GetAnnotations()
		if a == nil {
			a = map[string]string{}
		}
		a[placeholder] = ""
		o.SetAnnotations(a)
	}
	err := c.Patch(ctx, updated, client.MergeFromWithOptions(from, client.MergeFromWithOptimisticLock{}))
	a := updated.GetAnnotations()
	delete(a, placeholder)
	if len(a) == 0 {
		updated.SetAnnotations(nil)
	}
	return err
}
