package sim

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestPowerOffForceDetach follows a crashed node through the real
// controllers: the node goes NotReady, taint-based eviction marks its pod
// for deletion after the not-ready toleration, but with no kubelet the pod
// stays Terminating and keeps the volume attached, so the replacement hangs
// on Multi-Attach. Once the pod object is gone (force-deleted here, as an
// operator does; PodGC does the same when the Node is deleted) the
// attach/detach controller still waits its max-wait-for-unmount before it
// force-detaches from the unhealthy node; then the replacement starts on
// the other node.
func TestPowerOffForceDetach(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(2, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("app", 1, "data"))
	old := waitPods(env, "app=app", 1)[0]
	dead := old.Spec.NodeName
	running(env, old.Name, dead)
	pv, err := env.Volume("data")
	if err != nil {
		t.Fatal(err)
	}

	env.Annotate(dead, kubelet.AnnotationPower, "off")
	env.Eventually("node NotReady", 30*time.Second, func() error {
		if s := env.NodeReady(dead); s == corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready=%s", dead, s)
		}
		return nil
	})
	var replacement corev1.Pod
	env.Eventually("old pod evicted, replacement hangs on Multi-Attach", 60*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, old.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.DeletionTimestamp == nil {
			return fmt.Errorf("old pod not evicted yet")
		}
		for _, p := range env.Pods("app=app") {
			if p.Name == old.Name {
				continue
			}
			replacement = p
			for _, m := range env.Events(p.Name, "FailedAttachVolume") {
				if strings.Contains(m, "Multi-Attach error for volume") {
					return nil
				}
			}
			return fmt.Errorf("replacement %s on %q: no Multi-Attach event yet", p.Name, p.Spec.NodeName)
		}
		return fmt.Errorf("no replacement pod yet")
	})
	env.Never("the dead node keeps the pod and the volume", 3*time.Second, func() error {
		if _, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, old.Name, metav1.GetOptions{}); err != nil {
			return fmt.Errorf("old pod: %v", err)
		}
		if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{dead}) {
			return fmt.Errorf("volume attached to %v, want [%s]", got, dead)
		}
		return notRunning(env, replacement.Name)
	})

	start := time.Now()
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, old.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}
	wait := env.Timing().MaxWaitForUnmount
	running(env, replacement.Name, replacement.Spec.NodeName)
	took := time.Since(start)
	t.Logf("replacement Running %s after the pod object was removed (max wait for unmount %s)", took.Round(100*time.Millisecond), wait)
	if took < wait-time.Second {
		t.Fatalf("volume moved after %s, before the attach/detach controller's %s max wait for unmount: it was not a force detach", took, wait)
	}
	if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{replacement.Spec.NodeName}) {
		t.Fatalf("volume attached to %v, want [%s]", got, replacement.Spec.NodeName)
	}
	env.Annotate(dead, kubelet.AnnotationPower, "on")
	env.Eventually("node Ready after power-on", 30*time.Second, func() error {
		if s := env.NodeReady(dead); s != corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready=%s", dead, s)
		}
		return nil
	})
}
