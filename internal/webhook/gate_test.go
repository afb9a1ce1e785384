package webhook

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

func newGate(clusterWide bool, objs ...runtime.Object) *Gate {
	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	return &Gate{
		Reader:  fake.NewClientBuilder().WithScheme(scheme).WithRuntimeObjects(objs...).Build(),
		Scope:   scope.Scope{ClusterWide: clusterWide, Excluded: []string{"huddle-system"}},
		Decoder: admission.NewDecoder(scheme),
	}
}

func ns(name string, labels map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
}

func pvc(namespace, name string, annotations map[string]string) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name, Annotations: annotations}}
}

func podMounting(namespace string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "p"}}
	for _, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: c,
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

func request(t testing.TB, pod *corev1.Pod) admission.Request {
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Namespace: pod.Namespace, Object: runtime.RawExtension{Raw: raw},
	}}
}

func TestGate(t *testing.T) {
	optedIn := ns("shop", map[string]string{scope.LabelEnabled: "true"})
	plain := ns("plain", nil)
	objs := []runtime.Object{optedIn, plain, ns("kube-system", nil), ns("huddle-system", nil),
		pvc("shop", "data", nil), pvc("shop", "own", map[string]string{scope.AnnotationShare: "false"}),
		pvc("plain", "data", nil), pvc("plain", "shared", map[string]string{scope.AnnotationShare: "true"}),
		pvc("kube-system", "data", nil)}
	withGate := podMounting("shop", "data")
	withGate.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/other"}}
	bound := podMounting("shop", "data")
	bound.Spec.NodeName = "n1"
	for _, tc := range []struct {
		name        string
		clusterWide bool
		pod         *corev1.Pod
		gated       bool
		patch       string // part of the JSON patch
	}{
		{"opted-in namespace", false, podMounting("shop", "data"), true, `"path":"/spec/schedulingGates","value":[{"name":"huddle.io/placement"}]`},
		{"existing gates are kept", false, withGate, true, `"path":"/spec/schedulingGates/-","value":{"name":"huddle.io/placement"}`},
		{"claim opted out in an opted-in namespace", false, podMounting("shop", "own"), false, ""},
		{"namespace not opted in", false, podMounting("plain", "data"), false, ""},
		{"claim opted in by annotation", false, podMounting("plain", "shared"), true, ""},
		{"cluster-wide mode", true, podMounting("plain", "data"), true, ""},
		{"claim not created yet, cluster-wide", true, podMounting("plain", "later"), true, ""},
		{"kube-system, even cluster-wide", true, podMounting("kube-system", "data"), false, ""},
		{"huddle's own namespace", true, podMounting("huddle-system", "data"), false, ""},
		{"no claim", true, podMounting("plain"), false, ""},
		{"pod that names its node", true, bound, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := newGate(tc.clusterWide, objs...).Handle(context.Background(), request(t, tc.pod))
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			gated := strings.Contains(string(resp.Patch), placement.Gate)
			if gated != tc.gated {
				t.Fatalf("gated=%v, want %v (patch %s, reason %v)", gated, tc.gated, resp.Patch, resp.Result)
			}
			if !strings.Contains(string(resp.Patch), tc.patch) {
				t.Errorf("patch %s lacks %s", resp.Patch, tc.patch)
			}
		})
	}
}

// TestGateMalformedRequest: a review whose object is not a pod is allowed
// ungated with a warning that says what was wrong: a denial would block
// the pod, which failurePolicy: Ignore does not cover.
func TestGateMalformedRequest(t *testing.T) {
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Namespace: "shop", Object: runtime.RawExtension{Raw: []byte(`{"spec": "not an object"}`)},
	}}
	before := counterValue(t, undecodedTotal)
	resp := newGate(true).Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patch) != 0 {
		t.Fatalf("want an allow without a patch, got allowed=%v patch=%s result=%+v", resp.Allowed, resp.Patch, resp.Result)
	}
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "cannot decode the pod") {
		t.Errorf("warnings %q do not say what was wrong", resp.Warnings)
	}
	if got := counterValue(t, undecodedTotal) - before; got != 1 {
		t.Errorf("undecodable reviews counted %v times, want 1", got)
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// podWithEphemeral is a pod created with generateName (no name at
// admission) whose generic ephemeral volume's template is tmpl.
func podWithEphemeral(namespace string, annotations map[string]string, modes ...corev1.PersistentVolumeAccessMode) *corev1.Pod {
	if len(modes) == 0 {
		modes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "web-7c9-"}}
	p.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{
			ObjectMeta: metav1.ObjectMeta{Annotations: annotations},
			Spec:       corev1.PersistentVolumeClaimSpec{AccessModes: modes, StorageClassName: ptr.To("gp3")},
		}}}}}
	return p
}

// TestGateGenericEphemeral: a pod created with generateName has no name at
// admission, so the claim of its generic ephemeral volume (<pod>-<volume>)
// cannot be looked up: the template decides.
func TestGateGenericEphemeral(t *testing.T) {
	objs := []runtime.Object{ns("shop", map[string]string{scope.LabelEnabled: "true"}), ns("plain", nil)}
	named := podWithEphemeral("shop", nil)
	named.Name, named.GenerateName = "web-0", ""
	for _, tc := range []struct {
		name        string
		clusterWide bool
		pod         *corev1.Pod
		gated       bool
	}{
		{"generateName, opted-in namespace", false, podWithEphemeral("shop", nil), true},
		{"generateName, cluster-wide", true, podWithEphemeral("plain", nil), true},
		{"generateName, template annotated to share", false, podWithEphemeral("plain", map[string]string{scope.AnnotationShare: "true"}), true},
		{"generateName, template opted out", false, podWithEphemeral("shop", map[string]string{scope.AnnotationShare: "false"}), false},
		{"generateName, namespace not opted in", false, podWithEphemeral("plain", nil), false},
		{"generateName, ReadWriteMany", false, podWithEphemeral("shop", nil, corev1.ReadWriteMany), false},
		{"generateName, ReadWriteOncePod", false, podWithEphemeral("shop", nil, corev1.ReadWriteOncePod), false},
		{"named pod", false, named, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := newGate(tc.clusterWide, objs...).Handle(context.Background(), request(t, tc.pod))
			if !resp.Allowed {
				t.Fatalf("denied: %v", resp.Result)
			}
			if gated := strings.Contains(string(resp.Patch), placement.Gate); gated != tc.gated {
				t.Fatalf("gated=%v, want %v (patch %s, reason %v)", gated, tc.gated, resp.Patch, resp.Result)
			}
		})
	}
	// Once the API server has named the pod, the controller's index finds
	// its claim by name.
	stored := podWithEphemeral("shop", nil)
	stored.Name = "web-7c9-x2k4q"
	if got := ClaimNames(stored); len(got) != 1 || got[0] != "web-7c9-x2k4q-scratch" {
		t.Errorf("ClaimNames of the stored pod = %v, want [web-7c9-x2k4q-scratch]", got)
	}
}

// BenchmarkGate is the handler's own cost per review: decode, two cache
// reads, the patch. The simulator benchmark in test/bench measures it
// behind TLS and HTTP.
func BenchmarkGate(b *testing.B) {
	g := newGate(true, ns("plain", nil), pvc("plain", "data", nil))
	req := request(b, podMounting("plain", "data"))
	b.ReportAllocs()
	for b.Loop() {
		if resp := g.Handle(context.Background(), req); len(resp.Patch) == 0 {
			b.Fatal("not gated")
		}
	}
}
