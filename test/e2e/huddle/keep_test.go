package huddle

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/controller"
	"github.com/huddle-io/huddle/internal/scope"
	"github.com/huddle-io/huddle/internal/sim/cluster"
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

// crowdedHome runs app (2 replicas of 500m on claim data, with the given
// Huddle spec) on one of two m5.xlarge nodes, fills its home with another
// pod up to 500m short of its allocatable, and scales app to 4: the huddle
// (5 pods with surge, 2.5 CPU) no longer fits its home, one new member
// waits there Unschedulable, and the other node would hold all of it. It
// returns home.
func crowdedHome(env *simtest.Env, spec huddlev1.HuddleSpec) string {
	env.T.Helper()
	env.AddNodes(2, simtest.NodeOptions{})
	hud := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: env.Namespace}, Spec: spec}
	if err := env.Typed.Create(env.Ctx, hud); err != nil {
		env.T.Fatal(err)
	}
	dep := env.Deployment("app", 2, "data")
	dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("500m")
	env.Create(env.Claim("data"), dep)
	home := together(env, "app=app", 2, time.Minute)
	// Room for one more 500m member: the filler is sized from what the
	// node has free (2740m on an m5.xlarge: 3920m allocatable less the
	// members' 1000m and the add-ons' 180m), not from a node size this
	// test would have to assume.
	room := freeCPU(env, home)
	room.Sub(resource.MustParse("500m"))
	filler := env.Pod("filler")
	filler.Spec.NodeName = home
	filler.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = room
	env.Create(filler)
	env.Eventually("filler running", 30*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "filler", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("filler %s", p.Status.Phase)
		}
		return nil
	})
	kubectl(env, "scale", "deployment/app", "--replicas=4")
	return home
}

// TestNoMoveStaysAtHome: with move: Never the member that does not fit
// waits Pending at home, nothing is evicted, and Fits=False says what is
// missing and how to allow a move.
func TestNoMoveStaysAtHome(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	home := crowdedHome(env, huddlev1.HuddleSpec{Move: huddlev1.MoveNever})
	env.Eventually("Fits=False explains", time.Minute, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionFits)
		if c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "lacks") || !strings.Contains(c.Message, "spec.move: WhenStuck") {
			return fmt.Errorf("Fits: %+v", c)
		}
		return nil
	})
	env.Never("members stay at home, none evicted", 8*time.Second, func() error {
		for _, p := range env.Pods("app=app") {
			if p.Spec.NodeName != "" && p.Spec.NodeName != home {
				return fmt.Errorf("pod %s on %s, away from home %s", p.Name, p.Spec.NodeName, home)
			}
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s evicted", p.Name)
			}
		}
		return nil
	})
}

// TestMoveWhenStuck: with move: WhenStuck the whole huddle moves, in one
// step, to the node that fits it, and the move is recorded.
func TestMoveWhenStuck(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	home := crowdedHome(env, huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: 3 * time.Second}})
	start := time.Now()
	moved := together(env, "app=app", 4, 2*time.Minute)
	if moved == home {
		t.Fatalf("huddle still at %s", home)
	}
	h := huddled(env, "data", moved, 4)
	mv := h.Status.LastMove
	if mv == nil || mv.Result != "Succeeded" || mv.From != home || mv.To != moved {
		t.Fatalf("lastMove %+v", mv)
	}
	t.Logf("move: huddle of 4 Running together on %s %s after the scale-up (%s)", moved, time.Since(start).Round(100*time.Millisecond), mv.Message)
}

