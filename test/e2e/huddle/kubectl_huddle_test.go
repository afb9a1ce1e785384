package huddle

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/plugin"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// kubectlHuddle runs kubectl huddle (in process, as the binary would)
// against the test's cluster and namespace.
func kubectlHuddle(env *simtest.Env, args ...string) (string, error) {
	env.T.Helper()
	var out, errOut bytes.Buffer
	cmd := plugin.NewCommand(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	cmd.SetArgs(append(args, "--kubeconfig", env.Cluster.Kubeconfig, "-n", env.Namespace))
	err := cmd.ExecuteContext(env.Ctx)
	env.T.Logf("kubectl huddle %s:\n%s%s", strings.Join(args, " "), out.String(), errOut.String())
	return out.String() + errOut.String(), err
}

// TestPluginStatusSentry: on the Sentry demo, kubectl huddle status shows
// one home with all six members, Ready and Huddled, and exits 0; -o wide
// names every member at home.
func TestPluginStatusSentry(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, time.Minute)
	huddled(env, "sentry-data", home, 6)
	out, err := kubectlHuddle(env, "status")
	if err != nil {
		t.Fatalf("status: %v (exit %d)", err, plugin.ExitCode(err))
	}
	row := regexp.MustCompile(`(?m)^sentry-data\s+` + regexp.QuoteMeta(home) + `\s+` + regexp.QuoteMeta(home) + `:6\s+6/6\s+Huddled\s+yes\s+-\s+`)
	if !row.MatchString(out) {
		t.Fatalf("status has no row: sentry-data, home %s, all 6 members there, 6/6 Ready, Huddled, fits:\n%s", home, out)
	}
	wide, err := kubectlHuddle(env, "status", "sentry-data", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range env.Pods("app.kubernetes.io/part-of=sentry") {
		if !strings.Contains(wide, p.Name+"@"+home) {
			t.Errorf("-o wide lacks %s@%s", p.Name, home)
		}
	}
	if _, err := kubectlHuddle(env, "status", "no-such-claim"); err == nil || !strings.Contains(err.Error(), "no huddle no-such-claim") {
		t.Errorf("status of a missing huddle: %v", err)
	}
}

// TestPluginExplainAndReleaseHeld: a pod held for NoCandidateNodes (no
// node has the label every member selects) is explained with the reason
// and the fix; kubectl huddle release removes the gate, records it on the
// pod and in an event.
func TestPluginExplainAndReleaseHeld(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(1, simtest.NodeOptions{})
	dep := env.Deployment("nowhere", 2, "data")
	dep.Spec.Template.Spec.NodeSelector["disk"] = "nvme" // no node has it
	env.Create(env.Claim("data"), dep)
	var pod corev1.Pod
	env.Eventually("a member held for NoCandidateNodes", time.Minute, func() error {
		for _, p := range env.Pods("app=nowhere") {
			if hasGate(p) && p.Annotations["huddle.io/held"] != "" && len(env.Events(p.Name, "NoCandidateNodes")) > 0 {
				pod = p
				return nil
			}
		}
		return fmt.Errorf("no held member yet")
	})
	out, err := kubectlHuddle(env, "explain", "pod/"+pod.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"held by huddle (scheduling gate huddle.io/placement)", "huddle.io/held:", "NoCandidateNodes",
		"What to do:", "add such a node", "kubectl huddle release " + pod.Name} {
		if !strings.Contains(out, w) {
			t.Errorf("explain lacks %q", w)
		}
	}

	out, err = kubectlHuddle(env, "release", pod.Name)
	if err != nil || !strings.Contains(out, "pod/"+pod.Name+" released") {
		t.Fatalf("release: %v\n%s", err, out)
	}
	p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hasGate(*p) || p.Annotations["huddle.io/released-by"] != plugin.ReleasedByUser {
		t.Fatalf("after release: gates %v, annotations %v", p.Spec.SchedulingGates, p.Annotations)
	}
	if ev := env.Events(pod.Name, plugin.ReasonReleasedByUser); len(ev) != 1 || !strings.Contains(ev[0], "removed scheduling gate huddle.io/placement") {
		t.Fatalf("release events: %q", ev)
	}
	env.Eventually("the scheduler, not huddle, now says why it waits", 30*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !unschedulable(*p) {
			return fmt.Errorf("pod not reported Unschedulable: %+v", p.Status.Conditions)
		}
		return nil
	})
	if _, err := kubectlHuddle(env, "release", pod.Name); err == nil || !strings.Contains(err.Error(), "not held by huddle") {
		t.Fatalf("second release: %v", err)
	}
}

