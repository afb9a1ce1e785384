package huddle

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// hog runs a bare pod labelled hog=true on node, which members that
// refuse to share a node with it (pod anti-affinity, which huddle does
// not model) cannot join.
func hog(env *simtest.Env, name, node string) {
	env.T.Helper()
	p := env.Pod(name)
	p.Labels["hog"] = "true"
	p.Spec.NodeName = node
	env.Create(p)
}

// TestStuckFirstMemberReplaced: the first member of a new huddle is pinned
// to the nodes where the huddle fits, but a constraint huddle does not
// model (anti-affinity to pods on every one of them) keeps it
// Unschedulable, and the other member waits for it. A node outside the
// pin (cordoned while the member was placed) is uncordoned meanwhile. Once the member has been Unschedulable for
// --unschedulable-deadline it is deleted (an event on the pod and the
// Huddle says why), its replacement is gated and placed afresh, and the
// whole huddle runs on that node. Before, both waited forever.
func TestStuckFirstMemberReplaced(t *testing.T) {
	// Not parallel: it upgrades the cluster's huddle with a short deadline.
	env := simtest.New(t)
	setHuddleValues(env, map[string]any{"unschedulableDeadline": "5s"})
	nodes := env.AddNodes(3, simtest.NodeOptions{})
	// The third node is cordoned while the first member is placed: not a
	// candidate, it is where the huddle can go once it is uncordoned.
	spare := nodes[2]
	kubectl(env, "cordon", spare)
	for i, n := range nodes[:2] {
		hog(env, fmt.Sprintf("hog-%d", i), n)
	}
	dep := env.Deployment("app", 2, "data")
	dep.Spec.Template.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"hog": "true"}},
			TopologyKey:   corev1.LabelHostname,
		}},
	}}
	env.Create(env.Claim("data"), dep)

	var first corev1.Pod
	env.Eventually("the first member pinned to the candidates and Unschedulable", time.Minute, func() error {
		for _, p := range env.Pods("app=app") {
			if strings.Contains(p.Annotations["huddle.io/pinned-by"], " candidates ") && unschedulable(p) {
				first = p
				return nil
			}
		}
		return fmt.Errorf("pods: %s", placements(env, "app=app"))
	})
	t.Logf("first member %s pinned (%s) and Unschedulable", first.Name, first.Annotations["huddle.io/pinned-by"])
	kubectl(env, "uncordon", spare)
	start := time.Now()

	home := together(env, "app=app", 2, 2*time.Minute)
	t.Logf("huddle running together on %s %s after the spare node was uncordoned", home, time.Since(start).Round(100*time.Millisecond))
	if home != spare {
		t.Errorf("huddle on %s, want the spare node %s", home, spare)
	}
	if _, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, first.Name, metav1.GetOptions{}); err == nil {
		t.Errorf("the stuck member %s still exists", first.Name)
	}
	for _, object := range []string{first.Name, "data"} {
		ev := env.Events(object, "ReplacedStuckMember")
		if len(ev) == 0 || !strings.Contains(ev[0], "unschedulable for over 5s") {
			t.Errorf("ReplacedStuckMember events on %s: %q", object, ev)
		}
	}
	huddled(env, "data", home, 2)
}

// TestMoveRefusedWithBarePod: a move evicts every member, and a bare pod
// evicted is gone for good, so a huddle with one is never moved: the
// Moving condition (MoveBlocked) and an event say why, and nothing is
// evicted. Before, the move started, evicted the Deployment's members and
// could never finish (the bare pod held the volume at the old home).
func TestMoveRefusedWithBarePod(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	// The bare member takes the room of one Deployment member at home:
	// after the scale-up two of the Deployment's members wait there.
	home := crowdedHomeWith(env, huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: 3 * time.Second}}, func() []*corev1.Pod {
		bare := env.Pod("bare", "data")
		bare.Labels = map[string]string{"app": "app"}
		bare.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("500m")
		return []*corev1.Pod{bare}
	})
	env.Eventually("the Huddle and an event say the bare pod blocks the move", 2*time.Minute, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionMoving)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "MoveBlocked" ||
			!strings.Contains(c.Message, "member bare would not be recreated at the target") {
			return fmt.Errorf("Moving: %+v (pods %s)", c, placements(env, "app=app"))
		}
		if len(env.Events("data", "MoveBlocked")) == 0 {
			return fmt.Errorf("no MoveBlocked event on the Huddle")
		}
		return nil
	})
	env.Never("no member is evicted and no move starts", 5*time.Second, func() error {
		for _, p := range env.Pods("app=app") {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s evicted", p.Name)
			}
			if p.Spec.NodeName != "" && p.Spec.NodeName != home {
				return fmt.Errorf("pod %s on %s, away from home %s", p.Name, p.Spec.NodeName, home)
			}
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
	// Without the bare pod the move can finish, and it does.
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "bare", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	moved := together(env, "app=app", 4, 3*time.Minute)
	if moved == home {
		t.Fatalf("huddle still at %s", home)
	}
	huddled(env, "data", moved, 4)
}

// crowdedHomeWith is crowdedHome with the extra pods (built once the pool
// exists, so they target it) created once the Deployment runs, before the
// filler; they must run at home.
func crowdedHomeWith(env *simtest.Env, spec huddlev1.HuddleSpec, build func() []*corev1.Pod) string {
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
	// The filler leaves room for one more 500m member, as in crowdedHome,
	// counted before the extra pods take their share.
	room := freeCPU(env, home)
	room.Sub(resource.MustParse("500m"))
	extra := build()
	for _, p := range extra {
		env.Create(p)
	}
	filler := env.Pod("filler")
	filler.Spec.NodeName = home
	filler.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = room
	env.Create(filler)
	env.Eventually("extra pods and filler running at home", time.Minute, func() error {
		for _, name := range append(podNames(extra), "filler") {
			p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodRunning || p.Spec.NodeName != home {
				return fmt.Errorf("%s %s on %q", name, p.Status.Phase, p.Spec.NodeName)
			}
		}
		return nil
	})
	kubectl(env, "scale", "deployment/app", "--replicas=4")
	return home
}

func podNames(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func unschedulable(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true
		}
	}
	return false
}
