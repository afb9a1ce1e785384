package cleanup

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/placement"
)

// What cleanup records on a pod it releases.
const (
	// AnnotationReleasedBy marks a pod whose gate cleanup removed.
	AnnotationReleasedBy = "huddle.io/released-by"
	// ReleasedByUninstall is its value.
	ReleasedByUninstall = "uninstall"
	// ReasonReleasedOnUninstall is the reason of the event on the pod.
	ReasonReleasedOnUninstall = "ReleasedOnUninstall"
	// Component is the event source.
	Component = "huddle-cleanup"
)

// Ungate returns the scheduling gates a pod keeps once huddle's is
// removed, in their order, and whether huddle's was there.
func Ungate(gates []corev1.PodSchedulingGate) ([]corev1.PodSchedulingGate, bool) {
	var kept []corev1.PodSchedulingGate
	found := false
	for _, g := range gates {
		if g.Name == placement.Gate {
			found = true
			continue
		}
		kept = append(kept, g)
	}
	return kept, found
}

// releasePatch is the JSON merge patch that releases pod: its gates
// without huddle's and the released-by annotation. It carries the pod's
// resourceVersion, so the API server refuses it (409 Conflict) if the pod
// changed since it was read, e.g. because huddle's placer pinned it
// meanwhile. ok is false if the pod does not carry huddle's gate.
func releasePatch(pod *corev1.Pod) (patch []byte, ok bool, err error) {
	kept, ok := Ungate(pod.Spec.SchedulingGates)
	if !ok {
		return nil, false, nil
	}
	// null removes the list; the API server allows removing gates only.
	var gates any
	if len(kept) > 0 {
		gates = kept
	}
	p := map[string]any{
		"metadata": map[string]any{
			"resourceVersion": pod.ResourceVersion,
			"annotations":     map[string]string{AnnotationReleasedBy: ReleasedByUninstall},
		},
		"spec": map[string]any{"schedulingGates": gates},
	}
	patch, err = json.Marshal(p)
	return patch, true, err
}

// releasedEvent is the event recorded on pod once it is released.
func releasedEvent(pod *corev1.Pod, now time.Time) *corev1.Event {
	var msg strings.Builder
	msg.WriteString("huddle is being uninstalled: removed its scheduling gate " + placement.Gate)
	if why := pod.Annotations[placement.AnnotationPinnedBy]; why != "" {
		fmt.Fprintf(&msg, "; the pod keeps its node affinity (%s)", why)
	} else {
		msg.WriteString("; the default scheduler places the pod without a pin to its claim's node")
	}
	if kept, _ := Ungate(pod.Spec.SchedulingGates); len(kept) > 0 {
		names := make([]string, len(kept))
		for i, g := range kept {
			names[i] = g.Name
		}
		fmt.Fprintf(&msg, "; it still waits for its other scheduling gates: %s", strings.Join(names, ", "))
	}
	t := metav1.NewTime(now)
	return &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", pod.Name, now.UnixNano()), Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID,
			ResourceVersion: pod.ResourceVersion,
		},
		Reason:         ReasonReleasedOnUninstall,
		Message:        msg.String() + ".",
		Type:           corev1.EventTypeNormal,
		Source:         corev1.EventSource{Component: Component},
		FirstTimestamp: t,
		LastTimestamp:  t,
		Count:          1,
	}
}
