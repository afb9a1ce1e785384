package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestRollingUpdateStallsOnRWOClaim reproduces kubernetes/kubernetes#26567
// under the stock scheduler: a one-replica RollingUpdate Deployment with a
// ReadWriteOnce claim is restarted while its node is cordoned; the new pod
// lands on the other node, hangs on the Multi-Attach error, and because
// maxUnavailable rounds down to 0 the old pod keeps the volume: the rollout
// never completes.
func TestRollingUpdateStallsOnRWOClaim(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(2, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("app", 1, "data"))
	old := waitPods(env, "app=app", 1)[0]
	running(env, old.Name, old.Spec.NodeName)

	cordon(env, old.Spec.NodeName)
	restart(env, "app")

	var fresh corev1.Pod
	env.Eventually("new pod hangs on Multi-Attach", 30*time.Second, func() error {
		for _, p := range env.Pods("app=app") {
			if p.Name == old.Name {
				continue
			}
			fresh = p
			for _, m := range env.Events(p.Name, "FailedAttachVolume") {
				if strings.Contains(m, "Multi-Attach error for volume") {
					return nil
				}
			}
			return fmt.Errorf("new pod %s on %q, no Multi-Attach event yet", p.Name, p.Spec.NodeName)
		}
		return fmt.Errorf("no new pod yet")
	})
	if fresh.Spec.NodeName == old.Spec.NodeName {
		t.Fatalf("new pod landed on the cordoned node %s", old.Spec.NodeName)
	}
	// Well past attach + start delays, nothing moves.
	env.Never("the rollout stays stalled", 3*time.Second, func() error {
		if err := notRunning(env, fresh.Name); err != nil {
			return err
		}
		d, err := env.Client.AppsV1().Deployments(env.Namespace).Get(env.Ctx, "app", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.UpdatedReplicas != 1 || d.Status.AvailableReplicas != 1 || d.Status.Replicas != 2 {
			return fmt.Errorf("deployment status changed: %+v", d.Status)
		}
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, old.Name, metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp != nil {
			return fmt.Errorf("the old pod must keep running (maxUnavailable 0): %v", err)
		}
		return nil
	})
	if complete(env, "app") {
		t.Fatal("rollout reported complete")
	}
}

func waitPods(env *simtest.Env, selector string, n int) []corev1.Pod {
	env.T.Helper()
	var pods []corev1.Pod
	env.Eventually(fmt.Sprintf("%d pods %s", n, selector), 30*time.Second, func() error {
		pods = env.Pods(selector)
		if len(pods) != n {
			return fmt.Errorf("%d pods", len(pods))
		}
		for _, p := range pods {
			if p.Spec.NodeName == "" {
				return fmt.Errorf("pod %s not scheduled", p.Name)
			}
		}
		return nil
	})
	return pods
}

func cordon(env *simtest.Env, node string) {
	env.T.Helper()
	if _, err := env.Client.CoreV1().Nodes().Patch(env.Ctx, node, types.MergePatchType, []byte(`{"spec":{"unschedulable":true}}`), metav1.PatchOptions{}); err != nil {
		env.T.Fatal(err)
	}
}

// restart does what kubectl rollout restart does.
func restart(env *simtest.Env, deployment string) {
	env.T.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":%q}}}}}`, time.Now().Format(time.RFC3339Nano))
	if _, err := env.Client.AppsV1().Deployments(env.Namespace).Patch(env.Ctx, deployment, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		env.T.Fatal(err)
	}
}

func complete(env *simtest.Env, deployment string) bool {
	d, err := env.Client.AppsV1().Deployments(env.Namespace).Get(env.Ctx, deployment, metav1.GetOptions{})
	if err != nil {
		env.T.Fatal(err)
	}
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "NewReplicaSetAvailable" {
			return d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.Replicas == *d.Spec.Replicas
		}
	}
	return false
}
