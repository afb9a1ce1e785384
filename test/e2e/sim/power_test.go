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

// TestPowerOnRestartsContainers: a node that comes back from a power cut
// does not resume its pods' containers, they died with it; its kubelet
// starts them again. The pod first shows them waiting, not Ready, the lost
// run as their last state (exit 255, Unknown: containerd's record of a
// container whose task vanished); then running again with restartCount 1
// and a new startedAt, and Ready.
func TestPowerOnRestartsContainers(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{})[0]
	env.Create(env.Pod("app"))
	running(env, "app", node)
	before, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "app", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	firstStart := before.Status.ContainerStatuses[0].State.Running.StartedAt
	time.Sleep(1100 * time.Millisecond) // startedAt has a resolution of one second

	w, err := env.Client.CoreV1().Pods(env.Namespace).Watch(env.Ctx, metav1.ListOptions{FieldSelector: "metadata.name=app", ResourceVersion: before.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	env.Annotate(node, kubelet.AnnotationPower, "off")
	time.Sleep(1500 * time.Millisecond)
	env.Annotate(node, kubelet.AnnotationPower, "on")

	sawRestarting := false
	timeout := time.After(30 * time.Second)
	for {
		var p *corev1.Pod
		select {
		case ev := <-w.ResultChan():
			var ok bool
			if p, ok = ev.Object.(*corev1.Pod); !ok {
				continue
			}
		case <-timeout:
			t.Fatalf("pod not running again with a restarted container within 30s (restarting status seen: %v)", sawRestarting)
		}
		if len(p.Status.ContainerStatuses) == 0 {
			continue
		}
		cs := p.Status.ContainerStatuses[0]
		last := cs.LastTerminationState.Terminated
		if cs.State.Waiting != nil && !readyPod(p) && last != nil {
			if last.ExitCode != 255 || last.Reason != "Unknown" || !last.StartedAt.Equal(&firstStart) {
				t.Fatalf("last state %+v, want the first run (started %s) exited 255 Unknown", last, firstStart)
			}
			sawRestarting = true
		}
		if cs.State.Running == nil || !readyPod(p) || cs.RestartCount == 0 {
			continue
		}
		if !sawRestarting {
			t.Fatalf("pod Ready again (restarts %d) without first showing its containers lost and not Ready", cs.RestartCount)
		}
		if cs.RestartCount != 1 || !cs.State.Running.StartedAt.After(firstStart.Time) || last == nil || last.ExitCode != 255 {
			t.Fatalf("after power-on: restarts %d, startedAt %s (first %s), last state %+v; want 1, later, exited 255", cs.RestartCount, cs.State.Running.StartedAt, firstStart, last)
		}
		return
	}
}

func readyPod(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
