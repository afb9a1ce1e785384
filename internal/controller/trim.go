package controller

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// CacheOptions are the informer cache options of huddle's manager. Pods,
// Nodes, the workloads that own pods, claims, volumes and attachments are
// cached trimmed to the fields huddle decides with (TrimPod, TrimNode,
// TrimWorkload, TrimClaim, TrimVolume, TrimAttachment): on a large
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
			&corev1.Pod{}:                   {Transform: TrimPod},
			&corev1.Node{}:                  {Transform: TrimNode},
			&appsv1.Deployment{}:            {Transform: TrimWorkload},
			&appsv1.ReplicaSet{}:            {Transform: TrimWorkload},
			&appsv1.StatefulSet{}:           {Transform: TrimWorkload},
			&batchv1.Job{}:                  {Transform: TrimWorkload},
			&corev1.PersistentVolumeClaim{}: {Transform: TrimClaim},
			&corev1.PersistentVolume{}:      {Transform: TrimVolume},
			&storagev1.VolumeAttachment{}:   {Transform: TrimAttachment},
			&huddlev1.Huddle{}:              {Transform: ShareHuddle},
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
// status) and managedFields are dropped. The namespace, labels and
// owners, which many objects repeat, are shared (see shared).
func trimMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	out := identityMeta(m)
	out.DeletionGracePeriodSeconds = m.DeletionGracePeriodSeconds
	out.Labels, out.OwnerReferences, out.Finalizers = shareLabels(m.Labels), shareOwners(m.OwnerReferences), m.Finalizers
	return out
}

