package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"testing"
	"time"
	"unsafe"
	"weak"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

// trimmed replaces obj in place with what the informer cache holds of it
// under CacheOptions' transforms.
func trimmed(obj any) {
	opts := CacheOptions()
	t := opts.DefaultTransform
	for kind, by := range opts.ByObject {
		if reflect.TypeOf(kind) == reflect.TypeOf(obj) {
			t = by.Transform
		}
	}
	out, _ := t(obj)
	reflect.ValueOf(obj).Elem().Set(reflect.ValueOf(out).Elem())
}

// trimmedReads makes a fake client read as huddle's cache does: what it
// returns is trimmed, while it stores (and writes land on) the whole
// objects, as on the API server.
func trimmedReads() interceptor.Funcs {
	return interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := c.Get(ctx, key, obj, opts...); err != nil {
				return err
			}
			trimmed(obj)
			return nil
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := c.List(ctx, list, opts...); err != nil {
				return err
			}
			return apimeta.EachListItem(list, func(o k8sruntime.Object) error {
				trimmed(o)
				return nil
			})
		},
	}
}

// realisticTemplate is a pod template as real workloads carry them: an
// app container with image, env, probes and mounts, a native sidecar, a
// classic init container, config and token volumes besides the claim.
func realisticTemplate(claim string) corev1.PodTemplateSpec {
	res := func(cpu, mem string) corev1.ResourceRequirements {
		return corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem)},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(mem)},
		}
	}
	var env []corev1.EnvVar
	for i := range 30 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("SENTRY_SETTING_%d", i), Value: fmt.Sprintf("value-%d-with-some-length", i)})
	}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/_health/", Port: intstr.FromInt32(9000)}}, PeriodSeconds: 10}
	always := corev1.ContainerRestartPolicyAlways
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "sentry", "role": "web"}, Annotations: map[string]string{"checksum/config": "0123456789abcdef0123456789abcdef"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{
				{Name: "migrate", Image: "getsentry/sentry:24.1.0", Command: []string{"sentry", "upgrade", "--noinput"}, Env: env, Resources: res("500m", "1Gi")},
				{Name: "proxy", Image: "envoyproxy/envoy:v1.30", RestartPolicy: &always, Resources: res("100m", "128Mi"),
					Args: []string{"--config-path", "/etc/envoy/envoy.yaml"}, ReadinessProbe: probe},
			},
			Containers: []corev1.Container{{
				Name: "sentry-web", Image: "getsentry/sentry:24.1.0", Command: []string{"sentry", "run", "web"}, Env: env,
				Ports:          []corev1.ContainerPort{{Name: "http", ContainerPort: 9000, Protocol: corev1.ProtocolTCP}},
				Resources:      res("1", "2Gi"),
				LivenessProbe:  probe,
				ReadinessProbe: probe,
				VolumeMounts: []corev1.VolumeMount{{Name: "files", MountPath: "/var/lib/sentry/files"}, {Name: "config", MountPath: "/etc/sentry"},
					{Name: "kube-api-access", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}},
				TerminationMessagePath: "/dev/termination-log", ImagePullPolicy: corev1.PullIfNotPresent,
				SecurityContext: &corev1.SecurityContext{RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false)},
			}},
			Volumes: []corev1.Volume{
				{Name: "files", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}},
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "sentry"}}}},
				{Name: "kube-api-access", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
					{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token", ExpirationSeconds: ptr.To[int64](3607)}},
					{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "kube-root-ca.crt"}, Items: []corev1.KeyToPath{{Key: "ca.crt", Path: "ca.crt"}}}},
				}}}},
			},
			ServiceAccountName: "sentry", DNSPolicy: corev1.DNSClusterFirst, SchedulerName: "default-scheduler",
			NodeSelector: map[string]string{"kubernetes.io/os": "linux"},
			Tolerations: []corev1.Toleration{
				{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "sentry", Effect: corev1.TaintEffectNoSchedule},
				{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)},
			},
			Affinity: &corev1.Affinity{
				NodeAffinity: &corev1.NodeAffinity{
					RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
						MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}},
					}}},
					PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{Weight: 10, Preference: corev1.NodeSelectorTerm{
						MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "node.kubernetes.io/instance-type", Operator: corev1.NodeSelectorOpIn, Values: []string{"m6i.xlarge"}}},
					}}},
				},
				PodAntiAffinity: &corev1.PodAntiAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{Weight: 1, PodAffinityTerm: corev1.PodAffinityTerm{
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}}, TopologyKey: corev1.LabelHostname,
				}}}},
			},
			Overhead: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")},
		},
	}
}

