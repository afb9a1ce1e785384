package huddle

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/huddle-io/huddle/internal/scope"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// split deploys 4 replicas of app on a claim opted out of huddle, so the
// stock scheduler spreads them over the pool, and waits until they are
// bound to at least two nodes: the state of an application that ran
// before huddle was enabled for it.
func split(env *simtest.Env, nodes int) {
	env.T.Helper()
	env.AddNodes(nodes, simtest.NodeOptions{})
	c := env.Claim("data")
	c.Annotations = map[string]string{scope.AnnotationShare: "false"}
	env.Create(c, env.Deployment("app", 4, "data"))
	env.Eventually("the stock scheduler splits the pods", time.Minute, func() error {
		nodes := map[string]bool{}
		for _, p := range env.Pods("app=app") {
			if p.Spec.NodeName == "" {
				return fmt.Errorf("pod %s not bound yet", p.Name)
			}
			nodes[p.Spec.NodeName] = true
		}
		if len(nodes) < 2 {
			return fmt.Errorf("pods on %d node(s)", len(nodes))
		}
		return nil
	})
}

// share opts the claim in: from now on huddle keeps its pods together.
func share(env *simtest.Env, claim string) {
	env.T.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, scope.AnnotationShare)
	if _, err := env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).Patch(env.Ctx, claim, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		env.T.Fatal(err)
	}
}

// TestSplitHuddleRepaired: pods spread by the stock scheduler before huddle
// was enabled for their claim are brought together by repair: the members
// away from the volume are evicted and their replacements pinned home;
// the members at home are never touched.
func TestSplitHuddleRepaired(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	split(env, 3)
	// The volume's node is home; the members there must never be evicted.
	pv, err := env.Volume("data")
	if err != nil {
		t.Fatal(err)
	}
	var volumeNode string
	env.Eventually("the volume attached", 30*time.Second, func() error {
		if got := env.AttachedTo(pv.Name); len(got) == 1 {
			volumeNode = got[0]
			return nil
		}
		return fmt.Errorf("volume not attached yet")
	})
	var atHome []string
	for _, p := range env.Pods("app=app") {
		if p.Spec.NodeName == volumeNode {
			atHome = append(atHome, p.Name)
		}
	}
	t.Logf("split: %s", placements(env, "app=app"))
	start := time.Now()
	share(env, "data")
	home := together(env, "app=app", 4, 2*time.Minute)
	t.Logf("split huddle repaired: 4 pods Running together on %s %s after the claim was shared", home, time.Since(start).Round(100*time.Millisecond))
	if home != volumeNode {
		t.Errorf("huddle came together on %s, not on the volume's node %s", home, volumeNode)
	}
	huddled(env, "data", home, 4)
	for _, name := range atHome {
		if _, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("member %s, running at home, was evicted: %v", name, err)
		}
	}
	if len(env.Events("", "EvictedAwayFromHome")) == 0 {
		t.Error("no EvictedAwayFromHome event")
	}
}

// TestRepairRespectsDisruptionBudget: a PodDisruptionBudget that forbids
// the eviction is respected; the Huddle's member status and an event say
// why; the repair completes once the budget allows it.
func TestRepairRespectsDisruptionBudget(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	split(env, 3)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: env.Namespace},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &intstr.IntOrString{IntVal: 4},
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app"}},
		},
	}
	if _, err := env.Client.PolicyV1().PodDisruptionBudgets(env.Namespace).Create(env.Ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually("the disruption controller computes the budget", 30*time.Second, func() error {
		p, err := env.Client.PolicyV1().PodDisruptionBudgets(env.Namespace).Get(env.Ctx, "app", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.ObservedGeneration < p.Generation || p.Status.ExpectedPods != 4 {
			return fmt.Errorf("budget not observed yet")
		}
		return nil
	})
	share(env, "data")
	env.Eventually("the Huddle and an event say the eviction is refused", time.Minute, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		refused := false
		for _, m := range h.Status.Members {
			if strings.Contains(m.Reason, "eviction refused") && strings.Contains(m.Reason, "disruption budget") {
				refused = true
			}
		}
		if !refused {
			return fmt.Errorf("no member says its eviction was refused: %+v", h.Status.Members)
		}
		if len(env.Events("data", "EvictionRefused")) == 0 {
			return fmt.Errorf("no EvictionRefused event on the Huddle")
		}
		return nil
	})
	env.Never("nothing is evicted against the budget", 3*time.Second, func() error {
		if n := len(env.Pods("app=app")); n != 4 {
			return fmt.Errorf("%d pods", n)
		}
		for _, p := range env.Pods("app=app") {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s evicted", p.Name)
			}
		}
		return nil
	})
	patch := `{"spec":{"minAvailable":1}}`
	if _, err := env.Client.PolicyV1().PodDisruptionBudgets(env.Namespace).Patch(env.Ctx, "app", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	home := together(env, "app=app", 4, 3*time.Minute)
	huddled(env, "data", home, 4)
}