// identityMeta keeps of an object's metadata its identity, version,
// generation, times of creation and deletion and huddle's own
// annotations: what huddle reads of claims, volumes and attachments.
func identityMeta(m *metav1.ObjectMeta) metav1.ObjectMeta {
	out := metav1.ObjectMeta{
		Name: m.Name, Namespace: shareString(m.Namespace), UID: m.UID, ResourceVersion: m.ResourceVersion, Generation: m.Generation,
		CreationTimestamp: m.CreationTimestamp, DeletionTimestamp: m.DeletionTimestamp,
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

// TrimClaim is the cache transform of PersistentVolumeClaims. huddle
// reads of a claim whether it is opted in (huddle's annotation), its
// access modes, class and volume, and its identity (a Huddle's owner). It
// never writes claims. With --cluster-wide a cluster of 50,000 claims
// holds all of them, so they are trimmed like pods (BenchmarkClaimMemory).
func TrimClaim(obj any) (any, error) {
	c, ok := obj.(*corev1.PersistentVolumeClaim)
	if !ok {
		return obj, nil
	}
	return &corev1.PersistentVolumeClaim{TypeMeta: c.TypeMeta, ObjectMeta: identityMeta(&c.ObjectMeta),
		Spec: corev1.PersistentVolumeClaimSpec{AccessModes: shareAccessModes(c.Spec.AccessModes), StorageClassName: c.Spec.StorageClassName, VolumeName: c.Spec.VolumeName}}, nil
}

// TrimVolume is the cache transform of PersistentVolumes. huddle reads of
// a volume its access modes, its source's type (and a CSI volume's
// driver), where it may attach (node affinity, whole) and its claim;
// capacity, class, phase, the CSI volume's handle and attributes, mount
// options and labels are dropped. The volumes of a zone share one node affinity. It
// never writes volumes.
func TrimVolume(obj any) (any, error) {
	v, ok := obj.(*corev1.PersistentVolume)
	if !ok {
		return obj, nil
	}
	out := &corev1.PersistentVolume{TypeMeta: v.TypeMeta, ObjectMeta: identityMeta(&v.ObjectMeta),
		Spec: corev1.PersistentVolumeSpec{AccessModes: shareAccessModes(v.Spec.AccessModes), PersistentVolumeSource: v.Spec.PersistentVolumeSource,
			NodeAffinity: shareVolumeAffinity(v.Spec.NodeAffinity)}}
	if csi := v.Spec.CSI; csi != nil {
		// Which driver attaches it decides whether it is shared.
		out.Spec.CSI = &corev1.CSIPersistentVolumeSource{Driver: shareString(csi.Driver)}
	}
	if r := v.Spec.ClaimRef; r != nil {
		out.Spec.ClaimRef = &corev1.ObjectReference{Namespace: r.Namespace, Name: r.Name, UID: r.UID}
	}
	return out, nil
}

// ShareHuddle is the cache transform of Huddles. It keeps all of a Huddle
// but its managedFields: huddle updates Huddles whole. What Huddles
// repeat is shared (see shared): the namespace, the home and members'
// nodes, the phases, and the conditions' types, reasons and messages,
// but for the Huddled condition's message, which names the claim. Its
// owner, the claim, is its own, and sharing a value only one object holds
// costs more than it saves.
func ShareHuddle(obj any) (any, error) {
	h, ok := obj.(*huddlev1.Huddle)
	if !ok {
		return obj, nil
	}
	h.ManagedFields = nil
	h.Namespace = shareString(h.Namespace)
	st := &h.Status
	st.Home, st.Phase = shareString(st.Home), huddlev1.Phase(shareString(string(st.Phase)))
	for i := range st.Members {
		m := &st.Members[i]
		m.Node, m.Phase, m.Reason = shareString(m.Node), corev1.PodPhase(shareString(string(m.Phase))), shareString(m.Reason)
	}
	for i := range st.Conditions {
		c := &st.Conditions[i]
		c.Type, c.Status, c.Reason = shareString(c.Type), metav1.ConditionStatus(shareString(string(c.Status))), shareString(c.Reason)
		if c.Type != huddlev1.ConditionHuddled {
			c.Message = shareString(c.Message)
		}
	}
	return h, nil
}

// TrimAttachment is the cache transform of VolumeAttachments: huddle
// reads of one its attacher, node and volume and whether it is attached;
// the attachment's metadata and errors are dropped. It deletes
// attachments (by UID) but never writes them.
func TrimAttachment(obj any) (any, error) {
	a, ok := obj.(*storagev1.VolumeAttachment)
	if !ok {
		return obj, nil
	}
	return &storagev1.VolumeAttachment{TypeMeta: a.TypeMeta, ObjectMeta: identityMeta(&a.ObjectMeta),
		Spec: storagev1.VolumeAttachmentSpec{Attacher: shareString(a.Spec.Attacher), NodeName: shareString(a.Spec.NodeName),
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: a.Spec.Source.PersistentVolumeName}},
		Status: storagev1.VolumeAttachmentStatus{Attached: a.Status.Attached}}, nil
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
		NodeName: shareString(s.NodeName), SchedulingGates: s.SchedulingGates, NodeSelector: s.NodeSelector,
		Tolerations: shareTolerations(s.Tolerations), Affinity: requiredNodeAffinity(s.Affinity),
		Containers: requestsContainer(p), Volumes: claimVolumes(s.Volumes),
	}
	out.Status.Phase = corev1.PodPhase(shareString(string(p.Status.Phase)))
	for _, c := range p.Status.Conditions {
		switch {
		case c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse:
			// Why and since when it waits (scheduledMessage,
			// UnschedulableSince); a scheduled pod's is never read.
			out.Status.Conditions = append(out.Status.Conditions, c)
		case c.Type == corev1.PodReady:
			out.Status.Conditions = append(out.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionStatus(shareString(string(c.Status)))})
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
		Name: p.Name, Namespace: shareString(p.Namespace), UID: p.UID, ResourceVersion: p.ResourceVersion,
		CreationTimestamp: p.CreationTimestamp, DeletionTimestamp: p.DeletionTimestamp,
		DeletionGracePeriodSeconds: p.DeletionGracePeriodSeconds,
	}}
	out.Spec = corev1.PodSpec{NodeName: shareString(p.Spec.NodeName), SchedulingGates: p.Spec.SchedulingGates,
		Containers: requestsContainer(p)}
	out.Status.Phase = corev1.PodPhase(shareString(string(p.Status.Phase)))
	return out
}

// claimVolumes keeps of a pod's volumes its claims: the name and claim of
// each PersistentVolumeClaim volume, and the name of each generic
// ephemeral volume (its claim's name is the pod's and the volume's; its
// template is read at admission only). The members of a huddle mount the
// same claims, so they share one list (see shared).
func claimVolumes(vs []corev1.Volume) []corev1.Volume {
	var out []corev1.Volume
	var key []byte
	for _, v := range vs {
		switch {
		case v.PersistentVolumeClaim != nil:
			out = append(out, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: v.PersistentVolumeClaim}})
			key = fmt.Appendf(key, "%q pvc %q %t;", v.Name, v.PersistentVolumeClaim.ClaimName, v.PersistentVolumeClaim.ReadOnly)
		case v.Ephemeral != nil:
			out = append(out, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}})
			key = fmt.Appendf(key, "%q ephemeral;", v.Name)
		}
	}
	if out == nil {
		return nil
	}
	return claimVolumeLists.of(string(key), func() []corev1.Volume { return out })
}

var (
	claimVolumeLists = newShared[corev1.Volume]()
	tolerationLists  = newShared[corev1.Toleration]()
	ownerLists       = newShared[metav1.OwnerReference]()
	nodeAffinities   = newShared[corev1.Affinity]()
)