// realisticPod is a member made from realisticTemplate by a ReplicaSet
// of a Deployment, as the API server stores it once it runs (or waits).
func realisticPod(name, node, claim string, gated bool) *corev1.Pod {
	t := realisticTemplate(claim)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: name, UID: types.UID("uid-" + name), ResourceVersion: "1",
			CreationTimestamp: metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
			Labels:            map[string]string{"app": "sentry", "role": "web", "pod-template-hash": "7c9f8d6b5"},
			Annotations: map[string]string{
				"checksum/config":            "0123456789abcdef0123456789abcdef",
				"kubectl.kubernetes.io/note": "a user's own annotation",
				"sidecar.istio.io/status":    `{"initContainers":["istio-init"],"containers":["istio-proxy"],"volumes":["istio-envoy","istio-data","istio-podinfo","istio-token","istiod-ca-cert"]}`,
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7c9f8d6b5", UID: "uid-rs", Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "kube-controller-manager", APIVersion: "v1", Operation: metav1.ManagedFieldsOperationUpdate, FieldsType: "FieldsV1", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:labels":{}}}`)}}},
		},
		Spec: t.Spec,
	}
	p.Spec.NodeName = node
	if gated {
		p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/quota"}, {Name: placement.Gate}}
		p.Annotations[placement.AnnotationHeld] = "waiting for the first member"
		p.Annotations[placement.AnnotationHeldFor] = placement.WaitsOnAnyNode
		p.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: corev1.PodReasonSchedulingGated, Message: "Scheduling is blocked due to non-empty scheduling gates"}}}
		return p
	}
	since := metav1.NewTime(time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC))
	p.Annotations[placement.AnnotationPinnedBy] = "claim " + gatherNS + "/" + claim + " home " + node
	p.Annotations[AnnotationRepair] = "away from home"
	p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields = []corev1.NodeSelectorRequirement{
		{Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, HostIP: "10.0.1.12", PodIP: "10.0.1.77", PodIPs: []corev1.PodIP{{IP: "10.0.1.77"}}, QOSClass: corev1.PodQOSBurstable, StartTime: &since,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: since},
			{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: since},
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: since},
			{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: since},
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: since},
		},
		ContainerStatuses: []corev1.ContainerStatus{{Name: "sentry-web", Ready: true, Image: "docker.io/getsentry/sentry:24.1.0", ImageID: "docker.io/getsentry/sentry@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
			ContainerID: "containerd://0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: since}}}},
		InitContainerStatuses: []corev1.ContainerStatus{{Name: "migrate", Image: "docker.io/getsentry/sentry:24.1.0",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", StartedAt: since, FinishedAt: since}}}},
	}
	return p
}

// realisticOwners are the Deployment and ReplicaSet of realisticPod.
func realisticOwners(claim string) []client.Object {
	big := map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(must(json.Marshal(realisticTemplate(claim)))), "deployment.kubernetes.io/revision": "3"}
	surge := intstr.FromInt32(2)
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: "web", UID: "uid-deploy", Annotations: big, Labels: map[string]string{"app": "sentry"}},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "sentry"}}, Template: realisticTemplate(claim),
			Strategy: appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType, RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: &surge}}},
		Status: appsv1.DeploymentStatus{Replicas: 3, ReadyReplicas: 3}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: gatherNS, Name: "web-7c9f8d6b5", UID: "uid-rs", Annotations: big,
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "uid-deploy", Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](3), Template: realisticTemplate(claim)}}
	return []client.Object{d, rs}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func jsonSize(t *testing.T, v any) int {
	t.Helper()
	return len(must(json.Marshal(v)))
}

// TestTrimPodKeepsWhatDecisionsRead gathers a claim whose members are
// realistic pods of a realistic Deployment once from whole objects and
// once through the trimmed cache: placement must see the same claim
// (members, their requests, constraints, pins, gates, owners and demand),
// the status controller the same members, the indexes the same keys.
// It fails when a trim drops a field a decision reads. The fields huddle
// never reads must be gone.
func TestTrimPodKeepsWhatDecisionsRead(t *testing.T) {
	objs := append(sharedClaim("data"), realisticOwners("data")...)
	running := realisticPod("web-0", "n1", "data", false)
	gated := realisticPod("web-1", "", "data", true)
	unschedulable := realisticPod("web-2", "", "data", false)
	unschedulable.Spec.NodeName = ""
	unschedulable.Status = corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
		Reason: corev1.PodReasonUnschedulable, Message: "0/3 nodes are available: 3 Insufficient cpu.", LastTransitionTime: metav1.NewTime(time.Date(2026, 1, 1, 0, 2, 0, 0, time.UTC))}},
		NominatedNodeName: "n2"} // a preemption's
	terminating := realisticPod("web-3", "n2", "data", false)
	terminating.DeletionTimestamp, terminating.DeletionGracePeriodSeconds, terminating.Finalizers = &metav1.Time{Time: time.Date(2026, 1, 1, 0, 3, 0, 0, time.UTC)}, ptr.To[int64](30), []string{"example.com/keep"}
	terminating.Status.ContainerStatuses[0].State = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: "back-off 5m0s restarting failed container"}}
	pods := []*corev1.Pod{running, gated, unschedulable, terminating}
	for _, p := range pods {
		objs = append(objs, p.DeepCopy())
	}

	gather := func(trim bool) *ClaimFacts {
		b := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
			WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
			WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV)
		if trim {
			b = b.WithInterceptorFuncs(trimmedReads())
		}
		recreating, _ := RecreatingOwners(nil)
		g := &Gatherer{Reader: b.Build(), Scope: scope.Scope{ClusterWide: true}, Cluster: NewCluster(), Clock: clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC)), Recreating: recreating}
		f, err := g.Claim(context.Background(), gatherNS, "data")
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	whole, cut := gather(false), gather(true)
	if len(whole.Members) != len(pods) || whole.Owners["Deployment/web"].MaxPods != 5 {
		t.Fatalf("the fixture is wrong: %d members, owners %+v", len(whole.Members), whole.Owners)
	}
	if !reflect.DeepEqual(whole.Claim, cut.Claim) {
		t.Errorf("placement sees the claim differently through the trimmed cache:\nwhole   %+v\ntrimmed %+v", whole.Claim, cut.Claim)
	}
	for _, home := range []string{"n1", ""} {
		wm, wc, wr := members(whole.Pods, home)
		cm, cc, cr := members(cut.Pods, home)
		if !reflect.DeepEqual(wm, cm) || wc != cc || wr != cr {
			t.Errorf("Huddle status members differ:\nwhole   %+v\ntrimmed %+v", wm, cm)
		}
	}
	for i, p := range whole.Pods {
		c := cut.Pods[i]
		checks := map[string][2]any{
			"claims index":   {PodClaimKeys(p), PodClaimKeys(c)},
			"node index":     {podNode(p), podNode(c)},
			"gated":          {placement.HasGate(p), placement.HasGate(c)},
			"held-for":       {p.Annotations[placement.AnnotationHeldFor], c.Annotations[placement.AnnotationHeldFor]},
			"requests":       {Requests(p), Requests(c)},
			"labels":         {p.Labels, c.Labels},
			"ready":          {podReady(p), podReady(c)},
			"owner":          {ownerKind(p), ownerKind(c)},
			"finalizers":     {p.Finalizers, c.Finalizers},
			"grace":          {p.DeletionGracePeriodSeconds, c.DeletionGracePeriodSeconds},
			"terminating":    {nodeOfTerminatingPod(context.Background(), p), nodeOfTerminatingPod(context.Background(), c)},
			"uid and rv":     {[2]string{string(p.UID), p.ResourceVersion}, [2]string{string(c.UID), c.ResourceVersion}},
			"gates (whole)":  {p.Spec.SchedulingGates, c.Spec.SchedulingGates},
			"required terms": {p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution, c.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution},
		}
		for what, v := range checks {
			if !reflect.DeepEqual(v[0], v[1]) {
				t.Errorf("%s: %s %v through the trimmed cache, %v from the whole pod", p.Name, what, v[1], v[0])
			}
		}
	}

	// What is never read is gone, and the pod is a fraction of its size.
	p := must(TrimPod(running.DeepCopy())).(*corev1.Pod)
	c := p.Spec.Containers[0]
	if c.Image != "" || c.Env != nil || c.LivenessProbe != nil || c.VolumeMounts != nil || c.Command != nil {
		t.Errorf("container kept unused fields: %+v", c)
	}
	if len(p.Spec.Volumes) != 1 || p.Spec.Volumes[0].PersistentVolumeClaim == nil {
		t.Errorf("volumes %+v, want the claim only", p.Spec.Volumes)
	}
	if want := map[string]string{placement.AnnotationPinnedBy: running.Annotations[placement.AnnotationPinnedBy], AnnotationRepair: "away from home"}; !reflect.DeepEqual(p.Annotations, want) {
		t.Errorf("annotations %v, want huddle's only", p.Annotations)
	}
	// A running pod waits for nothing: no container status, and of its
	// conditions only Ready's status.
	if p.ManagedFields != nil || p.Status.PodIPs != nil || p.Status.InitContainerStatuses != nil || p.Status.ContainerStatuses != nil ||
		!reflect.DeepEqual(p.Status.Conditions, []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}) || p.Spec.Affinity.PodAntiAffinity != nil || p.Spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution != nil {
		t.Errorf("trimmed pod kept unused fields: %+v", p)
	}
	if whole, cut := jsonSize(t, running), jsonSize(t, p); cut*4 > whole {
		t.Errorf("trimmed pod is %d bytes of JSON, whole %d: want at most a quarter", cut, whole)
	}
	if again := must(TrimPod(p.DeepCopy())); !reflect.DeepEqual(again, p) {
		t.Errorf("trimming twice changes the pod:\nonce  %+v\ntwice %+v", p, again)
	}
	other := &corev1.Service{}
	if must(TrimPod(other)) != any(other) {
		t.Error("TrimPod changed an object that is not a pod")
	}
}

// realisticNode is a Node as a kubelet on EKS reports it.
func realisticNode(name string) *corev1.Node {
	n := newNode(name).label("topology.kubernetes.io/zone", "eu-west-1a").label("node.kubernetes.io/instance-type", "m6i.xlarge").
		taint("dedicated", "sentry", corev1.TaintEffectNoSchedule).annotate("alpha.kubernetes.io/provided-node-ip", "10.0.1.12").
		annotate("volumes.kubernetes.io/controller-managed-attach-detach", "true").Node
	n.ResourceVersion = "7"
	n.Spec.ProviderID = "aws:///eu-west-1a/i-0123456789abcdef0"
	n.Status.Capacity = n.Status.Allocatable.DeepCopy()
	n.Status.Conditions = append(n.Status.Conditions,
		corev1.NodeCondition{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", Message: "kubelet has sufficient memory available"},
		corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", Message: "kubelet has no disk pressure"})
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.1.12"}, {Type: corev1.NodeHostName, Address: "ip-10-0-1-12.eu-west-1.compute.internal"}}
	n.Status.NodeInfo = corev1.NodeSystemInfo{MachineID: "ec2c0ffee", KernelVersion: "6.1.119-129.201.amzn2023.x86_64", OSImage: "Amazon Linux 2023", ContainerRuntimeVersion: "containerd://1.7.25", KubeletVersion: "v1.36.0"}
	for i := range 40 {
		n.Status.Images = append(n.Status.Images, corev1.ContainerImage{Names: []string{fmt.Sprintf("registry.example.com/team/image-%d@sha256:%064d", i, i), fmt.Sprintf("registry.example.com/team/image-%d:v1.%d", i, i)}, SizeBytes: 123456789})
	}
	n.Status.VolumesInUse = []corev1.UniqueVolumeName{"kubernetes.io/csi/ebs.csi.aws.com^vol-0123"}
	return n
}

// TestTrimNodeKeepsWhatDecisionsRead: placement's view of a node, and the
// predicates and failover's reading of it, are the same through the
// trimmed cache; images and system info are gone.
func TestTrimNodeKeepsWhatDecisionsRead(t *testing.T) {
	for _, n := range []*corev1.Node{realisticNode("n1"), func() *corev1.Node {
		n := realisticNode("n2")
		n.Status.Conditions[0].Status = corev1.ConditionUnknown
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: TaintShutdown, Effect: corev1.TaintEffectNoSchedule}, corev1.Taint{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule})
		n.Annotations[AnnotationFenced] = "2026-01-01T00:00:00Z"
		return n
	}()} {
		c := must(TrimNode(n.DeepCopy())).(*corev1.Node)
		whole, cut := NewCluster(), NewCluster()
		whole.setNode(n)
		cut.setNode(c)
		if !reflect.DeepEqual(view(whole), view(cut)) {
			t.Errorf("%s: placement sees\n%+v\nthrough the trimmed cache, want\n%+v", n.Name, view(cut), view(whole))
		}
		checks := map[string][2]any{
			"ready":         {nodeReady(n), nodeReady(c)},
			"instance gone": {instanceGone(n), instanceGone(c)},
			"removal":       {markedForRemoval(n), markedForRemoval(c)},
			"fenced":        {n.Annotations[AnnotationFenced], c.Annotations[AnnotationFenced]},
			"taints":        {n.Spec.Taints, c.Spec.Taints},
			"rv":            {n.ResourceVersion, c.ResourceVersion},
		}
		for what, v := range checks {
			if !reflect.DeepEqual(v[0], v[1]) {
				t.Errorf("%s: %s %v through the trimmed cache, %v whole", n.Name, what, v[1], v[0])
			}
		}
		for _, changed := range []func(*corev1.Node){
			func(n *corev1.Node) {
				n.Status.Conditions[0].Status = map[bool]corev1.ConditionStatus{true: corev1.ConditionFalse, false: corev1.ConditionTrue}[nodeReady(n)]
			},
			func(n *corev1.Node) { n.Spec.Unschedulable = true },
			func(n *corev1.Node) { n.Labels["zone"] = "b" },
			func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("3") },
		} {
			after := n.DeepCopy()
			changed(after)
			e := event.UpdateEvent{ObjectOld: c, ObjectNew: must(TrimNode(after)).(*corev1.Node)}
			if !nodeSchedulingChanged.Update(e) {
				t.Errorf("%s: a change that matters is filtered through the trimmed cache", n.Name)
			}
		}
		if c.Status.Images != nil || c.Status.NodeInfo.KernelVersion != "" || c.Status.Addresses != nil || c.Status.VolumesInUse != nil ||
			c.Status.Capacity != nil || len(c.Status.Conditions) != 1 || len(c.Annotations) > 1 {
			t.Errorf("%s: trimmed node kept unused fields: %+v", n.Name, c)
		}
	}
}

// TestTrimWorkloadKeepsOwnerDemand: each owner kind counts the same
// members and requests from its trimmed copy.
func TestTrimWorkloadKeepsOwnerDemand(t *testing.T) {
	tmpl := realisticTemplate("data")
	// Limits only, overhead and pod-level resources: what the pod
	// requests is still what the trimmed template says.
	limited := realisticTemplate("data")
	limited.Spec.Containers[0].Resources = corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("3"), corev1.ResourceMemory: resource.MustParse("5Gi")}}
	limited.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m")}
	pooled := realisticTemplate("data")
	pooled.Spec.Resources = &corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8")}}
	for _, obj := range append(realisticOwners("data"),
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2), Template: tmpl}},
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "backup"}, Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](4), Template: tmpl}},
		&batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "limited"}, Spec: batchv1.JobSpec{Parallelism: ptr.To[int32](2), Template: limited}},
		&appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "pooled"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Template: pooled}},
	) {
		c := must(TrimWorkload(obj.DeepCopyObject())).(client.Object)
		for _, claim := range []string{"data", "other"} {
			wk, wo, wok := OwnerFor(obj, claim)
			ck, co, cok := OwnerFor(c, claim)
			if wk != ck || !reflect.DeepEqual(wo, co) || wok != cok {
				t.Errorf("%s for %s: trimmed owner %s %+v, whole %s %+v", obj.GetName(), claim, ck, co, wk, wo)
			}
		}
		if !reflect.DeepEqual(metav1.GetControllerOf(obj), metav1.GetControllerOf(c)) {
			t.Errorf("%s: controller %v, whole %v", obj.GetName(), metav1.GetControllerOf(c), metav1.GetControllerOf(obj))
		}
		if len(c.GetAnnotations()) != 0 || len(c.GetLabels()) != 0 {
			t.Errorf("%s: trimmed workload kept labels or annotations", obj.GetName())
		}
		if again := must(TrimWorkload(c.DeepCopyObject())); !reflect.DeepEqual(again, c) {
			t.Errorf("%s: trimming twice changes the workload", obj.GetName())
		}
		if whole, cut := jsonSize(t, obj), jsonSize(t, c); cut*5 > whole {
			t.Errorf("%s: trimmed workload is %d bytes of JSON, whole %d: want at most a fifth", obj.GetName(), cut, whole)
		}
	}
}

// TestPinOverTrimmedPodKeepsUsersFields: the placer decides from the
// trimmed cache and pins a gated member home; the pod the server keeps
// must still have everything the trim dropped (containers, volumes, the
// user's preferred affinity and anti-affinity, annotations, the other
// controller's gate) and the user's own required term, narrowed.
func TestPinOverTrimmedPodKeepsUsersFields(t *testing.T) {
	home := realisticNode("n1")
	home.Labels["zone"] = "a"
	objs := append(sharedClaim("data"), realisticOwners("data")...)
	want := realisticPod("web-1", "", "data", true)
	objs = append(objs, realisticPod("web-0", "n1", "data", false), want.DeepCopy(), home)
	store := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objs...).
		WithIndex(&corev1.Pod{}, IndexPodClaims, PodClaimKeys).
		WithIndex(&storagev1.VolumeAttachment{}, IndexAttachmentPV, AttachmentPV).Build()
	c := interceptor.NewClient(store, trimmedReads())
	cluster := NewCluster()
	cluster.setNode(must(TrimNode(home.DeepCopy())))
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 5, 0, 0, time.UTC))
	g := &Gatherer{Reader: c, Scope: scope.Scope{ClusterWide: true}, Cluster: cluster, Clock: clk}
	placer := &Placer{Client: c, APIReader: store, Gatherer: g, Recorder: record.NewFakeRecorder(10), Clock: clk, MissingClaimGrace: time.Minute, MaxCandidates: 16}
	if _, err := placer.Reconcile(context.Background(), ctrl.Request{NamespacedName: client.ObjectKeyFromObject(want)}); err != nil {
		t.Fatal(err)
	}

	got := &corev1.Pod{}
	if err := store.Get(context.Background(), client.ObjectKeyFromObject(want), got); err != nil {
		t.Fatal(err)
	}
	if got.Annotations[placement.AnnotationPinnedBy] != "claim "+gatherNS+"/data home n1" {
		t.Fatalf("not pinned home: annotations %v", got.Annotations)
	}
	// What the pin changes.
	want.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/quota"}}
	want.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchFields = []corev1.NodeSelectorRequirement{
		{Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{"n1"}}}
	delete(want.Annotations, placement.AnnotationHeld)
	delete(want.Annotations, placement.AnnotationHeldFor)
	want.Annotations[placement.AnnotationPinnedBy] = got.Annotations[placement.AnnotationPinnedBy]
	if !reflect.DeepEqual(got.Spec, want.Spec) {
		t.Errorf("the server's pod spec after the pin:\n%+v\nwant\n%+v", got.Spec, want.Spec)
	}
	if !reflect.DeepEqual(got.Annotations, want.Annotations) || !reflect.DeepEqual(got.Labels, want.Labels) || !reflect.DeepEqual(got.OwnerReferences, want.OwnerReferences) {
		t.Errorf("the server's pod metadata after the pin: annotations %v labels %v; want %v %v", got.Annotations, got.Labels, want.Annotations, want.Labels)
	}
	if !reflect.DeepEqual(got.Status, want.Status) {
		t.Errorf("the server's pod status changed: %+v", got.Status)
	}
}

// TestFenceOverTrimmedNodeKeepsTheNode: failover fences and unfences a
// node it reads trimmed; the node the server keeps loses nothing but
// huddle's own taint and annotation.
func TestFenceOverTrimmedNodeKeepsTheNode(t *testing.T) {
	n := realisticNode("n1")
	n.Status.Conditions[0].Status = corev1.ConditionFalse
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: TaintShutdown, Effect: corev1.TaintEffectNoSchedule})
	w := newFencerWorld(t, n.DeepCopy())
	stored := func() *corev1.Node {
		got := &corev1.Node{}
		if err := w.store.Get(context.Background(), client.ObjectKey{Name: "n1"}, got); err != nil {
			t.Fatal(err)
		}
		return got
	}
	w.reconcile(t, "n1")
	got := stored()
	if len(outOfService(got)) != 1 || got.Annotations[AnnotationFenced] == "" {
		t.Fatalf("not fenced: taints %v annotations %v", got.Spec.Taints, got.Annotations)
	}
	if !slices.Equal(got.Spec.Taints[:len(n.Spec.Taints)], n.Spec.Taints) || !reflect.DeepEqual(got.Status, n.Status) || got.Annotations["alpha.kubernetes.io/provided-node-ip"] == "" || got.Spec.ProviderID != n.Spec.ProviderID {
		t.Errorf("fencing lost what the trim dropped: %+v", got)
	}
	w.setReady(t, "n1", true)
	w.reconcile(t, "n1")
	got = stored()
	n.Spec.Taints = n.Spec.Taints[:len(n.Spec.Taints)-1] // the shutdown taint, gone with the cloud's mark
	if !reflect.DeepEqual(got.Spec, n.Spec) || !reflect.DeepEqual(got.Annotations, n.Annotations) || !reflect.DeepEqual(got.Labels, n.Labels) || len(got.Status.Images) != len(n.Status.Images) {
		t.Errorf("unfenced node:\n%+v\nwant\n%+v", got, n)
	}
}

// TestTrimPlainPod: a pod that mounts no claim (no huddle's member) is
// cached with what its node's usage and failover read: identity, node,
// phase, deletion, and its requests as the scheduler counts them (init
// containers, sidecars, overhead); nothing else.
func TestTrimPlainPod(t *testing.T) {
	p := realisticPod("web-0", "n1", "data", false)
	p.Spec.Volumes = slices.DeleteFunc(p.Spec.Volumes, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil || v.Ephemeral != nil })
	p.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m")}
	p.DeletionTimestamp = &metav1.Time{Time: time.Date(2026, 1, 1, 0, 3, 0, 0, time.UTC)}
	got := must(TrimPod(p.DeepCopy())).(*corev1.Pod)
	if !reflect.DeepEqual(Requests(got), Requests(p)) {
		t.Errorf("requests %+v, want %+v as the whole pod's", Requests(got), Requests(p))
	}
	if got.Name != p.Name || got.Namespace != p.Namespace || got.UID != p.UID || got.ResourceVersion != p.ResourceVersion ||
		got.Spec.NodeName != "n1" || got.Status.Phase != corev1.PodRunning || !got.DeletionTimestamp.Equal(p.DeletionTimestamp) {
		t.Errorf("lost what node usage or failover reads: %+v", got)
	}
	if got.Labels != nil || got.Annotations != nil || got.OwnerReferences != nil || got.Spec.Tolerations != nil || got.Spec.Affinity != nil ||
		got.Spec.NodeSelector != nil || got.Spec.Volumes != nil || got.Status.Conditions != nil || got.Status.ContainerStatuses != nil {
		t.Errorf("a pod of no huddle kept what is never read of it: %+v", got)
	}
	if again := must(TrimPod(got.DeepCopy())); !reflect.DeepEqual(again, got) {
		t.Errorf("trimming twice changes the pod:\nonce  %+v\ntwice %+v", got, again)
	}
	member := must(TrimPod(realisticPod("web-1", "n1", "data", false))).(*corev1.Pod)
	if member.Labels == nil || member.OwnerReferences == nil || member.Spec.Volumes == nil {
		t.Errorf("a member was trimmed as a pod of no huddle: %+v", member)
	}
}

// Pods that request the same share one cached RequestsContainer; a
// container no cached pod holds is collected and forgotten.
func TestTrimmedPodsShareTheirRequests(t *testing.T) {
	plain := func(name, cpu string) *corev1.Pod {
		p := realisticPod(name, "n1", "data", false)
		p.Spec.Volumes = nil
		p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse(cpu)
		return must(TrimPod(p)).(*corev1.Pod)
	}
	a, b := plain("a", "1"), plain("b", "1000m")
	member := must(TrimPod(realisticPod("c", "n1", "data", false))).(*corev1.Pod)
	other := plain("d", "2")
	if &a.Spec.Containers[0] != &b.Spec.Containers[0] || &a.Spec.Containers[0] != &member.Spec.Containers[0] {
		t.Errorf("pods that request the same hold their own containers")
	}
	if &a.Spec.Containers[0] == &other.Spec.Containers[0] {
		t.Fatalf("pods that request 1 and 2 CPUs share a container")
	}
	if got, want := Requests(other).MilliCPU, Requests(a).MilliCPU+1000; got != want {
		t.Errorf("the pod that requests 2 CPUs (plus the 10m overhead and sidecar) counts %dm, want %dm", got, want)
	}
	key := requestsKey(other.Spec.Containers[0].Resources.Requests)
	other = nil
	for range 100 {
		runtime.GC()
		requestsContainers.mu.Lock()
		_, kept := requestsContainers.byKey[key]
		requestsContainers.mu.Unlock()
		if !kept {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	requestsContainers.mu.Lock()
	_, kept := requestsContainers.byKey[key]
	_, shared := requestsContainers.byKey[requestsKey(a.Spec.Containers[0].Resources.Requests)]
	requestsContainers.mu.Unlock()
	if kept {
		t.Errorf("the container of requests no pod holds any more is still in the table")
	}
	if !shared {
		t.Errorf("the container pods still hold was dropped from the table")
	}
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	runtime.KeepAlive(member)
}

// A cleanup that comes late, for a copy whose key has a newer one
// already, leaves the newer one in the table.
func TestSharedForgetsOnlyTheCollected(t *testing.T) {
	s := newShared[corev1.Container]()
	build := func() []corev1.Container { return []corev1.Container{{Name: RequestsContainer}} }
	old := weak.Make(&corev1.Container{})
	held := s.of("k", build)
	s.forget(sharedGone[corev1.Container]{key: "k", first: old})
	if again := s.of("k", build); &again[0] != &held[0] {
		t.Errorf("a late cleanup of an older copy dropped the one objects hold")
	}
	s.forget(sharedGone[corev1.Container]{key: "k", first: s.byKey["k"].first})
	if _, kept := s.byKey["k"]; kept {
		t.Errorf("the cleanup of the copy in the table left its entry")
	}
	runtime.KeepAlive(held)
}

// Members of one huddle share what they repeat in the cache: their
// claims, owners, tolerations, node affinity once pinned to the same
// home, and the strings of their namespace, node and labels; what
// differs is not shared, and each pod reads as it did.
func TestTrimmedMembersShareWhatTheyRepeat(t *testing.T) {
	member := func(name, node string) (*corev1.Pod, *corev1.Pod) {
		// Decoded, so that no two pods share memory, as from the wire.
		p := must(TrimPod(roundTrip(t, realisticPod(name, node, "data", false)))).(*corev1.Pod)
		return p, realisticPod(name, node, "data", false)
	}
	a, wantA := member("a", "n1")
	b, _ := member("b", "n1")
	c, wantC := member("c", "n2")
	// Members that differ from a in one field each: another claim, the
	// claim read-only, a shorter toleration of unreachable nodes.
	d, wantD := member("d", "n1")
	d = must(TrimPod(roundTrip(t, func() *corev1.Pod {
		p := wantD
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				v.PersistentVolumeClaim.ClaimName = "other"
			}
		}
		return p
	}()))).(*corev1.Pod)
	e, wantE := member("e", "n1")
	e = must(TrimPod(roundTrip(t, func() *corev1.Pod {
		p := wantE
		for _, v := range p.Spec.Volumes {
			if v.PersistentVolumeClaim != nil {
				v.PersistentVolumeClaim.ReadOnly = true
			}
		}
		return p
	}()))).(*corev1.Pod)
	f, wantF := member("f", "n1")
	f = must(TrimPod(roundTrip(t, func() *corev1.Pod {
		p := wantF
		p.Spec.Tolerations[len(p.Spec.Tolerations)-1].TolerationSeconds = ptr.To[int64](30)
		return p
	}()))).(*corev1.Pod)
	if &a.Spec.Volumes[0] != &b.Spec.Volumes[0] || &a.OwnerReferences[0] != &b.OwnerReferences[0] || &a.Spec.Tolerations[0] != &b.Spec.Tolerations[0] {
		t.Errorf("members with the same claims, owner and tolerations hold their own copies")
	}
	if a.Spec.Affinity != b.Spec.Affinity {
		t.Errorf("members pinned to the same home hold their own node affinity")
	}
	if a.Spec.Affinity == c.Spec.Affinity {
		t.Fatalf("members pinned to different homes share one node affinity")
	}
	for _, s := range [][2]string{{a.Namespace, b.Namespace}, {a.Spec.NodeName, b.Spec.NodeName}, {a.Labels["app"], b.Labels["app"]}} {
		if unsafe.StringData(s[0]) != unsafe.StringData(s[1]) {
			t.Errorf("%q is held twice", s[0])
		}
	}
	for _, tc := range []struct{ got, want *corev1.Pod }{{a, wantA}, {c, wantC}, {d, wantD}, {e, wantE}, {f, wantF}} {
		w := tc.want
		if !reflect.DeepEqual(tc.got.Spec.Affinity.NodeAffinity, &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: w.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution}) ||
			!reflect.DeepEqual(tc.got.Spec.Tolerations, w.Spec.Tolerations) || !reflect.DeepEqual(tc.got.OwnerReferences, w.OwnerReferences) ||
			!reflect.DeepEqual(tc.got.Labels, w.Labels) || tc.got.Spec.NodeName != w.Spec.NodeName || tc.got.Namespace != w.Namespace ||
			!reflect.DeepEqual(pvcSources(tc.got), pvcSources(w)) {
			t.Errorf("%s reads differently through the shared copies: %+v", w.Name, tc.got)
		}
	}
}

// pvcSources are p's claim volumes by name.
func pvcSources(p *corev1.Pod) map[string]corev1.PersistentVolumeClaimVolumeSource {
	out := map[string]corev1.PersistentVolumeClaimVolumeSource{}
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			out[v.Name] = *v.PersistentVolumeClaim
		}
	}
	return out
}

// roundTrip returns a copy of p decoded from its protobuf encoding.
func roundTrip(t *testing.T, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out := &corev1.Pod{}
	if err := out.Unmarshal(must(p.Marshal())); err != nil {
		t.Fatal(err)
	}
	return out
}

// Whether a claim is opted in and shared, where its volume may attach,
// the volume's claim and the attachments' nodes read the same through
// the trimmed cache; a Huddle is whole but for its managedFields.
func TestTrimClaimsVolumesAttachmentsKeepWhatDecisionsRead(t *testing.T) {
	trimmed := func(trim func(any) (any, error), obj k8sruntime.Object) any {
		out := must(trim(obj)).(k8sruntime.Object)
		if again := must(trim(out.DeepCopyObject())); !reflect.DeepEqual(again, out) {
			t.Errorf("trimming twice changes a %T", obj)
		}
		return out
	}
	optedIn, rwx, rwop := realisticClaim(), realisticClaim(), realisticClaim()
	optedIn.Annotations[scope.AnnotationShare] = "true"
	rwx.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	rwop.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
	inTree, nfs, rwxVolume := realisticVolume(), realisticVolume(), realisticVolume()
	inTree.Spec.CSI, inTree.Spec.AWSElasticBlockStore = nil, &corev1.AWSElasticBlockStoreVolumeSource{VolumeID: "vol-1", FSType: "ext4"}
	nfs.Spec.CSI, nfs.Spec.NFS = nil, &corev1.NFSVolumeSource{Server: "nfs.example.com", Path: "/data"}
	rwxVolume.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
	noAttach := &storagev1.CSIDriver{Spec: storagev1.CSIDriverSpec{AttachRequired: ptr.To(false)}}
	class := &storagev1.StorageClass{Provisioner: "ebs.csi.aws.com"}
	for _, claim := range []*corev1.PersistentVolumeClaim{realisticClaim(), optedIn, rwx, rwop} {
		c := trimmed(TrimClaim, claim.DeepCopy()).(*corev1.PersistentVolumeClaim)
		for _, s := range []scope.Scope{{}, {ClusterWide: true}} {
			if got, want := s.OptedIn(nil, gatherNS, c), s.OptedIn(nil, gatherNS, claim); got != want {
				t.Errorf("claim %v, %+v: opted in %t through the cache, want %t", claim.Annotations, s, got, want)
			}
		}
		if c.Name != claim.Name || c.Namespace != claim.Namespace || c.UID != claim.UID || c.Spec.VolumeName != claim.Spec.VolumeName ||
			*c.Spec.StorageClassName != *claim.Spec.StorageClassName {
			t.Errorf("lost what gathering reads of a claim: %+v", c)
		}
		for _, pv := range []*corev1.PersistentVolume{nil, realisticVolume(), inTree, nfs, rwxVolume} {
			for _, driver := range []*storagev1.CSIDriver{nil, noAttach} {
				whole := scope.Volume{Claim: claim, PV: pv, Driver: driver, Class: class}
				cut := scope.Volume{Claim: c, Driver: driver, Class: class}
				if pv != nil {
					cut.PV = trimmed(TrimVolume, pv.DeepCopy()).(*corev1.PersistentVolume)
				}
				gotShared, gotWhy := scope.Shared(cut)
				wantShared, wantWhy := scope.Shared(whole)
				if gotShared != wantShared || gotWhy != wantWhy {
					t.Errorf("claim %v, volume %+v: shared %t (%s) through the cache, want %t (%s)", claim.Spec.AccessModes, pv, gotShared, gotWhy, wantShared, wantWhy)
				}
			}
		}
	}
	pv := realisticVolume()
	v := trimmed(TrimVolume, pv.DeepCopy()).(*corev1.PersistentVolume)
	if v.Name != pv.Name || v.UID != pv.UID || v.Spec.ClaimRef.Namespace != gatherNS || v.Spec.ClaimRef.Name != "data" ||
		!reflect.DeepEqual(v.Spec.NodeAffinity, pv.Spec.NodeAffinity) || v.Spec.CSI.Driver != pv.Spec.CSI.Driver {
		t.Errorf("lost what gathering and failover read of a volume: %+v", v)
	}
	if v.Spec.Capacity != nil || v.Spec.CSI.VolumeAttributes != nil || v.Annotations != nil || v.Finalizers != nil {
		t.Errorf("kept what is never read of a volume: %+v", v)
	}
	va := realisticAttachment()
	va.DeletionTimestamp = &metav1.Time{Time: time.Date(2026, 1, 1, 0, 3, 0, 0, time.UTC)}
	a := trimmed(TrimAttachment, va.DeepCopy()).(*storagev1.VolumeAttachment)
	if !reflect.DeepEqual(AttachmentPV(a), AttachmentPV(va)) || !reflect.DeepEqual(attachmentNode(a), attachmentNode(va)) ||
		a.Spec.Attacher != va.Spec.Attacher || a.Status.Attached != va.Status.Attached || !a.DeletionTimestamp.Equal(va.DeletionTimestamp) ||
		a.Name != va.Name || a.UID != va.UID {
		t.Errorf("lost what gathering, node usage and failover read of an attachment: %+v", a)
	}
	if a.Status.AttachmentMetadata != nil || a.Annotations != nil || a.Finalizers != nil {
		t.Errorf("kept what is never read of an attachment: %+v", a)
	}
	h := realisticHuddle()
	got := trimmed(ShareHuddle, h.DeepCopy()).(*huddlev1.Huddle)
	h.ManagedFields = nil
	if !reflect.DeepEqual(got, h) {
		t.Errorf("a Huddle changed in the cache (huddle updates them whole):\n got %+v\nwant %+v", got, h)
	}
	// Two Huddles at one home share its name and what they say alike,
	// not what names their claim.
	other := must(ShareHuddle(decodeHuddle(t, realisticHuddle()))).(*huddlev1.Huddle)
	got = must(ShareHuddle(decodeHuddle(t, realisticHuddle()))).(*huddlev1.Huddle)
	if unsafe.StringData(got.Status.Home) != unsafe.StringData(other.Status.Home) ||
		unsafe.StringData(got.Status.Conditions[2].Message) != unsafe.StringData(other.Status.Conditions[2].Message) {
		t.Errorf("two Huddles at one home hold their own copies of its name and of the Moving condition's message")
	}
	if unsafe.StringData(got.Status.Conditions[0].Message) == unsafe.StringData(other.Status.Conditions[0].Message) {
		t.Errorf("the Huddled condition's message, which names the claim, is shared")
	}
}

// decodeHuddle returns a copy of h decoded from JSON, as from the wire:
// no two copies share memory.
func decodeHuddle(t *testing.T, h *huddlev1.Huddle) *huddlev1.Huddle {
	t.Helper()
	out := &huddlev1.Huddle{}
	if err := json.Unmarshal(must(json.Marshal(h)), out); err != nil {
		t.Fatal(err)
	}
	return out
}
