package webhook

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
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

// TestGateMalformedRequest: a review whose object is not a pod is answered
// with a 400 that says what was wrong, not a panic or a silent allow.
func TestGateMalformedRequest(t *testing.T) {
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Namespace: "shop", Object: runtime.RawExtension{Raw: []byte(`{"spec": "not an object"}`)},
	}}
	resp := newGate(true).Handle(context.Background(), req)
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("want a 400 denial, got allowed=%v result=%+v", resp.Allowed, resp.Result)
	}
	if !strings.Contains(resp.Result.Message, "cannot decode the pod") {
		t.Errorf("message %q does not say what was wrong", resp.Result.Message)
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
