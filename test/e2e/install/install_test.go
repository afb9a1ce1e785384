// Package install tests huddle as its chart installs it: two replicas
// running as real huddle processes under the chart's ServiceAccount, the
// API server calling the webhook through the chart's Service, leader
// failover, RBAC that is really enforced, and uninstall.
//
// The tests run in file order and are not parallel: they delete huddle's
// pods, take a permission away and, last, uninstall the chart.
package install

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// The RBAC test makes huddle's requests fail with Forbidden on purpose.
func TestMain(m *testing.M) {
	os.Exit(simtest.Main(m, simtest.Options{Huddle: true, AllowForbidden: true}))
}

const gate = "huddle.io/placement"

func hasGate(p corev1.Pod) bool {
	for _, g := range p.Spec.SchedulingGates {
		if g.Name == gate {
			return true
		}
	}
	return false
}

// placed waits until the pod is bound with huddle's pin annotation, which
// only a pod the webhook gated can carry: an ungated pod goes straight to
// the scheduler.
func placed(env *simtest.Env, name string, timeout time.Duration) corev1.Pod {
	env.T.Helper()
	var pod corev1.Pod
	env.Eventually("pod "+name+" gated, pinned by huddle and bound", timeout, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		pod = *p
		if p.Annotations["huddle.io/pinned-by"] == "" || p.Spec.NodeName == "" {
			return fmt.Errorf("gated=%v pinned-by=%q node=%q held=%q", hasGate(*p), p.Annotations["huddle.io/pinned-by"], p.Spec.NodeName, p.Annotations["huddle.io/held"])
		}
		return nil
	})
	return pod
}

func TestHuddleRunsFromTheChart(t *testing.T) {
	env := simtest.New(t)
	pods, err := env.Cluster.HuddlePods(env.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 {
		t.Fatalf("%d huddle pods, want the chart's 2 replicas", len(pods))
	}
	for _, p := range pods {
		if p.Spec.ServiceAccountName != cluster.HuddleRelease {
			t.Errorf("pod %s runs as service account %q, want the chart's %q", p.Name, p.Spec.ServiceAccountName, cluster.HuddleRelease)
		}
		if p.Status.PodIP == "" || len(p.Status.ContainerStatuses) != 1 || !p.Status.ContainerStatuses[0].Ready {
			t.Errorf("pod %s: IP %q, statuses %+v", p.Name, p.Status.PodIP, p.Status.ContainerStatuses)
		}
	}
	// They are real huddle processes: their logs are huddle's.
	logs := strings.Join(simtest.GrepLogs(env.Cluster.HuddleLogs(), func(l string) bool { return strings.Contains(l, "Starting huddle") }), "\n")
	for _, p := range pods {
		if !strings.Contains(logs, p.Name) {
			t.Errorf("no log of pod %s says huddle started; logs: %v", p.Name, env.Cluster.HuddleLogs())
		}
	}
	// The webhook, reached through the chart's Service, gates a pod of a
	// shared claim; the controllers place it and its peers together.
	env.AddNodes(2, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("app", 3, "data"))
	env.Eventually("3 pods placed together", time.Minute, func() error {
		nodes := map[string]int{}
		for _, p := range env.Pods("app=app") {
			if p.Annotations["huddle.io/pinned-by"] == "" || p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("pod %s: %s pinned-by=%q", p.Name, p.Status.Phase, p.Annotations["huddle.io/pinned-by"])
			}
			nodes[p.Spec.NodeName]++
		}
		if len(nodes) != 1 || nodes[firstKey(nodes)] != 3 {
			return fmt.Errorf("nodes %v", nodes)
		}
		return nil
	})
	if lines := simtest.GrepLogs(env.Cluster.HuddleLogs(), simtest.RBACDenied); len(lines) > 0 {
		t.Errorf("huddle's logs say forbidden under the chart's RBAC:\n%s", strings.Join(lines, "\n"))
	}
}

// TestLeaderFailover deletes the leading replica. The other takes the
// lease over; pods created all through the switch (one every half second,
// from the deletion until the new leader has led for a while) are gated —
// the remaining replica answers the webhook — and each is placed within the
// lease duration plus 2 s of its creation.
func TestLeaderFailover(t *testing.T) { leaderSwitch(t, nil) }

// TestLeaderCrash is TestLeaderFailover with the leader killed at once
// (deleted with grace 0, its process SIGKILLed): it cannot hand its lease
// over, so the other replica takes it when it expires, which it checks
// every retry period (2 s, client-go's jitter up to 1.2×): the bound is the
// lease duration plus one jittered retry period plus 2 s. Pods are created
// once the dead replica is out of the webhook's Service (see below).
func TestLeaderCrash(t *testing.T) { leaderSwitch(t, ptr.To(int64(0))) }

