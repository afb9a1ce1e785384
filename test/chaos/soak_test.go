package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// result is one run's line of the summary table.
type result struct {
	seed       uint64
	took       time.Duration
	faults     map[string]int
	huddles    int
	pods       int
	violations []violation
	// unpinnedMultiAttach: Multi-Attach reports of pods huddle did not
	// place (created ungated while no replica answered the webhook).
	unpinnedMultiAttach, evictions, settled int
	// failover: HomeFenced and HomeDeleted events, by reason.
	failover map[string]int
}

// TestSoak runs the seeded chaos soak: -seeds runs of -duration of
// faults each, then checks that everything comes back within -settle.
func TestSoak(t *testing.T) {
	if *flagDuration <= 0 {
		t.Skip("the soak runs only with -duration: make soak (long), .ci/run (short), or go test ./test/chaos -run TestSoak -args -duration 2m")
	}
	seed := *flagSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano()%1_000_000) + 1
	}
	var results []result
	for i := range *flagSeeds {
		s := seed + uint64(i)
		t.Run(fmt.Sprintf("seed=%d", s), func(t *testing.T) { results = append(results, soak(t, s)) })
	}
	table := summary(results)
	t.Log("\n" + table)
	fmt.Fprintln(os.Stderr, table)
}

// replay is the command that runs one seed again.
func replay(seed uint64) string {
	return fmt.Sprintf("go test ./test/chaos -run TestSoak -count=1 -v -timeout 0 -args -seed %d -duration %s -groups %d -nodes %d -every %s",
		seed, *flagDuration, *flagGroups, *flagNodes, *flagEvery)
}

func soak(t *testing.T, seed uint64) result {
	t.Logf("seed %d; replay with: %s", seed, replay(seed))
	started := time.Now()
	env := simtest.New(t)
	nodes := env.AddNodes(*flagNodes, simtest.NodeOptions{})
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	check := newChecker(env)
	w := createWorkloads(env, rng, *flagGroups)
	// Faults start once the workloads first run (or after a minute).
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) && len(converged(env, w)) > 0 {
		time.Sleep(time.Second)
	}
	c := &chaos{env: env, rng: rng, w: w, start: time.Now(), nodes: nodes, disrupted: map[string]bool{}, counts: map[string]int{}}
	defer c.background.Wait() // also when the test fails: they log
	c.logf("faults start (%d pods)", len(env.Pods("")))
	for time.Since(c.start) < *flagDuration {
		c.inject()
		// Exponential gaps, mean -every, at least 200ms.
		gap := max(time.Duration(rng.ExpFloat64()*float64(*flagEvery)), 200*time.Millisecond)
		for end := time.Now().Add(gap); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
			c.runUndos(false)
		}
	}
	c.logf("faults stop; ending those in progress")
	c.runUndos(true)
	c.background.Wait()
	stopped := time.Now()
	var late []violation
	for {
		late = converged(env, w)
		if len(late) == 0 || time.Since(stopped) > *flagSettle {
			break
		}
		time.Sleep(time.Second)
	}
	settled := time.Since(stopped)
	if len(late) == 0 {
		c.logf("every huddle Huddled, every replica Running, %s after the faults stopped", settled.Round(100*time.Millisecond))
	}
	check.close()
	vs, pods, unpinned, evictions := check.snapshot()
	for _, v := range late {
		v.At = time.Since(check.start)
		vs = append(vs, v)
	}
	huddles := &huddlev1.HuddleList{}
	_ = env.Typed.List(env.Ctx, huddles, client.InNamespace(env.Namespace))
	r := result{seed: seed, took: time.Since(started), faults: c.counts, huddles: len(huddles.Items), pods: pods, violations: vs,
		unpinnedMultiAttach: unpinned, evictions: evictions, settled: int(settled.Seconds()), failover: check.failoverCounts()}
	if len(vs) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "%d violations with seed %d:\n", len(vs), seed)
		for _, v := range vs {
			fmt.Fprintf(&b, "  [%6.1fs] %s: %s\n", v.At.Seconds(), v.Kind, v.What)
		}
		fmt.Fprintf(&b, "replay: %s", replay(seed))
		t.Error(b.String())
	}
	return r
}

