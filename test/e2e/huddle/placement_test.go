package huddle

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestRolloutsComplete: kubectl rollout restart of every Sentry Deployment,
// and of a one-replica RollingUpdate Deployment with its own RWO claim,
// completes; every new pod runs on its claim's home (the stock scheduler
// stalls here, see test/e2e/sim TestRollingUpdateStallsOnRWOClaim).
func TestRolloutsComplete(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	env.Create(env.Claim("solo-data"), env.Deployment("solo", 1, "solo-data"))
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)
	soloHome := together(env, "app=solo", 1, time.Minute)

	for _, d := range []string{"sentry-web", "sentry-worker", "sentry-cron", "sentry-ingest-consumer", "solo"} {
		kubectl(env, "rollout", "restart", "deployment/"+d)
	}
	for _, d := range []string{"sentry-web", "sentry-worker", "sentry-cron", "sentry-ingest-consumer", "solo"} {
		kubectl(env, "rollout", "status", "deployment/"+d, "--timeout=90s")
	}
	if got := together(env, "app.kubernetes.io/part-of=sentry", 6, 30*time.Second); got != home {
		t.Fatalf("sentry moved from %s to %s", home, got)
	}
	if got := together(env, "app=solo", 1, 30*time.Second); got != soloHome {
		t.Fatalf("solo moved from %s to %s", soloHome, got)
	}
	for _, p := range env.Pods("app.kubernetes.io/part-of=sentry") {
		if !pinnedHome(p, home) {
			t.Errorf("pod %s pinned-by %q, want home %s", p.Name, p.Annotations["huddle.io/pinned-by"], home)
		}
	}
	if n := eventCount(env, "FailedAttachVolume"); n != 0 {
		t.Fatalf("%d FailedAttachVolume events, want 0", n)
	}
}

// TestScaleZeroToTwenty: 20 pods of one huddle created at once all land on
// one node.
func TestScaleZeroToTwenty(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("burst", 0, "data"))
	scale(env, "burst", 20)
	home := together(env, "app=burst", 20, 2*time.Minute)
	huddled(env, "data", home, 20)
}

// TestFirstPlacementFitsWholeHuddle: on 5-CPU nodes (4920m allocatable)
// where one node already runs 3 CPU of other pods, a huddle that needs 4
// CPU in all (with its surge) is placed where all of it fits, never split.
func TestFirstPlacementFitsWholeHuddle(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	// 5 CPU, not 4: a 4-CPU node's 3920m allocatable holds only 7 of the
	// 8 members with surge, so no node would fit the whole huddle.
	nodes := env.AddNodes(2, simtest.NodeOptions{CPU: "5"})
	busy := env.Pod("busy")
	busy.Spec.NodeSelector[corev1.LabelHostname] = nodes[0]
	busy.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("3")
	env.Create(busy)
	env.Eventually("busy pod running", 30*time.Second, func() error { return runningOn(env, "busy", nodes[0]) })

	// 6 x 500m = 3 CPU, 4 with the surge of 2; the stock scheduler would
	// put the first pod on either node.
	dep := env.Deployment("app", 6, "data")
	dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("500m")
	env.Create(env.Claim("data"), dep)
	if home := together(env, "app=app", 6, time.Minute); home != nodes[1] {
		t.Fatalf("huddle placed on %s, want %s where all of it fits", home, nodes[1])
	}
}

// TestNoNodeFits: a huddle bigger than any node is placed where most of
// it fits; the Huddle says Fits=False and names the shortfall; the rest
// waits Pending at home, never elsewhere.
func TestNoNodeFits(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	// 5 CPU nodes, 4920m allocatable: 4 members of 1 CPU fit at home (a
	// 4-CPU node's 3920m would hold only 3).
	env.AddNodes(2, simtest.NodeOptions{CPU: "5"})
	dep := env.Deployment("big", 5, "data")
	dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1") // 5 CPU (+2 surge) > 4920m
	env.Create(env.Claim("data"), dep)
	var home string
	env.Eventually("Fits=False with the shortfall", time.Minute, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionFits)
		if h.Status.Home == "" || c == nil || c.Status != metav1.ConditionFalse || !strings.Contains(c.Message, "lacks") || !strings.Contains(c.Message, "CPU") {
			return fmt.Errorf("home=%q fits=%+v", h.Status.Home, c)
		}
		home = h.Status.Home
		return nil
	})
	env.Eventually("4 running at home, 1 pending", time.Minute, func() error {
		running, pending := 0, 0
		for _, p := range env.Pods("app=big") {
			switch {
			case p.Status.Phase == corev1.PodRunning && p.Spec.NodeName == home:
				running++
			case p.Spec.NodeName == "" && !hasGate(p) && pinnedHome(p, home):
				pending++
			default:
				return fmt.Errorf("pod %s on %q phase %s", p.Name, p.Spec.NodeName, p.Status.Phase)
			}
		}
		if running != 4 || pending != 1 {
			return fmt.Errorf("%d running, %d pending", running, pending)
		}
		return nil
	})
	env.Never("the extra pod never goes elsewhere", 3*time.Second, func() error {
		for _, p := range env.Pods("app=big") {
			if p.Spec.NodeName != "" && p.Spec.NodeName != home {
				return fmt.Errorf("pod %s went to %s", p.Name, p.Spec.NodeName)
			}
		}
		return nil
	})
}