// shareTolerations returns ts, shared (see shared): most pods carry the
// same two, the API server's default tolerations of not-ready and
// unreachable nodes.
func shareTolerations(ts []corev1.Toleration) []corev1.Toleration {
	return shareList(tolerationLists, ts)
}

// shareOwners returns refs, shared (see shared): the pods of one
// ReplicaSet, StatefulSet or Job have the same owner.
func shareOwners(refs []metav1.OwnerReference) []metav1.OwnerReference {
	return shareList(ownerLists, refs)
}

// shareList returns items from table, keyed by their encoding (protoKey).
func shareList[T any, P interface {
	*T
	Marshal() ([]byte, error)
}](table *shared[T], items []T) []T {
	if len(items) == 0 {
		return items
	}
	key := protoKey[T, P](items)
	if key == "" {
		return items
	}
	return table.of(key, func() []T { return slices.Clone(items) })
}

// requiredNodeAffinity keeps of a pod's affinity its required node
// affinity, whole (a pin patch replaces its terms), shared (see shared):
// huddle pins every member at a home to the same terms, unless their own
// differ.
func requiredNodeAffinity(a *corev1.Affinity) *corev1.Affinity {
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return nil
	}
	required := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	build := func() []corev1.Affinity {
		return []corev1.Affinity{{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: required}}}
	}
	key := protoKey([]corev1.NodeSelector{*required})
	if key == "" {
		return &build()[0]
	}
	return &nodeAffinities.of(key, build)[0]
}

var (
	accessModeLists  = newShared[corev1.PersistentVolumeAccessMode]()
	volumeAffinities = newShared[corev1.VolumeNodeAffinity]()
)

// shareAccessModes returns ms, shared (see shared): almost every claim
// and volume has the same one. The key is ms printed: the four modes the
// API server accepts have no spaces, so different lists print apart.
func shareAccessModes(ms []corev1.PersistentVolumeAccessMode) []corev1.PersistentVolumeAccessMode {
	if len(ms) == 0 {
		return ms
	}
	return accessModeLists.of(fmt.Sprint(ms), func() []corev1.PersistentVolumeAccessMode { return slices.Clone(ms) })
}

// shareVolumeAffinity returns a, shared (see shared): the volumes of one
// zone have the same.
func shareVolumeAffinity(a *corev1.VolumeNodeAffinity) *corev1.VolumeNodeAffinity {
	if a == nil {
		return nil
	}
	key := protoKey([]corev1.VolumeNodeAffinity{*a})
	if key == "" {
		return a
	}
	return &volumeAffinities.of(key, func() []corev1.VolumeNodeAffinity { return []corev1.VolumeNodeAffinity{*a} })[0]
}

// protoKey is the protobuf encoding of items, each prefixed by its
// length: equal lists, and only they, get equal keys (the encoding of
// these types is deterministic: they have no maps). It is "" if one does
// not encode, and such a list is not shared.
func protoKey[T any, P interface {
	*T
	Marshal() ([]byte, error)
}](items []T) string {
	var key []byte
	for i := range items {
		b, err := P(&items[i]).Marshal()
		if err != nil {
			return ""
		}
		key = binary.AppendUvarint(key, uint64(len(b)))
		key = append(key, b...)
	}
	return string(key)
}

// RequestsContainer is the one container of a pod in huddle's cache: it
// requests what the whole pod does (see TrimPod).
const RequestsContainer = "huddle-requests"

// requestsContainers gives the cached pods that request the same one
// RequestsContainer to share (see shared): the container and its
// resource list are about 1 KB, 40% of a trimmed pod that mounts no
// claim, and most pods request what some other pod made from the same
// template does.
var requestsContainers = newShared[corev1.Container]()

// requestsContainer returns the one-container list of a trimmed pod that
// requests what p does.
func requestsContainer(p *corev1.Pod) []corev1.Container {
	requests := resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{})
	return requestsContainers.of(requestsKey(requests), func() []corev1.Container {
		c := []corev1.Container{{Name: RequestsContainer}}
		if len(requests) > 0 {
			c[0].Resources.Requests = requests
		}
		return c
	})
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

// trimTemplate keeps what TemplateMounts and TemplateRequests read: the
// claims it mounts, and what a pod made from it requests as one
// RequestsContainer, shared with the other templates and pods that
// request the same (see TrimPod). The requests of a template whose pods
// mount no claim are never read, but shared they cost next to nothing.
func trimTemplate(t *corev1.PodTemplateSpec) corev1.PodTemplateSpec {
	out := corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: requestsContainer(templatePod(t))}}
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
