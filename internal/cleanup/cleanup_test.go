package cleanup

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/huddle-io/huddle/internal/placement"
)

// podBuilder makes pods for the tables.
type podBuilder struct{ pod *corev1.Pod }

func newPod(ns, name string) *podBuilder {
	return &podBuilder{pod: &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "7"}}}
}

func (b *podBuilder) gates(names ...string) *podBuilder {
	for _, n := range names {
		b.pod.Spec.SchedulingGates = append(b.pod.Spec.SchedulingGates, corev1.PodSchedulingGate{Name: n})
	}
	return b
}

func (b *podBuilder) annotation(k, v string) *podBuilder {
	metav1.SetMetaDataAnnotation(&b.pod.ObjectMeta, k, v)
	return b
}

func (b *podBuilder) on(node string) *podBuilder { b.pod.Spec.NodeName = node; return b }

func (b *podBuilder) obj() *corev1.Pod { return b.pod }

func gateNames(gs []corev1.PodSchedulingGate) []string {
	var out []string
	for _, g := range gs {
		out = append(out, g.Name)
	}
	return out
}

func TestUngate(t *testing.T) {
	for _, tc := range []struct {
		name      string
		gates     []string
		wantKept  []string
		wantFound bool
	}{
		{"no gates", nil, nil, false},
		{"only huddle's", []string{placement.Gate}, nil, true},
		{"others kept in order", []string{"example.com/quota", placement.Gate, "example.com/later"}, []string{"example.com/quota", "example.com/later"}, true},
		{"others only", []string{"example.com/quota"}, []string{"example.com/quota"}, false},
		{"a look-alike is not huddle's", []string{"huddle.io/placement-v2", "huddle.io/other"}, []string{"huddle.io/placement-v2", "huddle.io/other"}, false},
		{"duplicates all removed", []string{placement.Gate, placement.Gate}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kept, found := Ungate(newPod("a", "p").gates(tc.gates...).obj().Spec.SchedulingGates)
			if found != tc.wantFound || !reflect.DeepEqual(gateNames(kept), tc.wantKept) {
				t.Errorf("Ungate(%v) = %v, %v; want %v, %v", tc.gates, gateNames(kept), found, tc.wantKept, tc.wantFound)
			}
		})
	}
}

func TestReleasePatch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		wantOK    bool
		wantGates any // decoded JSON of spec.schedulingGates
	}{
		{"not gated: no patch", newPod("a", "p").gates("example.com/quota").obj(), false, nil},
		{"only huddle's gate: list removed", newPod("a", "p").gates(placement.Gate).obj(), true, nil},
		{"other gates stay", newPod("a", "p").gates("example.com/quota", placement.Gate).obj(), true,
			[]any{map[string]any{"name": "example.com/quota"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			patch, ok, err := releasePatch(tc.pod)
			if err != nil || ok != tc.wantOK {
				t.Fatalf("releasePatch = ok %v, err %v; want ok %v", ok, err, tc.wantOK)
			}
			if !ok {
				return
			}
			var p struct {
				Metadata struct {
					ResourceVersion string            `json:"resourceVersion"`
					Annotations     map[string]string `json:"annotations"`
				} `json:"metadata"`
				Spec map[string]any `json:"spec"`
			}
			if err := json.Unmarshal(patch, &p); err != nil {
				t.Fatal(err)
			}
			if p.Metadata.ResourceVersion != "7" {
				t.Errorf("resourceVersion %q, want the pod's (7) so a changed pod conflicts", p.Metadata.ResourceVersion)
			}
			if p.Metadata.Annotations[AnnotationReleasedBy] != ReleasedByUninstall {
				t.Errorf("annotations %v, want %s: %s", p.Metadata.Annotations, AnnotationReleasedBy, ReleasedByUninstall)
			}
			gates, present := p.Spec["schedulingGates"]
			if !present || !reflect.DeepEqual(gates, tc.wantGates) {
				t.Errorf("spec.schedulingGates = %#v (present %v), want %#v", gates, present, tc.wantGates)
			}
		})
	}
}

func TestReleasedEvent(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		want []string
	}{
		{"unpinned", newPod("a", "web-1").obj(), []string{"removed its scheduling gate huddle.io/placement", "without a pin"}},
		{"pinned keeps affinity", newPod("a", "web-1").annotation(placement.AnnotationPinnedBy, "claim a/data home n1").obj(),
			[]string{"keeps its node affinity (claim a/data home n1)"}},
		{"other gates named", newPod("a", "web-1").gates("example.com/quota").obj(), []string{"other scheduling gates: example.com/quota"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev := releasedEvent(tc.pod, now)
			if ev.Reason != ReasonReleasedOnUninstall || ev.Type != corev1.EventTypeNormal || ev.Namespace != "a" ||
				ev.InvolvedObject.Kind != "Pod" || ev.InvolvedObject.Name != "web-1" || !ev.LastTimestamp.Time.Equal(now) {
				t.Errorf("event %+v", ev)
			}
			for _, w := range tc.want {
				if !strings.Contains(ev.Message, w) {
					t.Errorf("message %q lacks %q", ev.Message, w)
				}
			}
		})
	}
}