// TestShutdownFailover: the home node is powered off and the cloud marks it
// shut down. With --failover huddle fences it with the out-of-service
// taint, Kubernetes deletes its pods and detaches the volume at once, and
// the huddle runs again on another node; the taint goes when the node is
// back. Without failover (TestShutdownWithoutFailover) the pods stay
// Terminating on the dead node, holding the volume, and nothing recovers.
func TestShutdownFailover(t *testing.T) {
	// Not parallel: it restarts the cluster's huddle with --failover.
	env := simtest.New(t)
	restartHuddle(env, "--failover")
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)

	start := time.Now()
	env.Annotate(home, kubelet.AnnotationShutdown, "true")
	env.Eventually("home NotReady", time.Minute, func() error {
		if s := env.NodeReady(home); s == corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready", home)
		}
		return nil
	})
	moved := together(env, "app.kubernetes.io/part-of=sentry", 6, 2*time.Minute)
	took := time.Since(start)
	if moved == home {
		t.Fatalf("huddle still on the shut-down node %s", home)
	}
	huddled(env, "sentry-data", moved, 6)
	t.Logf("shutdown of home %s with failover: huddle Running on %s %s after the shutdown (timing %s: node monitor grace %s; without failover it never recovers on its own)",
		home, moved, took.Round(100*time.Millisecond), env.Timing().Name, env.Timing().NodeMonitorGracePeriod)
	if n := env.EventsIn("default", home, "Fenced"); len(n) == 0 {
		t.Error("no Fenced event on the node")
	}

	env.Annotate(home, kubelet.AnnotationShutdown, "false")
	env.Eventually("the out-of-service taint is removed when the node is back", time.Minute, func() error {
		n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, home, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, tn := range n.Spec.Taints {
			if tn.Key == corev1.TaintNodeOutOfService {
				return fmt.Errorf("node %s still has %s", home, tn.Key)
			}
		}
		if n.Annotations["huddle.io/fenced"] != "" {
			return fmt.Errorf("node %s still annotated fenced", home)
		}
		return nil
	})
}

// TestUnreachableNodeNeverFenced: a powered-off node without the cloud's
// shutdown taint may only be unreachable and still writing: even with
// --failover it is never fenced, and its huddle waits.
func TestUnreachableNodeNeverFenced(t *testing.T) {
	env := simtest.New(t)
	restartHuddle(env, "--failover")
	env.AddNodes(2, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("app", 2, "data"))
	home := together(env, "app=app", 2, time.Minute)
	env.Annotate(home, kubelet.AnnotationPower, "off")
	env.Eventually("node NotReady", 30*time.Second, func() error {
		if s := env.NodeReady(home); s == corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready", home)
		}
		return nil
	})
	env.Never("the unreachable node is not fenced", 2*env.Timing().NotReadyToleration+5*time.Second, func() error {
		n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, home, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, tn := range n.Spec.Taints {
			if tn.Key == corev1.TaintNodeOutOfService {
				return fmt.Errorf("node %s was fenced", home)
			}
		}
		return nil
	})
	env.Annotate(home, kubelet.AnnotationPower, "on")
}

// TestShutdownWithoutFailover is TestShutdownFailover's scenario with
// huddle's default (failover off): Kubernetes alone leaves the pods of the
// shut-down node Terminating, the volume attached there, and the huddle
// down, for as long as nobody deletes the pods or the node.
func TestShutdownWithoutFailover(t *testing.T) {
	env := simtest.New(t)
	restartHuddle(env)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)
	env.Annotate(home, kubelet.AnnotationShutdown, "true")
	wait := env.Timing().NodeMonitorGracePeriod + env.Timing().NotReadyToleration + env.Timing().MaxWaitForUnmount + 10*time.Second
	env.Eventually("the pods on the dead node are marked for deletion", time.Minute, func() error {
		for _, p := range env.Pods("app.kubernetes.io/part-of=sentry") {
			if p.Spec.NodeName == home && p.DeletionTimestamp == nil {
				return fmt.Errorf("pod %s not evicted yet", p.Name)
			}
		}
		return nil
	})
	env.Never("without failover the huddle stays down", wait, func() error {
		running := 0
		for _, p := range env.Pods("app.kubernetes.io/part-of=sentry") {
			if p.Spec.NodeName != home && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running > 0 {
			return fmt.Errorf("%d pods running elsewhere", running)
		}
		return nil
	})
	t.Logf("shutdown of home %s without failover: after %s nothing runs elsewhere; the pods stay Terminating on the dead node holding the volume", home, wait)
	env.Annotate(home, kubelet.AnnotationShutdown, "false")
	together(env, "app.kubernetes.io/part-of=sentry", 6, 2*time.Minute)
}

// restartHuddle restarts the cluster's huddle with args for the rest of
// the test, and with the defaults afterwards.
func restartHuddle(env *simtest.Env, args ...string) {
	env.T.Helper()
	c := env.Cluster
	c.StopHuddle(false)
	if err := c.StartHuddle(env.Ctx, args...); err != nil {
		env.T.Fatalf("start huddle %v: %v", args, err)
	}
	if len(args) == 0 {
		return
	}
	env.T.Cleanup(func() {
		c.StopHuddle(false)
		if err := c.StartHuddle(context.Background()); err != nil {
			env.T.Errorf("restart huddle: %v", err)
		}
	})
}

func placements(env *simtest.Env, selector string) string {
	var out []string
	for _, p := range env.Pods(selector) {
		out = append(out, fmt.Sprintf("%s@%s(%s)", p.Name, p.Spec.NodeName, p.Status.Phase))
	}
	return strings.Join(out, " ")
}
