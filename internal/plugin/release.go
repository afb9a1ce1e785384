package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/huddle-io/huddle/internal/cleanup"
	"github.com/huddle-io/huddle/internal/placement"
)

// What release records.
const (
	// ReleasedByUser is the huddle.io/released-by value of a pod a user
	// released with kubectl huddle release.
	ReleasedByUser = "kubectl-huddle-release"
	// ReasonReleasedByUser is the reason of its event.
	ReasonReleasedByUser = "ReleasedByUser"
	// Component is the source of the plugin's events.
	Component = "kubectl-huddle"
)

func newReleaseCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "release POD",
		Short: "Remove huddle's scheduling gate from a held pod (the escape hatch)",
		Long: `release lets a pod that huddle holds (it still carries the scheduling gate
` + placement.Gate + `) go to the default scheduler now, without waiting for huddle's
decision. It records that on the pod (annotation ` + cleanup.AnnotationReleasedBy + `=` + ReleasedByUser + `)
and in a ` + ReasonReleasedByUser + ` event, so 'kubectl huddle explain' and 'kubectl describe'
show who let it go.

Use it when you know better than huddle: huddle is down, a hold is stuck, or
you accept that the pod may hang with a Multi-Attach error. The pod keeps any
node affinity it has; if it is released unpinned and binds away from its
huddle's home, huddle's repair (spec.repair: Evict) evicts it and its
replacement is gated and placed home again. 'kubectl huddle explain pod/POD'
first says why it is held.`,
		Example: `  # Why is it held? Then let it go.
  kubectl huddle explain pod/sentry-web-7c9f-x2bq -n sentry
  kubectl huddle release sentry-web-7c9f-x2bq -n sentry`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cs, _, ns, err := o.clients()
			if err != nil {
				return err
			}
			name := strings.TrimPrefix(args[0], "pod/")
			msg, err := Release(cmd.Context(), cs, ns, name, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintln(o.Streams.Out, msg)
			return nil
		},
	}
}

// Release removes huddle's gate from pod namespace/name, annotates it and
// records an event; it says what it did. The patch carries the pod's
// resourceVersion, so a pod huddle pinned meanwhile is not released
// over that decision: the conflict is reported instead.
func Release(ctx context.Context, cs kubernetes.Interface, namespace, name string, now time.Time) (string, error) {
	pod, err := cs.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("no pod %s in namespace %s", name, namespace)
		}
		return "", err
	}
	kept, ok := cleanup.Ungate(pod.Spec.SchedulingGates)
	if !ok {
		if pod.Spec.NodeName != "" {
			return "", fmt.Errorf("pod %s is not held: it runs on %s (kubectl huddle explain pod/%s says why there)", name, pod.Spec.NodeName, name)
		}
		return "", fmt.Errorf("pod %s is not held by huddle (no %s scheduling gate); if it is Pending, the scheduler says why: kubectl huddle explain pod/%s", name, placement.Gate, name)
	}
	var gates any
	if len(kept) > 0 {
		gates = kept
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"resourceVersion": pod.ResourceVersion,
			"annotations":     map[string]string{cleanup.AnnotationReleasedBy: ReleasedByUser},
		},
		"spec": map[string]any{"schedulingGates": gates},
	})
	if err != nil {
		return "", err
	}
	if _, err := cs.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		if apierrors.IsConflict(err) {
			return "", fmt.Errorf("pod %s changed while releasing it (huddle may just have placed it): run kubectl huddle explain pod/%s and release again if it is still held", name, name)
		}
		return "", err
	}
	why := "released by kubectl huddle release: removed scheduling gate " + placement.Gate
	if held := pod.Annotations[placement.AnnotationHeld]; held != "" {
		why += " from a pod huddle held (" + held + ")"
	}
	if len(kept) > 0 {
		names := make([]string, len(kept))
		for i, g := range kept {
			names[i] = g.Name
		}
		why += "; it still waits for its other scheduling gates: " + strings.Join(names, ", ")
	}
	t := metav1.NewTime(now)
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", name, now.UnixNano()), Namespace: namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: namespace, Name: name, UID: pod.UID},
		Reason:         ReasonReleasedByUser,
		Message:        why + ".",
		Type:           corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: Component},
		FirstTimestamp: t, LastTimestamp: t, Count: 1,
	}
	if _, err := cs.CoreV1().Events(namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("pod %s released, but recording the event failed: %w", name, err)
	}
	return fmt.Sprintf("pod/%s released: %s.", name, why), nil
}