func webhookConfiguration(name string) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func secret(ns, name string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func TestRun(t *testing.T) {
	objs := []runtime.Object{
		webhookConfiguration("huddle"),
		webhookConfiguration("someone-else"),
		secret("huddle-system", "huddle-webhook-cert"),
		secret("huddle-system", "other"),
		newPod("app", "gated").gates(placement.Gate).obj(),
		newPod("app", "two-gates").gates(placement.Gate, "example.com/quota").obj(),
		newPod("app", "foreign-gate").gates("example.com/quota").obj(),
		newPod("app", "running").on("n1").annotation(placement.AnnotationPinnedBy, "claim app/data home n1").obj(),
		newPod("other", "gated").gates(placement.Gate).obj(),
	}
	cs := fake.NewClientset(objs...)
	clk := clocktesting.NewFakeClock(time.Now())
	err := Run(context.Background(), cs, Options{WebhookConfiguration: "huddle", Namespace: "huddle-system", CertSecret: "huddle-webhook-cert", PageSize: 2, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "huddle", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("webhook configuration huddle: %v, want deleted", err)
	}
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "someone-else", metav1.GetOptions{}); err != nil {
		t.Errorf("another webhook configuration was touched: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("huddle-system").Get(ctx, "huddle-webhook-cert", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("certificate Secret: %v, want deleted", err)
	}
	if _, err := cs.CoreV1().Secrets("huddle-system").Get(ctx, "other", metav1.GetOptions{}); err != nil {
		t.Errorf("another Secret was touched: %v", err)
	}
	for _, tc := range []struct {
		ns, name  string
		wantGates []string
		released  bool
	}{
		{"app", "gated", nil, true},
		{"app", "two-gates", []string{"example.com/quota"}, true},
		{"app", "foreign-gate", []string{"example.com/quota"}, false},
		{"app", "running", nil, false},
		{"other", "gated", nil, true},
	} {
		p, err := cs.CoreV1().Pods(tc.ns).Get(ctx, tc.name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := gateNames(p.Spec.SchedulingGates); !reflect.DeepEqual(got, tc.wantGates) {
			t.Errorf("%s/%s gates %v, want %v", tc.ns, tc.name, got, tc.wantGates)
		}
		if got := p.Annotations[AnnotationReleasedBy] == ReleasedByUninstall; got != tc.released {
			t.Errorf("%s/%s released-by annotation %v, want %v", tc.ns, tc.name, got, tc.released)
		}
	}
	events, err := cs.CoreV1().Events(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range events.Items {
		if e.Reason == ReasonReleasedOnUninstall {
			got = append(got, e.InvolvedObject.Namespace+"/"+e.InvolvedObject.Name)
		}
	}
	if len(got) != 3 {
		t.Errorf("ReleasedOnUninstall events on %v, want one on each of the 3 released pods", got)
	}

	// A second run (the hook retried) finds everything done.
	if err := Run(ctx, cs, Options{WebhookConfiguration: "huddle", Namespace: "huddle-system", CertSecret: "huddle-webhook-cert", Clock: clk}); err != nil {
		t.Errorf("second run: %v, want nothing to do", err)
	}
}

// TestRunConflict: a pod that huddle pins between the list and the patch
// is left as huddle left it.
func TestRunConflict(t *testing.T) {
	cs := fake.NewClientset(newPod("app", "racing").gates(placement.Gate).obj())
	pinned := newPod("app", "racing").annotation(placement.AnnotationPinnedBy, "claim app/data home n1").obj()
	pinned.ResourceVersion = "8"
	cs.PrependReactor("patch", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "pods"}, "racing", errors.New("the object has been modified"))
	})
	cs.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, pinned, nil
	})
	if err := Run(context.Background(), cs, Options{Clock: clocktesting.NewFakeClock(time.Now())}); err != nil {
		t.Fatalf("Run: %v", err)
	}
	events, _ := cs.CoreV1().Events("app").List(context.Background(), metav1.ListOptions{})
	if len(events.Items) != 0 {
		t.Errorf("events %v, want none: the pod was not released by cleanup", events.Items)
	}
}

// TestRunErrors: a failure other than NotFound is reported, naming what
// failed, and the remaining steps still run.
func TestRunErrors(t *testing.T) {
	cs := fake.NewClientset(secret("huddle-system", "huddle-webhook-cert"))
	cs.PrependReactor("delete", "mutatingwebhookconfigurations", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations"}, "huddle", errors.New("no"))
	})
	err := Run(context.Background(), cs, Options{WebhookConfiguration: "huddle", Namespace: "huddle-system", CertSecret: "huddle-webhook-cert", Clock: clocktesting.NewFakeClock(time.Now())})
	if err == nil || !strings.Contains(err.Error(), "delete MutatingWebhookConfiguration huddle") {
		t.Fatalf("Run = %v, want the webhook configuration's failure", err)
	}
	if _, err := cs.CoreV1().Secrets("huddle-system").Get(context.Background(), "huddle-webhook-cert", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("certificate Secret: %v, want deleted despite the earlier failure", err)
	}
}

// TestRunSettle: a pod gated by an admission in flight when the webhook
// configuration was deleted is released by the second look.
func TestRunSettle(t *testing.T) {
	cs := fake.NewClientset(webhookConfiguration("huddle"))
	clk := clocktesting.NewFakeClock(time.Now())
	done := make(chan error)
	go func() {
		done <- Run(context.Background(), cs, Options{WebhookConfiguration: "huddle", Settle: 5 * time.Second, Clock: clk})
	}()
	for !clk.HasWaiters() {
		time.Sleep(time.Millisecond)
	}
	late := newPod("app", "late").gates(placement.Gate).obj()
	if _, err := cs.CoreV1().Pods("app").Create(context.Background(), late, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clk.Step(5 * time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	p, err := cs.CoreV1().Pods("app").Get(context.Background(), "late", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if placement.HasGate(p) {
		t.Error("the pod gated during the pause is still gated")
	}
}