// TestDrainMovesHuddleTogether: kubectl drain of the home node brings the
// whole huddle back together on one other node.
func TestDrainMovesHuddleTogether(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)
	start := time.Now()
	kubectl(env, "drain", home, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
	// Within the 60 s life of a first-member record: a stale record of a
	// drained pod must not hold the replacements (it did, once).
	moved := together(env, "app.kubernetes.io/part-of=sentry", 6, 45*time.Second)
	t.Logf("drain of %s: huddle Running together on %s %s after the drain began (timing %s)", home, moved, time.Since(start).Round(100*time.Millisecond), env.Timing().Name)
	if moved == home {
		t.Fatalf("huddle still on drained node %s", home)
	}
	huddled(env, "sentry-data", moved, 6)
}

// TestUnsharedClaimsLeftAlone: pods of claims that are not shared are
// released untouched: an RWX volume, a driver without attach, a
// ReadWriteOncePod claim, a claim opted out.
func TestUnsharedClaimsLeftAlone(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(2, simtest.NodeOptions{})
	noAttach := "nfs.csi.k8s.io-" + env.Namespace
	if _, err := env.Client.StorageV1().CSIDrivers().Create(env.Ctx, csiDriver(noAttach, false), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.StorageV1().CSIDrivers().Delete(env.Ctx, noAttach, metav1.DeleteOptions{}) })

	staticClaim := func(name, driver string, mode corev1.PersistentVolumeAccessMode) {
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + env.Namespace},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
				AccessModes: []corev1.PersistentVolumeAccessMode{mode},
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: driver, VolumeHandle: name + "-" + env.Namespace}},
				ClaimRef:         &corev1.ObjectReference{Namespace: env.Namespace, Name: name},
				StorageClassName: "",
			},
		}
		if _, err := env.Client.CoreV1().PersistentVolumes().Create(env.Ctx, pv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c := env.Claim(name)
		c.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{mode}
		c.Spec.StorageClassName = ptr.To("")
		c.Spec.VolumeName = pv.Name
		env.Create(c)
	}
	staticClaim("rwx", noAttach, corev1.ReadWriteMany)
	staticClaim("noattach", noAttach, corev1.ReadWriteOnce)
	rwop := env.Claim("rwop")
	rwop.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
	optedOut := env.Claim("opted-out")
	optedOut.Annotations = map[string]string{"huddle.io/share": "false"}
	env.Create(rwop, optedOut)

	for _, c := range []string{"rwx", "noattach", "rwop", "opted-out"} {
		env.Create(env.Pod("pod-"+c, c))
	}
	for _, c := range []string{"rwx", "noattach", "rwop", "opted-out"} {
		name := "pod-" + c
		env.Eventually(name+" released untouched", 30*time.Second, func() error {
			p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if hasGate(*p) {
				return fmt.Errorf("still gated")
			}
			if p.Annotations["huddle.io/pinned-by"] != "" || (p.Spec.Affinity != nil && p.Spec.Affinity.NodeAffinity != nil) {
				return fmt.Errorf("pinned: %q %+v", p.Annotations["huddle.io/pinned-by"], p.Spec.Affinity)
			}
			return nil
		})
		if _, err := env.Huddle(c); err == nil {
			t.Errorf("claim %s is not shared but has a Huddle", c)
		}
	}
}