// TestPluginExplainNoFit: a huddle bigger than its one node is placed
// where most of it fits (NoNodeFitsHuddle) and its extra member waits at
// home; explain on that member names the shortfall and the fixes.
func TestPluginExplainNoFit(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(1, simtest.NodeOptions{CPU: "5"}) // 4920m allocatable: 4 members of 1 CPU
	dep := env.Deployment("big", 5, "data")
	dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1")
	env.Create(env.Claim("data"), dep)
	var waiting string
	env.Eventually("one member pending at home", time.Minute, func() error {
		for _, p := range env.Pods("app=big") {
			if p.Spec.NodeName == "" && !hasGate(p) && unschedulable(p) {
				waiting = p.Name
				return nil
			}
		}
		return fmt.Errorf("none pending")
	})
	if n := eventCount(env, "NoNodeFitsHuddle"); n == 0 {
		t.Fatal("no NoNodeFitsHuddle event")
	}
	// explain reads the Huddle's status, which the status controller
	// writes after the pods change (at most once a second): wait for it
	// to show the waiting member and Fits=False.
	env.Eventually("the Huddle's status shows the shortfall", 30*time.Second, func() error {
		h, err := env.Huddle("data")
		if err != nil {
			return err
		}
		if c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionFits); c == nil || c.Status != metav1.ConditionFalse {
			return fmt.Errorf("Fits is %v", c)
		}
		for _, m := range h.Status.Members {
			if m.Pod == waiting {
				return nil
			}
		}
		return fmt.Errorf("%s not among the members %v", waiting, h.Status.Members)
	})
	out, err := kubectlHuddle(env, "explain", "pod/"+waiting)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Fits:", "False", "the huddle does not fit: ", "lacks", "CPU", "pinned to its huddle's home",
		"kubectl huddle plan", "spec.move: WhenStuck", "spec.headroom"} {
		if !strings.Contains(out, w) {
			t.Errorf("explain lacks %q", w)
		}
	}
	out, err = kubectlHuddle(env, "explain", "huddle/data")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"Huddle " + env.Namespace + "/data", "it does not fit:", "lacks", waiting + " on -"} {
		if !strings.Contains(out, w) {
			t.Errorf("explain huddle lacks %q", w)
		}
	}
}

// TestPluginMove: kubectl huddle move --to moves a healthy huddle whole to
// the node asked for (its members evicted, their replacements pinned
// there, the volume following), and refuses a move that could not finish
// (a bare pod member would not be recreated), touching nothing.
func TestPluginMove(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	nodes := env.AddNodes(2, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Deployment("app", 2, "data"))
	home := together(env, "app=app", 2, time.Minute)
	huddled(env, "data", home, 2)
	target := nodes[0]
	if target == home {
		target = nodes[1]
	}

	out, err := kubectlHuddle(env, "move", "data", "--to", target)
	if err != nil || !strings.Contains(out, "from "+home+" to "+target+", as requested") {
		t.Fatalf("move --to %s: %v\n%s", target, err, out)
	}
	// Right after the request is answered the members still run at the
	// old home, together: wait for them on the target.
	env.Eventually("the members together on "+target, 2*time.Minute, func() error {
		if got := together(env, "app=app", 2, 2*time.Minute); got != target {
			return fmt.Errorf("the members run on %s", got)
		}
		return nil
	})
	env.Eventually("the move recorded as finished", time.Minute, func() error {
		h := huddled(env, "data", target, 2)
		if mv := h.Status.LastMove; mv == nil || mv.Result != "Succeeded" || mv.From != home || mv.To != target {
			return fmt.Errorf("last move %+v", h.Status.LastMove)
		}
		if r := h.Status.MoveRequest; r == nil || r.Result != "Started" {
			return fmt.Errorf("move request status %+v", r)
		}
		return nil
	})
	// Only the two members there were evicted: a replacement pinned to
	// the old home would have been evicted too.
	events, err := env.Client.CoreV1().Events(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	evicted := map[string]bool{}
	for _, e := range events.Items {
		if e.Reason == "EvictedAwayFromHome" && e.InvolvedObject.Kind == "Pod" {
			evicted[e.InvolvedObject.Name] = true
		}
	}
	if len(evicted) != 2 {
		t.Errorf("pods evicted away from home: %v, want the 2 members at the old home", evicted)
	}

	// A bare pod joins: it has no controller to recreate it at a target.
	env.Create(env.Pod("bare", "data"))
	together(env, "app in (app,bare)", 3, time.Minute)
	before := map[string]string{}
	for _, p := range env.Pods("app in (app,bare)") {
		before[p.Name] = string(p.UID)
	}
	_, err = kubectlHuddle(env, "move", "data")
	if err == nil || !strings.Contains(err.Error(), "move refused") || !strings.Contains(err.Error(), "member bare would not be recreated") {
		t.Fatalf("move with a bare member: want it refused, saying why; got %v", err)
	}
	time.Sleep(3 * time.Second) // what a wrongly started move would evict by now
	for _, p := range env.Pods("app in (app,bare)") {
		if before[p.Name] != string(p.UID) || p.DeletionTimestamp != nil || p.Spec.NodeName != target {
			t.Errorf("pod %s changed after a refused move (node %s, deleting %v)", p.Name, p.Spec.NodeName, p.DeletionTimestamp != nil)
		}
	}
	if ev := eventCount(env, "MoveRefused"); ev == 0 {
		t.Error("no MoveRefused event")
	}
}