// TestMoveRespectsDisruptionBudget: a move evicts every member, and its
// replacements cannot become Ready while the volume is still in use at
// the old home, so a PodDisruptionBudget that keeps the members at home
// healthy (minAvailable 3 of the 3 running there) can never allow the
// evictions the move needs. The move is not started: the Huddle's Moving
// condition (MoveBlocked) and an event name the budget, and no member is
// evicted. Once the budget allows it, the move starts and completes.
// (A member that hangs away from home is Pending, and the Eviction API
// lets Pending pods go whatever the budget says, so repair alone never
// waits on one.)
func TestMoveRespectsDisruptionBudget(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: env.Namespace},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &intstr.IntOrString{IntVal: 3},
			Selector:     &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app"}},
		},
	}
	if _, err := env.Client.PolicyV1().PodDisruptionBudgets(env.Namespace).Create(env.Ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	home := crowdedHome(env, huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: 3 * time.Second}})
	env.Eventually("the Huddle and an event say the budget blocks the move", 2*time.Minute, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		if h.Status.LastMove != nil {
			return fmt.Errorf("a move was started: %+v", h.Status.LastMove)
		}
		c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionMoving)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "MoveBlocked" ||
			!strings.Contains(c.Message, "PodDisruptionBudget app keeps 3 pods healthy") || !strings.Contains(c.Message, "lower its minAvailable") {
			return fmt.Errorf("Moving: %+v", c)
		}
		if len(env.Events("data", "MoveBlocked")) == 0 {
			return fmt.Errorf("no MoveBlocked event on the Huddle")
		}
		return nil
	})
	env.Never("no member is evicted and no move starts while the budget forbids it", 5*time.Second, func() error {
		running := 0
		for _, p := range env.Pods("app=app") {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s evicted", p.Name)
			}
			if p.Spec.NodeName == home && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running < 3 {
			return fmt.Errorf("only %d members run at home", running)
		}
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		if h.Status.LastMove != nil {
			return fmt.Errorf("a move was started: %+v", h.Status.LastMove)
		}
		return nil
	})
	patch := `{"spec":{"minAvailable":0}}`
	if _, err := env.Client.PolicyV1().PodDisruptionBudgets(env.Namespace).Patch(env.Ctx, "app", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	moved := together(env, "app=app", 4, 3*time.Minute)
	if moved == home {
		t.Fatalf("huddle still at %s", home)
	}
	h := huddled(env, "data", moved, 4)
	if mv := h.Status.LastMove; mv == nil || mv.Result != "Succeeded" || mv.From != home || mv.To != moved {
		t.Fatalf("lastMove %+v", mv)
	}
}