func leaderSwitch(t *testing.T, grace *int64) {
	const leaseDuration = 15 * time.Second // the chart's defaults
	const retryPeriod = 2 * time.Second
	bound := leaseDuration + 2*time.Second
	if grace != nil && *grace == 0 {
		bound += retryPeriod * 12 / 10
	}
	env := simtest.New(t)
	// One pod is created every half second for up to twice the lease
	// duration: up to 60 pods of 100m CPU, more than an m5.xlarge holds
	// (3920m, 58 pods). The home must hold them all, or the last ones are
	// Unschedulable and the test measures capacity, not the switch.
	env.AddNodes(1, simtest.NodeOptions{InstanceType: "m5.4xlarge"})
	env.Create(env.Claim("data"))
	leader, err := env.Cluster.HuddleLeader(env.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	leaderPod, err := env.Client.CoreV1().Pods(cluster.HuddleNamespace).Get(env.Ctx, leader, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := env.Client.CoreV1().Pods(cluster.HuddleNamespace).Delete(env.Ctx, leader, metav1.DeleteOptions{GracePeriodSeconds: grace}); err != nil {
		t.Fatal(err)
	}
	if grace != nil && *grace == 0 {
		// A crashed replica answers nothing, yet its endpoint stays in the
		// webhook's Service until the EndpointSlice controller drops it
		// (here at once, as its pod object is gone; on a real node only
		// once the node is found NotReady). Reviews sent to it fail, and
		// with failurePolicy Ignore those pods are created ungated; repair
		// brings them home if they land away. Pods are created from then on.
		env.Eventually("the crashed replica out of the webhook's Service", 10*time.Second, func() error {
			eps, err := env.Client.DiscoveryV1().EndpointSlices(cluster.HuddleNamespace).List(env.Ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=huddle-webhook"})
			if err != nil {
				return err
			}
			for _, sl := range eps.Items {
				for _, e := range sl.Endpoints {
					if slices.Contains(e.Addresses, leaderPod.Status.PodIP) {
						return fmt.Errorf("endpoint %s still listed", leaderPod.Status.PodIP)
					}
				}
			}
			return nil
		})
		t.Logf("the crashed replica left the webhook's Service %s after the kill", time.Since(start).Round(time.Millisecond))
	}
	created := map[string]time.Time{}
	var switched time.Time
	for i := 0; ; i++ {
		name := fmt.Sprintf("switch-%02d", i)
		created[name] = time.Now()
		env.Create(env.Pod(name, "data"))
		if switched.IsZero() {
			if l, err := env.Cluster.HuddleLeader(env.Ctx); err == nil && l != leader {
				switched = time.Now()
				t.Logf("leader %s deleted; %s leads after %s", leader, l, switched.Sub(start).Round(time.Millisecond))
			}
		}
		if !switched.IsZero() && time.Since(switched) > 3*time.Second {
			break
		}
		if time.Since(start) > 2*leaseDuration {
			t.Fatalf("no new leader %s after the leader %s was deleted", time.Since(start).Round(time.Second), leader)
		}
		time.Sleep(500 * time.Millisecond)
	}
	var slowest time.Duration
	for name, at := range created {
		placed(env, name, bound-time.Since(at))
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionTrue {
				slowest = max(slowest, c.LastTransitionTime.Sub(at))
			}
		}
	}
	t.Logf("%d pods created through the switch, all gated and placed; slowest bound %s after creation", len(created), slowest.Round(time.Second))
	// The Deployment replaces the deleted pod.
	if err := env.Cluster.StartHuddle(env.Ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRBACIsEnforced takes one permission the chart grants away (updating
// pods, which releasing a gated pod needs): huddle cannot place pods and
// says Forbidden; given back, the pod is placed. So huddle really runs
// with the chart's RBAC, not as an administrator.
func TestRBACIsEnforced(t *testing.T) {
	env := simtest.New(t)
	env.AddNodes(1, simtest.NodeOptions{})
	roles := env.Client.RbacV1().ClusterRoles()
	role, err := roles.Get(env.Ctx, cluster.HuddleRelease, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	original := role.DeepCopy()
	restore := func() {
		fresh, err := roles.Get(env.Ctx, cluster.HuddleRelease, metav1.GetOptions{})
		if err == nil {
			fresh.Rules = original.Rules
			_, err = roles.Update(env.Ctx, fresh, metav1.UpdateOptions{})
		}
		if err != nil {
			t.Errorf("restore the ClusterRole: %v", err)
		}
	}
	defer restore()
	var rules []rbacv1.PolicyRule
	removed := false
	for _, r := range role.Rules {
		if len(r.APIGroups) == 1 && r.APIGroups[0] == "" && slices.Contains(r.Resources, "pods") {
			var verbs []string
			for _, v := range r.Verbs {
				if v != "update" && v != "patch" {
					verbs = append(verbs, v)
				}
			}
			removed = len(verbs) < len(r.Verbs)
			r.Verbs = verbs
		}
		rules = append(rules, r)
	}
	if !removed {
		t.Fatalf("the chart's ClusterRole has no pods update/patch rule: %+v", role.Rules)
	}
	role.Rules = rules
	if _, err := roles.Update(env.Ctx, role, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := len(simtest.GrepLogs(env.Cluster.HuddleLogs(), simtest.RBACDenied))
	time.Sleep(time.Second) // the authorizer's informer sees the change
	env.Create(env.Claim("data"), env.Pod("held", "data"))
	env.Eventually("huddle says Forbidden", 30*time.Second, func() error {
		if n := len(simtest.GrepLogs(env.Cluster.HuddleLogs(), simtest.RBACDenied)); n <= before {
			return fmt.Errorf("no new forbidden line in huddle's logs")
		}
		return nil
	})
	p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "held", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasGate(*p) || p.Spec.NodeName != "" {
		t.Fatalf("without the permission the pod was released anyway (gated=%v, node %q)", hasGate(*p), p.Spec.NodeName)
	}
	restore()
	placed(env, "held", time.Minute)
}

// TestUninstallReleasesEverything runs last: helm uninstall while huddle
// holds a pod gated. The chart's pre-delete hook removes the webhook
// configuration and huddle's gate from every pod; afterwards pod creation
// is neither blocked nor slowed, and no pod stays gated.
func TestUninstallReleasesEverything(t *testing.T) {
	env := simtest.New(t)
	env.AddNodes(1, simtest.NodeOptions{})
	// No node satisfies this pod's selector: huddle holds it gated
	// (NoCandidateNodes) for as long as huddle runs.
	held := env.Pod("held", "data")
	held.Spec.NodeSelector["no-such-label"] = "x"
	env.Create(env.Claim("data"), held)
	env.Eventually("huddle holds the pod", 30*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "held", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !hasGate(*p) || p.Annotations["huddle.io/held"] == "" {
			return fmt.Errorf("gated=%v held=%q", hasGate(*p), p.Annotations["huddle.io/held"])
		}
		return nil
	})
	start := time.Now()
	if err := env.Cluster.UninstallHuddle(env.Ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("helm uninstall took %s", time.Since(start).Round(time.Millisecond))
	if _, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(env.Ctx, cluster.HuddleRelease, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the webhook configuration after uninstall: %v, want NotFound", err)
	}
	// The hook deleted the certificate Secret; helm deleted the hook's own
	// RBAC after it succeeded, and huddle's.
	if _, err := env.Client.CoreV1().Secrets(cluster.HuddleNamespace).Get(env.Ctx, "huddle-webhook-cert", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the certificate Secret after uninstall: %v, want NotFound", err)
	}
	for _, name := range []string{cluster.HuddleRelease, cluster.HuddleRelease + "-cleanup"} {
		if _, err := env.Client.RbacV1().ClusterRoles().Get(env.Ctx, name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("ClusterRole %s after uninstall: %v, want NotFound", name, err)
		}
	}
	if pods, err := env.Cluster.HuddlePods(env.Ctx); err != nil || len(pods) > 0 {
		t.Errorf("huddle's pods after uninstall: %d (%v)", len(pods), err)
	}
	all, err := env.Client.CoreV1().Pods("").List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all.Items {
		if hasGate(p) {
			t.Errorf("pod %s/%s still carries huddle's gate after uninstall", p.Namespace, p.Name)
		}
	}
	// New pods of a shared claim in an opted-in scope are created at once
	// and go to the scheduler ungated.
	for i := range 5 {
		name := fmt.Sprintf("after-%d", i)
		t0 := time.Now()
		env.Create(env.Pod(name, "data"))
		if took := time.Since(t0); took > time.Second {
			t.Errorf("creating %s took %s after uninstall", name, took)
		}
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if hasGate(*p) {
			t.Errorf("pod %s was gated after uninstall", name)
		}
	}
}

func firstKey(m map[string]int) string {
	for k := range m {
		return k
	}
	return ""
}