// converged lists what is not back yet: a huddle not Huddled with every
// member ready at home, a workload short of replicas.
func converged(env *simtest.Env, w *world) []violation {
	var out []violation
	late := func(kind, format string, args ...any) {
		out = append(out, violation{Kind: kind, What: fmt.Sprintf(format, args...)})
	}
	pods := env.Pods("")
	byClaim := map[string][]corev1.Pod{}
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || strings.HasPrefix(p.Name, "filler-") {
			continue
		}
		for _, cl := range podClaims(&p) {
			byClaim[cl] = append(byClaim[cl], p)
		}
	}
	running := func(sel map[string]string) (n int, notes []string) {
		s := labels.SelectorFromSet(sel)
		for _, p := range pods {
			if !s.Matches(labels.Set(p.Labels)) || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && ready(&p) {
				n++
			} else {
				notes = append(notes, fmt.Sprintf("%s %s on %q deleting=%v", p.Name, p.Status.Phase, p.Spec.NodeName, p.DeletionTimestamp != nil))
			}
		}
		return n, notes
	}
	for _, name := range w.deployments {
		d, err := env.Client.AppsV1().Deployments(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
		if err != nil {
			late(vLostReplica, "deployment %s: %v", name, err)
			continue
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		n, notes := running(d.Spec.Selector.MatchLabels)
		if !rolledOut(d) || int32(n) != want || len(notes) > 0 {
			late(vLostReplica, "deployment %s: %d of %d replicas Running and Ready (updated %d, available %d); others: %s", name, n, want, d.Status.UpdatedReplicas, d.Status.AvailableReplicas, strings.Join(notes, ", "))
		}
	}
	for _, name := range w.statefulSets {
		s, err := env.Client.AppsV1().StatefulSets(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
		if err != nil {
			late(vLostReplica, "statefulset %s: %v", name, err)
			continue
		}
		want := ptr.Deref(s.Spec.Replicas, 1)
		n, notes := running(s.Spec.Selector.MatchLabels)
		if int32(n) != want || s.Status.UpdatedReplicas != want || len(notes) > 0 {
			late(vLostReplica, "statefulset %s: %d of %d replicas Running and Ready (updated %d); others: %s", name, n, want, s.Status.UpdatedReplicas, strings.Join(notes, ", "))
		}
	}
	jobs, err := env.Client.BatchV1().Jobs(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err == nil {
		for _, j := range jobs.Items {
			if !jobDone(&j, batchv1.JobComplete) {
				late(vLostReplica, "job %s not complete (succeeded %d, failed %d, active %d)", j.Name, j.Status.Succeeded, j.Status.Failed, ptr.Deref(j.Status.Ready, 0))
			}
		}
	}
	for _, name := range w.bare {
		// A bare pod is gone for good when its node dies (nothing
		// recreates it); huddle evicting one is caught by the checker.
		for _, p := range pods {
			if p.Name == name && (p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil) {
				late(vLostReplica, "bare pod %s %s on %q", name, p.Status.Phase, p.Spec.NodeName)
			}
		}
	}
	claims := make([]string, 0, len(byClaim))
	for cl := range byClaim {
		claims = append(claims, cl)
	}
	sort.Strings(claims)
	for _, cl := range claims {
		h, err := env.Huddle(cl)
		if err != nil {
			late(vNotHuddled, "claim %s: no Huddle: %v", cl, err)
			continue
		}
		s := h.Status
		var away []string
		for _, p := range byClaim[cl] {
			if p.Spec.NodeName != s.Home {
				away = append(away, fmt.Sprintf("%s on %q", p.Name, p.Spec.NodeName))
			}
		}
		if s.Phase != huddlev1.PhaseHuddled || s.MemberCount != s.ReadyCount || int(s.MemberCount) != len(byClaim[cl]) || len(away) > 0 {
			var why []string
			for _, m := range s.Members {
				if m.Reason != "" {
					why = append(why, m.Pod+": "+m.Reason)
				}
			}
			late(vNotHuddled, "huddle %s: phase %s, home %q, %d members, %d ready, %d pods mount it; away from home: [%s]; members: [%s]",
				cl, s.Phase, s.Home, s.MemberCount, s.ReadyCount, len(byClaim[cl]), strings.Join(away, ", "), strings.Join(why, "; "))
		}
	}
	return out
}

func ready(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func rolledOut(d *appsv1.Deployment) bool {
	want := ptr.Deref(d.Spec.Replicas, 1)
	return d.Status.ObservedGeneration >= d.Generation && d.Status.UpdatedReplicas == want && d.Status.ReadyReplicas == want && d.Status.Replicas == want
}

func jobDone(j *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// summary renders the table the soak ends with.
func summary(rs []result) string {
	var b strings.Builder
	fmt.Fprintln(&b, "chaos soak summary")
	fmt.Fprintf(&b, "| seed | duration | faults | huddles | pods | evictions | failover | settled | violations |\n|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		fmt.Fprintf(&b, "| %d | %s | %s | %d | %d | %d | %s | %ds | %s |\n", r.seed, r.took.Round(time.Second), counts(r.faults), r.huddles, r.pods, r.evictions, counts(r.failover), r.settled, violationCounts(r.violations))
	}
	for _, r := range rs {
		if r.unpinnedMultiAttach > 0 {
			fmt.Fprintf(&b, "seed %d: %d Multi-Attach reports of pods huddle did not pin (not violations)\n", r.seed, r.unpinnedMultiAttach)
		}
	}
	return b.String()
}

func counts(m map[string]int) string {
	total := 0
	var parts []string
	for k, n := range m {
		total += n
		parts = append(parts, fmt.Sprintf("%s %d", k, n))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func violationCounts(vs []violation) string {
	if len(vs) == 0 {
		return "0"
	}
	m := map[string]int{}
	for _, v := range vs {
		m[v.Kind]++
	}
	return counts(m)
}
