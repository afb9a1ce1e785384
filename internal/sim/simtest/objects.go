package simtest

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

func mustQuantity(s string) resource.Quantity { return resource.MustParse(s) }

// Claim builds a 1Gi ReadWriteOnce claim of the default class (gp3).
func (e *Env) Claim(name string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.Namespace},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
}

// PodSpec builds a one-container pod spec requesting 100m CPU and 64Mi,
// mounting the given claims, targeting the test's node pool if it has one.
func (e *Env) PodSpec(claims ...string) corev1.PodSpec {
	spec := corev1.PodSpec{
		Containers: []corev1.Container{{
			Name:  "app",
			Image: "registry.example/app:1",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("100m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			}},
		}},
		TerminationGracePeriodSeconds: ptr.To(int64(30)),
	}
	for _, c := range claims {
		spec.Volumes = append(spec.Volumes, corev1.Volume{
			Name:         c,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}},
		})
		spec.Containers[0].VolumeMounts = append(spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: c, MountPath: "/data/" + c})
	}
	if e.Pool != "" {
		spec.NodeSelector = map[string]string{LabelPool: e.Pool}
		spec.Tolerations = []corev1.Toleration{{Key: TaintPool, Operator: corev1.TolerationOpEqual, Value: e.Pool, Effect: corev1.TaintEffectNoSchedule}}
	}
	return spec
}

// Pod builds a bare pod; see PodSpec.
func (e *Env) Pod(name string, claims ...string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.Namespace, Labels: map[string]string{"app": name}},
		Spec:       e.PodSpec(claims...),
	}
}

// Deployment builds a RollingUpdate Deployment (Kubernetes defaults: 25%
// surge, 25% unavailable) whose pods are labelled app=<name>.
func (e *Env) Deployment(name string, replicas int32, claims ...string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.Namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       e.PodSpec(claims...),
			},
		},
	}
}

// Job builds a Job of one pod.
func (e *Env) Job(name string, claims ...string) *batchv1.Job {
	spec := e.PodSpec(claims...)
	spec.RestartPolicy = corev1.RestartPolicyNever
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.Namespace},
		Spec: batchv1.JobSpec{
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"job": name}}, Spec: spec},
		},
	}
}

// Create creates objects of the kinds the builders return, failing the
// test on error.
func (e *Env) Create(objs ...runtime.Object) {
	e.T.Helper()
	for _, obj := range objs {
		var err error
		switch o := obj.(type) {
		case *corev1.PersistentVolumeClaim:
			_, err = e.Client.CoreV1().PersistentVolumeClaims(o.Namespace).Create(e.Ctx, o, metav1.CreateOptions{})
		case *corev1.Pod:
			_, err = e.Client.CoreV1().Pods(o.Namespace).Create(e.Ctx, o, metav1.CreateOptions{})
		case *appsv1.Deployment:
			_, err = e.Client.AppsV1().Deployments(o.Namespace).Create(e.Ctx, o, metav1.CreateOptions{})
		case *appsv1.StatefulSet:
			_, err = e.Client.AppsV1().StatefulSets(o.Namespace).Create(e.Ctx, o, metav1.CreateOptions{})
		case *batchv1.Job:
			_, err = e.Client.BatchV1().Jobs(o.Namespace).Create(e.Ctx, o, metav1.CreateOptions{})
		case *storagev1.VolumeAttachment:
			_, err = e.Client.StorageV1().VolumeAttachments().Create(e.Ctx, o, metav1.CreateOptions{})
		default:
			e.T.Fatalf("simtest.Create: unsupported %T", obj)
		}
		if err != nil {
			e.T.Fatalf("create %T: %v", obj, err)
		}
	}
}