// TestShutdownFailover: the home node is powered off and the cloud marks it
// shut down. With --failover huddle fences it with the out-of-service
// taint, Kubernetes deletes its pods and detaches the volume at once, and
// the huddle runs again on another node; the taint goes when the node is
// back. Without failover (TestShutdownWithoutFailover) the pods stay
// Terminating on the dead node, holding the volume, and nothing recovers.
func TestShutdownFailover(t *testing.T) {
	// Not parallel: it upgrades the cluster's huddle with failover on.
	env := simtest.New(t)
	setHuddleValues(env, map[string]any{"failover": true})
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
	env.Eventually("the pods of the shut-down node are deleted", 2*time.Minute, func() error {
		for _, p := range env.Pods("app.kubernetes.io/part-of=sentry") {
			if p.Spec.NodeName == home {
				return fmt.Errorf("pod %s still on %s", p.Name, home)
			}
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
	setHuddleValues(env, map[string]any{"failover": true})
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

// TestDeletedHomeFailover: the home's instance is terminated: the node
// stops reporting, then its Node object is deleted (as the cloud node
// lifecycle controller does for an instance that no longer exists, before
// its Auto Scaling group or Karpenter replaces it). There is no node left
// to taint, and Kubernetes alone releases the volume only after the pod
// garbage collector's 40-second quarantine and then the attach/detach
// controller's max wait for unmount (6 minutes on EKS). With failover
// huddle deletes the members and the VolumeAttachment at once and holds
// the replacements until the attach/detach controller's next state sync,
// so none of them reports a Multi-Attach error.
func TestDeletedHomeFailover(t *testing.T) {
	env := simtest.New(t)
	setHuddleValues(env, map[string]any{"failover": true})
	env.AddNodes(3, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("app", 3, "data"))
	home := together(env, "app=app", 3, time.Minute)
	env.Annotate(home, kubelet.AnnotationPower, "off")
	env.Eventually("home NotReady", time.Minute, func() error {
		if s := env.NodeReady(home); s == corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready", home)
		}
		return nil
	})
	start := time.Now()
	if err := env.Client.CoreV1().Nodes().Delete(env.Ctx, home, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Well inside the pod garbage collector's 40-second quarantine:
	// Kubernetes alone has not even deleted the pods by then.
	env.Eventually("the pods of the deleted node are deleted", 10*time.Second, func() error {
		for _, p := range env.Pods("app=app") {
			if p.Spec.NodeName == home {
				return fmt.Errorf("pod %s still on %s", p.Name, home)
			}
		}
		return nil
	})
	// Kubernetes alone would release the volume only after the
	// attach/detach controller's max wait for unmount from when the pods
	// are gone: the huddle must be together elsewhere sooner, or huddle
	// did not release it.
	moved := together(env, "app=app", 3, env.Timing().MaxWaitForUnmount)
	if moved == home {
		t.Fatalf("huddle still on the deleted node %s", home)
	}
	took := time.Since(start)
	t.Logf("home %s deleted while NotReady: huddle Running on %s %s later (attach/detach sync period %s, max wait for unmount %s)",
		home, moved, took.Round(100*time.Millisecond), env.Timing().AttachDetachSyncPeriod, env.Timing().MaxWaitForUnmount)
	if took >= env.Timing().MaxWaitForUnmount {
		t.Errorf("together again %s after the deletion, not sooner than the attach/detach controller's own force detach (%s)", took, env.Timing().MaxWaitForUnmount)
	}
	huddled(env, "data", moved, 3)
	if n := eventCount(env, "FailedAttachVolume"); n != 0 {
		t.Fatalf("%d FailedAttachVolume events, want 0: a replacement was released while the attach/detach controller still counted the volume on %s", n, home)
	}
	if n := env.Events("data", "HomeDeleted"); len(n) == 0 {
		t.Error("no HomeDeleted event on the Huddle")
	}
}

// TestDeletedHomeWhileLeaderless is TestDeletedHomeFailover with the
// leading huddle replica killed (grace 0, its process SIGKILLed) just
// before the Node goes: no replica leads when the deletion comes. The
// standby sees it in its cache and writes it on the Huddle
// (huddle.io/stale-attachment, releasing); then every replica is killed,
// so the next leader is one started after the deletion, which only that
// durable record tells. It must release the volume (HomeDeleted) within
// a new replica's start, the lease and a retry. (The chaos soak found a
// huddle held past a minute this way, and CI saw the killed leader's
// replacement win the lease.)
func TestDeletedHomeWhileLeaderless(t *testing.T) {
	env := simtest.New(t)
	setHuddleValues(env, map[string]any{"failover": true})
	env.AddNodes(3, simtest.NodeOptions{})
	// The pods tolerate their node's NoExecute taints for longer than the
	// test, so only huddle deletes them: the taint manager's eviction
	// would create their replacements while a killed replica's webhook
	// endpoint still answers nothing, and failurePolicy Ignore admits them
	// ungated (the repair's work, not this test's).
	app := env.Deployment("app", 3, "data")
	for _, taint := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable} {
		app.Spec.Template.Spec.Tolerations = append(app.Spec.Template.Spec.Tolerations, corev1.Toleration{Key: taint, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(int64(600))})
	}
	env.Create(env.Claim("data"), app)
	home := together(env, "app=app", 3, time.Minute)
	env.Annotate(home, kubelet.AnnotationPower, "off")
	env.Eventually("home NotReady", time.Minute, func() error {
		if s := env.NodeReady(home); s == corev1.ConditionTrue {
			return fmt.Errorf("node %s Ready", home)
		}
		return nil
	})
	leader, err := env.Cluster.HuddleLeader(env.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := env.Cluster.HuddlePods(env.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // both replicas serving again for the next test
		if err := env.Cluster.StartHuddle(env.Ctx); err != nil {
			t.Error(err)
		}
	})
	leaderIP := ""
	for _, p := range before {
		if p.Name == leader {
			leaderIP = p.Status.PodIP
		}
	}
	if leaderIP == "" {
		t.Fatalf("leader %s not among huddle's running pods", leader)
	}
	if err := env.Client.CoreV1().Pods(cluster.HuddleNamespace).Delete(env.Ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil {
		t.Fatal(err)
	}
	// The deletion must come once the leader is dead, not while its
	// process, which the kubelet kills only as it sees the pod gone,
	// still watches: that is another test (TestDeletedHomeFailover).
	env.Eventually("the killed leader's process gone", 10*time.Second, func() error {
		conn, err := env.Cluster.Network.Dial(env.Ctx, "tcp", net.JoinHostPort(leaderIP, "8081"))
		if err != nil {
			return nil
		}
		conn.Close()
		return fmt.Errorf("%s still answers on %s", leader, leaderIP)
	})
	start := time.Now()
	if err := env.Client.CoreV1().Nodes().Delete(env.Ctx, home, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if l, err := env.Cluster.HuddleLeader(env.Ctx); err == nil && l != leader {
		t.Fatalf("%s already leads when the Node is deleted: the test needs the deletion to come while no replica leads", l)
	}
	env.Eventually("a replica records the deletion on the Huddle", 10*time.Second, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		if v := h.Annotations[controller.AnnotationStaleAttachment]; !strings.HasPrefix(v, home+" ") || !strings.HasSuffix(v, " releasing") {
			return fmt.Errorf("%s is %q, want %q", controller.AnnotationStaleAttachment, v, home+" <time> releasing")
		}
		return nil
	})
	// The standby saw the deletion and recorded it; now it goes too, and
	// so does the killed leader's replacement (its cache may have synced
	// before the deletion), so the next leader is a replica started after
	// the deletion, which knows of it only from the Huddle. (No pod of the
	// huddle is created until that leader deletes the old ones, so the
	// moments without a webhook endpoint admit nothing ungated.)
	pods, err := env.Cluster.HuddlePods(env.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pods {
		if l, err := env.Cluster.HuddleLeader(env.Ctx); err == nil && l != leader {
			t.Fatalf("%s leads before the replicas that saw the deletion are killed: the test needs them gone first", l)
		}
		if err := env.Client.CoreV1().Pods(cluster.HuddleNamespace).Delete(env.Ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	killed := time.Now()
	// A new replica starts and syncs (up to 5 s), waits out the lease it
	// finds (15 s, counted from when it first sees it) and a retry period
	// (2 s, jittered up to 1.2x), then releases at once.
	bound := 5*time.Second + 15*time.Second + 2400*time.Millisecond + 8*time.Second
	env.Eventually("the pods of the deleted node are deleted by the next leader", bound, func() error {
		for _, p := range env.Pods("app=app") {
			if p.Spec.NodeName == home {
				return fmt.Errorf("pod %s still on %s", p.Name, home)
			}
		}
		return nil
	})
	took := time.Since(start).Round(100 * time.Millisecond)
	next, _ := env.Cluster.HuddleLeader(env.Ctx)
	t.Logf("pods of the deleted home gone %s after the deletion, %s after every replica that saw it was killed (bound %s); next leader %s", took, time.Since(killed).Round(100*time.Millisecond), bound, next)
	moved := together(env, "app=app", 3, time.Minute)
	if moved == home {
		t.Fatalf("huddle still on the deleted node %s", home)
	}
	if n := env.Events("data", "HomeDeleted"); len(n) == 0 {
		t.Error("no HomeDeleted event on the Huddle")
	}
	if n := eventCount(env, "FailedAttachVolume"); n != 0 {
		t.Fatalf("%d FailedAttachVolume events, want 0: %q", n, env.Events("", "FailedAttachVolume"))
	}
}

// TestShutdownWithoutFailover is TestShutdownFailover's scenario with
// huddle's default (failover off): Kubernetes alone leaves the pods of the
// shut-down node Terminating, the volume attached there, and the huddle
// down, for as long as nobody deletes the pods or the node.
func TestShutdownWithoutFailover(t *testing.T) {
	env := simtest.New(t)
	setHuddleValues(env, map[string]any{"failover": false})
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

// setHuddleValues upgrades huddle's release with values (helm upgrade)
// for the rest of the test, and back to the values before afterwards.
func setHuddleValues(env *simtest.Env, values map[string]any) {
	env.T.Helper()
	c := env.Cluster
	before := c.HuddleValues()
	if err := c.UpgradeHuddle(env.Ctx, values); err != nil {
		env.T.Fatalf("helm upgrade huddle with %v: %v", values, err)
	}
	env.T.Cleanup(func() {
		undo := map[string]any{}
		for k := range values {
			undo[k] = before[k]
		}
		if err := c.UpgradeHuddle(context.Background(), undo); err != nil {
			env.T.Errorf("helm upgrade huddle back: %v", err)
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

// TestMoveSurvivesRestart: huddle is killed as soon as a move is recorded
// and started again; the new process reads the target from the Huddle's
// status and completes the move.
func TestMoveSurvivesRestart(t *testing.T) {
	// Not parallel: it kills the cluster's huddle.
	env := simtest.New(t)
	home := crowdedHome(env, huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: 3 * time.Second}})
	var target string
	env.Eventually("a move recorded", time.Minute, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		if mv := h.Status.LastMove; mv != nil && mv.Finished == nil {
			target = mv.To
			return nil
		}
		return fmt.Errorf("no move yet (phase %s)", h.Status.Phase)
	})
	env.Cluster.StopHuddle(true)
	t.Logf("killed huddle mid-move from %s to %s", home, target)
	time.Sleep(2 * time.Second)
	if err := env.Cluster.StartHuddle(env.Ctx); err != nil {
		t.Fatal(err)
	}
	if moved := together(env, "app=app", 4, 2*time.Minute); moved != target {
		t.Fatalf("huddle came together on %s, not on the recorded target %s", moved, target)
	}
	h := huddled(env, "data", target, 4)
	if mv := h.Status.LastMove; mv == nil || mv.Result != "Succeeded" || mv.To != target {
		t.Fatalf("lastMove %+v", mv)
	}
}