// TestInvalidHuddleRejected: the API server refuses a Huddle with an
// invalid spec and names the field.
func TestInvalidHuddleRejected(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	for _, tc := range []struct {
		name string
		spec huddlev1.HuddleSpec
		want string
	}{
		{"repair", huddlev1.HuddleSpec{Repair: "Sometimes"}, "spec.repair"},
		{"move", huddlev1.HuddleSpec{Move: "Always"}, "spec.move"},
		{"moveAfter", huddlev1.HuddleSpec{MoveAfter: &metav1.Duration{Duration: -time.Minute}}, "spec.moveAfter"},
		{"headroom", huddlev1.HuddleSpec{Headroom: &huddlev1.Headroom{CPU: ptr.To(resource.MustParse("-1"))}}, "spec.headroom.cpu must not be negative"},
	} {
		h := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: tc.name, Namespace: env.Namespace}, Spec: tc.spec}
		err := env.Typed.Create(env.Ctx, h)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: create error %v, want one naming %q", tc.name, err, tc.want)
		}
	}
	ok := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: "fine", Namespace: env.Namespace},
		Spec: huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: time.Minute}, Headroom: &huddlev1.Headroom{CPU: ptr.To(resource.MustParse("500m"))}}}
	if err := env.Typed.Create(env.Ctx, ok); err != nil {
		t.Fatalf("valid Huddle refused: %v", err)
	}
}

// TestMissingClaimReleased: a pod whose claim does not exist is not held
// forever: after the grace period it is released with an event, and the
// scheduler reports the missing claim.
func TestMissingClaimReleased(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(1, simtest.NodeOptions{})
	env.Create(env.Pod("orphan", "nowhere"))
	env.Eventually("released with ClaimMissing", 30*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "orphan", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if hasGate(*p) {
			return fmt.Errorf("still gated: %s", p.Annotations["huddle.io/held"])
		}
		if len(env.Events("orphan", "ClaimMissing")) == 0 {
			return fmt.Errorf("no ClaimMissing event")
		}
		return nil
	})
}

// TestRestartPlacesGatedPods: huddle killed while pods are gated, and
// started again, places every pod correctly: nothing it needs lives only in
// its memory. The gated pods are created while huddle is down, carrying the
// gate the webhook would have added before the crash: members of a huddle
// with a home, and members of a new huddle.
func TestRestartPlacesGatedPods(t *testing.T) {
	// Not parallel: it stops the cluster's huddle.
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)

	env.Cluster.StopHuddle(true)
	defer func() {
		if env.Cluster.Huddle == nil {
			if err := env.Cluster.StartHuddle(env.Ctx); err != nil {
				t.Errorf("restart huddle: %v", err)
			}
		}
	}()
	gated := func(name, claim, label string) *corev1.Pod {
		p := env.Pod(name, claim)
		p.Labels = map[string]string{label: "x"}
		p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "huddle.io/placement"}}
		return p
	}
	env.Create(env.Claim("fresh"))
	for i := range 3 {
		env.Create(gated(fmt.Sprintf("late-%d", i), "sentry-data", "late"), gated(fmt.Sprintf("fresh-%d", i), "fresh", "fresh"))
	}
	env.Never("gated pods wait while huddle is down", 2*time.Second, func() error {
		for _, p := range append(env.Pods("late=x"), env.Pods("fresh=x")...) {
			if p.Spec.NodeName != "" || !hasGate(p) {
				return fmt.Errorf("pod %s on %q, gated=%v", p.Name, p.Spec.NodeName, hasGate(p))
			}
		}
		return nil
	})
	if err := env.Cluster.StartHuddle(env.Ctx); err != nil {
		t.Fatal(err)
	}
	if got := together(env, "late=x", 3, time.Minute); got != home {
		t.Fatalf("after restart the late members run on %s, want home %s", got, home)
	}
	together(env, "fresh=x", 3, time.Minute)
}

func kubectl(env *simtest.Env, args ...string) {
	env.T.Helper()
	cmd := exec.CommandContext(env.Ctx, env.Cluster.Binaries.Kubectl, append([]string{"--kubeconfig", env.Cluster.Kubeconfig, "-n", env.Namespace}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		env.T.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func scale(env *simtest.Env, deployment string, n int) {
	env.T.Helper()
	patch := fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)
	if _, err := env.Client.AppsV1().Deployments(env.Namespace).Patch(env.Ctx, deployment, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		env.T.Fatal(err)
	}
}

func runningOn(env *simtest.Env, pod, node string) error {
	p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, pod, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Spec.NodeName != node || p.Status.Phase != corev1.PodRunning {
		return fmt.Errorf("%s on %q is %s", pod, p.Spec.NodeName, p.Status.Phase)
	}
	return nil
}

func hasGate(p corev1.Pod) bool {
	for _, g := range p.Spec.SchedulingGates {
		if g.Name == "huddle.io/placement" {
			return true
		}
	}
	return false
}