// Pods lists the namespace's pods matching a label selector ("" for all).
func (e *Env) Pods(selector string) []corev1.Pod {
	e.T.Helper()
	list, err := e.Client.CoreV1().Pods(e.Namespace).List(e.Ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		e.T.Fatalf("list pods: %v", err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	return list.Items
}

// Volume returns the PersistentVolume bound to claim, or an error.
func (e *Env) Volume(claim string) (*corev1.PersistentVolume, error) {
	c, err := e.Client.CoreV1().PersistentVolumeClaims(e.Namespace).Get(e.Ctx, claim, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if c.Spec.VolumeName == "" {
		return nil, fmt.Errorf("claim %s is %s, not bound", claim, c.Status.Phase)
	}
	return e.Client.CoreV1().PersistentVolumes().Get(e.Ctx, c.Spec.VolumeName, metav1.GetOptions{})
}

// AttachedTo lists the nodes whose VolumeAttachment for pv reports
// attached, sorted.
func (e *Env) AttachedTo(pv string) []string {
	e.T.Helper()
	vas, err := e.Client.StorageV1().VolumeAttachments().List(e.Ctx, metav1.ListOptions{})
	if err != nil {
		e.T.Fatalf("list volume attachments: %v", err)
	}
	var nodes []string
	for _, va := range vas.Items {
		if va.Spec.Source.PersistentVolumeName != nil && *va.Spec.Source.PersistentVolumeName == pv && va.Status.Attached {
			nodes = append(nodes, va.Spec.NodeName)
		}
	}
	sort.Strings(nodes)
	return nodes
}

// Events lists the messages of events in the test's namespace about the
// named object (any object if empty) with reason (any reason if empty),
// oldest first.
func (e *Env) Events(object, reason string) []string {
	e.T.Helper()
	return e.EventsIn(e.Namespace, object, reason)
}

// EventsIn is Events in another namespace: "default" holds the events of
// nodes.
func (e *Env) EventsIn(namespace, object, reason string) []string {
	e.T.Helper()
	sel := ""
	if object != "" {
		sel = fields.OneTermEqualSelector("involvedObject.name", object).String()
	}
	list, err := e.Client.CoreV1().Events(namespace).List(e.Ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		e.T.Fatalf("list events: %v", err)
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].CreationTimestamp.Before(&list.Items[j].CreationTimestamp) })
	var out []string
	for _, ev := range list.Items {
		if reason == "" || ev.Reason == reason {
			out = append(out, ev.Message)
		}
	}
	return out
}

// NodeReady returns the status of the node's Ready condition.
func (e *Env) NodeReady(name string) corev1.ConditionStatus {
	e.T.Helper()
	n, err := e.Client.CoreV1().Nodes().Get(e.Ctx, name, metav1.GetOptions{})
	if err != nil {
		e.T.Fatalf("get node %s: %v", name, err)
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return corev1.ConditionUnknown
}

// Annotate sets (or, with value "", removes) an annotation on a node.
func (e *Env) Annotate(node, key, value string) {
	e.T.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	if value == "" {
		patch = fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, key)
	}
	if _, err := e.Client.CoreV1().Nodes().Patch(e.Ctx, node, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		e.T.Fatalf("annotate node %s: %v", node, err)
	}
}

// dump logs the namespace's state for a failed test.
func (e *Env) dump() {
	var b strings.Builder
	fmt.Fprintf(&b, "state of namespace %s:\n", e.Namespace)
	if pods, err := e.Client.CoreV1().Pods(e.Namespace).List(e.Ctx, metav1.ListOptions{}); err == nil {
		for _, p := range pods.Items {
			fmt.Fprintf(&b, "  pod %s node=%q phase=%s reason=%q deleting=%v gates=%d held=%q pinned=%q\n", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.Reason, p.DeletionTimestamp != nil, len(p.Spec.SchedulingGates), p.Annotations["huddle.io/held"], p.Annotations["huddle.io/pinned-by"])
		}
	}
	if pvcs, err := e.Client.CoreV1().PersistentVolumeClaims(e.Namespace).List(e.Ctx, metav1.ListOptions{}); err == nil {
		for _, c := range pvcs.Items {
			fmt.Fprintf(&b, "  claim %s phase=%s volume=%s\n", c.Name, c.Status.Phase, c.Spec.VolumeName)
		}
	}
	if vas, err := e.Client.StorageV1().VolumeAttachments().List(e.Ctx, metav1.ListOptions{}); err == nil {
		for _, va := range vas.Items {
			msg := ""
			if va.Status.AttachError != nil {
				msg = va.Status.AttachError.Message
			}
			fmt.Fprintf(&b, "  volumeattachment %s pv=%s node=%s attached=%v deleting=%v err=%q\n", va.Name, ptr.Deref(va.Spec.Source.PersistentVolumeName, ""), va.Spec.NodeName, va.Status.Attached, va.DeletionTimestamp != nil, msg)
		}
	}
	if evs, err := e.Client.CoreV1().Events(e.Namespace).List(e.Ctx, metav1.ListOptions{}); err == nil {
		for _, ev := range evs.Items {
			fmt.Fprintf(&b, "  event %s/%s %s: %s\n", ev.InvolvedObject.Kind, ev.InvolvedObject.Name, ev.Reason, ev.Message)
		}
	}
	e.T.Log(b.String())
}

// Huddle returns the Huddle of a claim in the test's namespace.
func (e *Env) Huddle(claim string) (*huddlev1.Huddle, error) {
	h := &huddlev1.Huddle{}
	err := e.Typed.Get(e.Ctx, client.ObjectKey{Namespace: e.Namespace, Name: claim}, h)
	return h, err
}

// CreatePaced creates pods at rate per second, each in a request of its
// own sent on its tick whatever the earlier ones wait for, as a burst of
// controllers would; it returns once all are answered, with when each
// was sent. A create that fails fails the test.
func (e *Env) CreatePaced(pods []*corev1.Pod, rate float64) map[string]time.Time {
	sent := make(map[string]time.Time, len(pods))
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for _, pod := range pods {
		<-tick.C
		wg.Go(func() {
			at := time.Now()
			if _, err := e.Client.CoreV1().Pods(e.Namespace).Create(e.Ctx, pod, metav1.CreateOptions{}); err != nil {
				e.T.Errorf("create pod %s: %v", pod.Name, err)
			}
			mu.Lock()
			sent[pod.Name] = at
			mu.Unlock()
		})
	}
	wg.Wait()
	return sent
}
