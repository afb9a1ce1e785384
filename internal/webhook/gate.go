// Package webhook is huddle's mutating admission webhook: a pod created in
// scope that mounts a claim gets the scheduling gate huddle.io/placement,
// so the default scheduler does not see it until the placement controller
// has narrowed its node affinity. The webhook reads only informer caches;
// it makes no API call while admitting a pod.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
)

// Path is where the webhook is served.
const Path = "/mutate-v1-pod"

// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,verbs=get;list;watch;create;update;patch
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;list;watch;create;update;patch;delete

// Gate is the admission handler. The certificate rotator that serves it
// keeps its CA in a Secret and injects it into the webhook configuration;
// leader election uses a Lease.
type Gate struct {
	// Reader must be a cache-backed reader with informers for Namespaces
	// and PersistentVolumeClaims already started.
	Reader  client.Reader
	Scope   scope.Scope
	Decoder admission.Decoder
}

// Handle gates pods in scope.
func (g *Gate) Handle(ctx context.Context, req admission.Request) admission.Response {
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.Kind.Group != "" {
		return admission.Allowed("not a pod creation")
	}
	pod := &corev1.Pod{}
	if err := g.Decoder.Decode(req, pod); err != nil {
		// A denial is not covered by failurePolicy: Ignore, so answering
		// one would block the pod. Let it through ungated, as when huddle
		// is down (repair keeps its huddle together), and say so.
		undecodedTotal.Inc()
		log.FromContext(ctx).Error(err, "Cannot decode the pod of an AdmissionReview; allowing it ungated", "namespace", req.Namespace, "name", req.Name)
		resp := admission.Allowed("huddle could not decode the pod")
		resp.Warnings = []string{fmt.Sprintf("huddle webhook: cannot decode the pod (%v); it was admitted without huddle's scheduling gate", err)}
		return resp
	}
	namespace := req.Namespace
	if namespace == "" {
		namespace = pod.Namespace
	}
	gate, why, err := g.shouldGate(ctx, namespace, pod)
	if err != nil {
		// Never block pod creation on a cache problem: the pod goes
		// ungated and repair keeps the huddle together.
		return admission.Allowed("huddle could not read its cache: " + err.Error())
	}
	if !gate {
		return admission.Allowed(why)
	}
	gatesTotal.Inc()
	op := map[string]any{"op": "add", "path": "/spec/schedulingGates/-", "value": corev1.PodSchedulingGate{Name: placement.Gate}}
	if len(pod.Spec.SchedulingGates) == 0 {
		op = map[string]any{"op": "add", "path": "/spec/schedulingGates", "value": []corev1.PodSchedulingGate{{Name: placement.Gate}}}
	}
	patch, err := json.Marshal([]any{op})
	if err != nil {
		return admission.Errored(http.StatusInternalServerError, err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	return admission.Response{AdmissionResponse: admissionv1.AdmissionResponse{
		Allowed: true, Patch: patch, PatchType: &pt,
	}}
}

// shouldGate reports whether the pod mounts a claim in scope.
func (g *Gate) shouldGate(ctx context.Context, namespace string, pod *corev1.Pod) (bool, string, error) {
	if g.Scope.Excludes(namespace) {
		return false, "namespace " + namespace + " is excluded", nil
	}
	if pod.Spec.NodeName != "" {
		return false, "the pod names its node; gates are not allowed", nil
	}
	if placement.HasGate(pod) {
		return false, "already gated", nil
	}
	var claims []string
	for _, v := range pod.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			claims = append(claims, v.PersistentVolumeClaim.ClaimName)
		}
	}
	ephemeral := ephemeralClaims(pod)
	if len(claims) == 0 && len(ephemeral) == 0 {
		return false, "the pod mounts no claim", nil
	}
	ns := &corev1.Namespace{}
	if err := g.Reader.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		if !apierrors.IsNotFound(err) {
			return false, "", err
		}
		ns = nil
	}
	// A generic ephemeral claim does not exist at admission (and has no
	// name yet when the pod is created with generateName): the claim its
	// template will make decides. The controller finds the claim by name
	// once the pod has one.
	for _, claim := range ephemeral {
		if g.Scope.OptedIn(ns, namespace, claim) && mayBeShared(claim) {
			return true, "", nil
		}
	}
	for _, name := range claims {
		claim := &corev1.PersistentVolumeClaim{}
		err := g.Reader.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, claim)
		switch {
		case apierrors.IsNotFound(err):
			claim = nil
		case err != nil:
			return false, "", err
		}
		if g.Scope.OptedIn(ns, namespace, claim) {
			return true, "", nil
		}
	}
	return false, "no claim of the pod is opted in", nil
}

// ephemeralClaims are the claims the pod's generic ephemeral volumes will
// make, as far as their templates tell: annotations and spec, no name.
func ephemeralClaims(pod *corev1.Pod) []*corev1.PersistentVolumeClaim {
	var out []*corev1.PersistentVolumeClaim
	for _, v := range pod.Spec.Volumes {
		if v.Ephemeral == nil || v.Ephemeral.VolumeClaimTemplate == nil {
			continue
		}
		t := v.Ephemeral.VolumeClaimTemplate
		out = append(out, &corev1.PersistentVolumeClaim{
			ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Labels: t.Labels, Annotations: t.Annotations},
			Spec:       t.Spec,
		})
	}
	return out
}

// mayBeShared: a claim that asks for a volume several nodes, or only one
// pod, may use is never shared; any other may be, depending on its class
// and driver, which the controller checks before it pins.
func mayBeShared(claim *corev1.PersistentVolumeClaim) bool {
	for _, m := range claim.Spec.AccessModes {
		if m == corev1.ReadWriteMany || m == corev1.ReadOnlyMany || m == corev1.ReadWriteOncePod {
			return false
		}
	}
	return true
}

// ClaimNames lists the claims a pod mounts: persistentVolumeClaim volumes
// and the claims of generic ephemeral volumes (<pod>-<volume>), which a
// pod created with generateName has no name for until the API server
// stores it: at admission, see ephemeralClaims.
func ClaimNames(pod *corev1.Pod) []string {
	var out []string
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		case v.Ephemeral != nil && pod.Name != "":
			out = append(out, pod.Name+"-"+v.Name)
		}
	}
	return out
}
