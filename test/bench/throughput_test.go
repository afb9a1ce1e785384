package bench

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/huddle-io/huddle/internal/scope"
	simreport "github.com/huddle-io/huddle/internal/sim/report"
	"github.com/huddle-io/huddle/internal/sim/simtest"
	huddlewebhook "github.com/huddle-io/huddle/internal/webhook"
)

var (
	tpNodes = flag.Int("tp-nodes", 12, "nodes (m5.xlarge) of the throughput benchmark")
	tpPods  = flag.Int("tp-pods", 150, "pods of each arm of the throughput benchmark, in groups of 2-20 that share one claim")
	tpRate  = flag.Float64("tp-rate", 50, "pod creations per second in the throughput benchmark's burst")
	tpSeed  = flag.Uint64("tp-seed", 1, "seed of the throughput benchmark's group sizes and requests")
	tpArms  = flag.String("tp-arms", "stock,huddle,workaround", "arms of the throughput benchmark to run, in order (the ratios need all three)")
)

// BenchmarkThroughput starts the same burst of pods three ways, back to
// back on one cluster, and reports how fast each gets them Running:
//
//   - stock: every pod has a claim of its own (nothing shared), and huddle
//     is out of the way (the claims opt out): the stock scheduler's pace;
//   - huddle: the pods in groups of 2-20 that share one claim each, placed
//     by huddle;
//   - workaround: the same groups without huddle (claims opted out), each
//     group's members with the field's hand-written fix: required
//     podAffinity to the group's first pod, the anchor, by hostname.
//
// For each arm: pods Running per second over the burst (first create to
// last Running), create-to-Running p50 and p99 from the raw samples,
// scheduling attempts (Scheduled and FailedScheduling events), and pods
// that hung (not Running when the arm ended: Multi-Attach or
// Unschedulable). It reports huddle's throughput over stock's and over the
// workaround's, measured in the same run.
//
//	go test -run '^$' -bench Throughput -benchtime 1x ./test/bench/ -args -tp-nodes 200 -tp-pods 1000
//
// At the size of `make bench-throughput` (1,000 nodes, 5,000 pods per
// arm, eks timing) it takes about 45 minutes: give go test -timeout 120m.
func BenchmarkThroughput(b *testing.B) {
	arms := strings.Split(*tpArms, ",")
	for i, arm := range arms {
		if arm != "stock" && arm != "huddle" && arm != "workaround" || slices.Contains(arms[:i], arm) {
			b.Fatalf("-tp-arms %q: arm %q is none of stock, huddle, workaround, or named twice", *tpArms, arm)
		}
	}
	env := simtest.New(b)
	env.AddNodes(*tpNodes, simtest.NodeOptions{})
	w := newRunningWatch(env)
	groups := tpGroups(*tpPods, *tpSeed)
	byName := map[string]armResult{}
	var results []armResult
	for b.Loop() {
		results = results[:0]
		for _, arm := range arms {
			byName[arm] = runArm(b, env, w, arm, groups)
			results = append(results, byName[arm])
		}
	}
	stock, huddle, workaround := byName["stock"], byName["huddle"], byName["workaround"]
	b.Logf("%d pods in %d groups of 2-20 (seed %d), %d m5.xlarge nodes, %.0f creations/s; create to Running:", *tpPods, len(groups), *tpSeed, *tpNodes, *tpRate)
	b.Logf("  %-11s %9s %9s %9s %9s %6s", "arm", "pods/s", "p50", "p99", "attempts", "hung")
	for _, r := range results {
		b.Logf("  %-11s %9.1f %9s %9s %9d %6d %s", r.name, r.perSecond, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.attempts, r.hung, r.hungWhy)
	}
	for _, r := range results {
		b.ReportMetric(r.perSecond, r.name+"-pods/s")
		b.ReportMetric(ms(r.p50), r.name+"-p50-ms")
		b.ReportMetric(ms(r.p99), r.name+"-p99-ms")
		b.ReportMetric(float64(r.hung), r.name+"-hung")
	}
	if len(byName) == 3 && stock.perSecond > 0 && workaround.perSecond > 0 {
		b.Logf("  huddle/stock throughput %.2f, huddle/workaround %.2f", huddle.perSecond/stock.perSecond, huddle.perSecond/workaround.perSecond)
		b.ReportMetric(huddle.perSecond/stock.perSecond, "huddle/stock")
		b.ReportMetric(huddle.perSecond/workaround.perSecond, "huddle/workaround")
	} else {
		b.Logf("  no ratios: they need all three arms, with pods Running in stock and workaround")
	}
	b.ReportMetric(0, "ns/op")
	if huddle.hung > 0 {
		b.Errorf("%d huddle pods hung: %s", huddle.hung, huddle.hungWhy)
	}
}

// tpGroup is one group of pods sharing a claim, with its members' requests.
type tpGroup struct {
	size      int
	cpu, mem  resource.Quantity
	cpuMillis int64
}

// tpGroups draws groups of 2-20 pods (the last may be smaller) adding up
// to pods, each with requests of 50-150m CPU and 64-256Mi: the largest
// group fits an m5.xlarge.
func tpGroups(pods int, seed uint64) []tpGroup {
	r := rand.New(rand.NewPCG(seed, seed))
	var out []tpGroup
	for left := pods; left > 0; {
		n := min(left, 2+r.IntN(19))
		m := int64(50 + 50*r.IntN(3))
		out = append(out, tpGroup{size: n, cpuMillis: m, cpu: *resource.NewMilliQuantity(m, resource.DecimalSI), mem: *resource.NewQuantity(int64(64<<r.IntN(3))<<20, resource.BinarySI)})
		left -= n
	}
	return out
}

type armResult struct {
	name           string
	perSecond      float64
	p50, p99       time.Duration
	attempts, hung int
	hungWhy        string
}

// runArm creates the burst of one arm, waits for its pods to run (or to
// stop making progress), measures, and deletes everything it made.
func runArm(b *testing.B, env *simtest.Env, w *runningWatch, arm string, groups []tpGroup) armResult {
	b.StopTimer()
	prefix := fmt.Sprintf("tp-%s-%d", arm, time.Now().UnixNano()%100000)
	type podPlan struct{ name, claim, group, anchor string }
	var plans []podPlan
	for g, grp := range groups {
		group := fmt.Sprintf("%s-g%d", prefix, g)
		for i := range grp.size {
			p := podPlan{name: fmt.Sprintf("%s-%d", group, i), group: group, claim: group}
			if arm == "stock" {
				p.claim = p.name
			}
			if arm == "workaround" && i > 0 {
				p.anchor = group
			}
			plans = append(plans, p)
		}
	}
	made := map[string]bool{}
	for _, p := range plans {
		if made[p.claim] {
			continue
		}
		made[p.claim] = true
		c := env.Claim(p.claim)
		if arm != "huddle" {
			c.Annotations = map[string]string{scope.AnnotationShare: "false"}
		}
		if _, err := env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).Create(env.Ctx, c, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	groupOf := map[string]tpGroup{}
	for g, grp := range groups {
		groupOf[fmt.Sprintf("%s-g%d", prefix, g)] = grp
	}
	b.StartTimer()
	pods := make([]*corev1.Pod, len(plans))
	for i, p := range plans {
		pod := env.Pod(p.name, p.claim)
		pod.Labels["group"] = p.group
		if arm == "workaround" && p.anchor == "" {
			pod.Labels["anchor"] = p.group // the one pod the others follow
		}
		grp := groupOf[p.group]
		pod.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: grp.cpu, corev1.ResourceMemory: grp.mem}
		if p.anchor != "" {
			pod.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
				RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"anchor": p.anchor}},
					TopologyKey:   corev1.LabelHostname,
				}},
			}}
		}
		pods[i] = pod
	}
	start := time.Now()
	created := env.CreatePaced(pods, *tpRate)
	// Wait for every pod to run, or until none has started for
	// tpQuiet: the rest hung.
	names := make([]string, len(plans))
	for i, p := range plans {
		names[i] = p.name
	}
	quiet := tpQuiet
	last, lastCount := time.Now(), -1
	for {
		n := w.count(names)
		if n == len(names) {
			break
		}
		if n != lastCount {
			last, lastCount = time.Now(), n
		}
		if time.Since(last) > quiet {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	b.StopTimer()
	r := armResult{name: arm}
	var lat samples
	var end time.Time
	for _, n := range names {
		at, ok := w.running(n)
		if !ok {
			r.hung++
			continue
		}
		lat.add(at.Sub(created[n]))
		if at.After(end) {
			end = at
		}
	}
	if running := len(names) - r.hung; running > 0 {
		r.perSecond = float64(running) / end.Sub(start).Seconds()
	}
	r.p50, r.p99 = lat.q(0.5), lat.q(0.99)
	events, err := env.Client.CoreV1().Events(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	r.attempts = schedulingAttempts(events.Items, prefix)
	if r.hung > 0 {
		r.hungWhy = whyHung(b, env, events.Items, prefix)
	}
	// Logged now, so a later arm's failure does not lose it.
	b.Logf("arm %s: %.1f pods Running/s, create to Running p50 %s p99 %s, %d scheduling attempts, %d hung %s",
		arm, r.perSecond, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.attempts, r.hung, r.hungWhy)
	tpCleanup(b, env, prefix)
	b.StartTimer()
	return r
}

// schedulingAttempts counts the scheduler's verdicts on the arm's pods
// (each Scheduled and FailedScheduling event, with its repeats).
func schedulingAttempts(events []corev1.Event, prefix string) int {
	attempts := 0
	for _, ev := range events {
		if !strings.HasPrefix(ev.InvolvedObject.Name, prefix+"-") {
			continue
		}
		count := max(int(ev.Count), 1)
		if ev.Series != nil {
			count = max(count, int(ev.Series.Count))
		}
		switch ev.Reason {
		case "Scheduled", "FailedScheduling":
			attempts += count
		}
	}
	return attempts
}

// whyHung says, by kind and count, why the arm's pods that do not run
// hung.
func whyHung(b *testing.B, env *simtest.Env, events []corev1.Event, prefix string) string {
	why := map[string]int{}
	pods, err := env.Client.CoreV1().Pods(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	// A pod that started but does not run is either on a node its
	// claim's other pods are not on (a split: Multi-Attach), or
	// waiting for its volume. Its latest volume event says what
	// kube-controller-manager's attach/detach controller
	// (FailedAttachVolume) or the kubelet (FailedMount) reported; a
	// pod whose attach is only slow has none.
	nodesOfClaim := map[string]sets.Set[string]{}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, prefix+"-") || p.Spec.NodeName == "" {
			continue
		}
		for _, c := range huddlewebhook.ClaimNames(&p) {
			if nodesOfClaim[c] == nil {
				nodesOfClaim[c] = sets.New[string]()
			}
			nodesOfClaim[c].Insert(p.Spec.NodeName)
		}
	}
	lastVolumeEvent, lastAt := map[string]string{}, map[string]time.Time{}
	for i := range events {
		ev := &events[i]
		name, at := ev.InvolvedObject.Name, simreport.EventTime(ev).Time
		if (ev.Reason == "FailedAttachVolume" || ev.Reason == "FailedMount") && !at.Before(lastAt[name]) {
			lastVolumeEvent[name], lastAt[name] = ev.Reason+": "+eventGist(ev.Message), at
		}
	}
	for _, p := range pods.Items {
		if !strings.HasPrefix(p.Name, prefix+"-") || p.Status.Phase == corev1.PodRunning {
			continue
		}
		if p.Spec.NodeName == "" {
			why["Unschedulable or gated"]++
			continue
		}
		claims := huddlewebhook.ClaimNames(&p)
		split := false
		for _, c := range claims {
			split = split || nodesOfClaim[c].Len() > 1
		}
		kind := "ContainerCreating, its claim's pods all on its node"
		switch {
		case len(claims) == 0:
			kind = "ContainerCreating, no claim"
		case split:
			kind = "ContainerCreating, its claim's pods on several nodes"
		}
		if ev := lastVolumeEvent[p.Name]; ev != "" {
			kind += " (latest volume event " + ev + ")"
		}
		why[kind]++
	}
	var parts []string
	for k, v := range why {
		parts = append(parts, fmt.Sprintf("%d %s", v, k))
	}
	return strings.Join(parts, ", ")
}

// quoted matches the names in an event's message ("pvc-…", volume IDs),
// which eventGist leaves out so that the hung pods' events group by what
// they say.
var quoted = regexp.MustCompile(`"[^"]*"`)

// eventGist is an event message without its quoted names, cut to 80
// characters.
func eventGist(msg string) string {
	msg = quoted.ReplaceAllString(msg, `"…"`)
	if r := []rune(msg); len(r) > 80 {
		return string(r[:80]) + "…"
	}
	return msg
}

// tpQuiet is how long an arm waits for another of its pods to run before
// the rest count as hung: longer than the simulated cloud's slowest
// provisioning (30 s) and attach (60 s) together, so a pod whose volume
// is still being made is not called hung (30 s called a whole arm hung
// at 1,000 nodes while its first volumes were made).
const tpQuiet = 2 * time.Minute

// tpArmObjects lists the names of an arm's pods and claims: those named
// with its prefix.
func tpArmObjects(b *testing.B, env *simtest.Env, prefix string) (pods, claims []string) {
	podList, err := env.Client.CoreV1().Pods(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range podList.Items {
		if strings.HasPrefix(p.Name, prefix+"-") {
			pods = append(pods, p.Name)
		}
	}
	claimList, err := env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range claimList.Items {
		if strings.HasPrefix(c.Name, prefix+"-") {
			claims = append(claims, c.Name)
		}
	}
	return pods, claims
}

// tpCleanup deletes an arm's pods and claims and waits until they are
// gone and their volumes detached and deleted, so the next arm starts on
// empty nodes with their attach slots free and the simulated EBS
// sidecars idle.
func tpCleanup(b *testing.B, env *simtest.Env, prefix string) {
	zero := metav1.DeleteOptions{GracePeriodSeconds: new(int64)}
	pods, claims := tpArmObjects(b, env, prefix)
	for _, name := range pods {
		_ = env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, name, zero)
	}
	for _, name := range claims {
		_ = env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).Delete(env.Ctx, name, metav1.DeleteOptions{})
	}
	ofArm := func(ref *corev1.ObjectReference) bool {
		return ref != nil && ref.Namespace == env.Namespace && strings.HasPrefix(ref.Name, prefix+"-")
	}
	// The wait ends when nothing is left, or fails when nothing has gone
	// for cleanupStall: thousands of volumes take minutes to detach
	// through the attacher's 20 requests/s, as on EKS.
	var left []string
	lastLeft, lastProgress, lastLog := -1, time.Now(), time.Now()
	for {
		left = left[:0]
		pods, claims = tpArmObjects(b, env, prefix)
		for _, name := range pods {
			left = append(left, "pod "+name+" still there")
		}
		for _, name := range claims {
			left = append(left, "claim "+name+" still there")
		}
		// The arm's volumes, by their claims, listed again each time: a
		// volume made while its claim was deleted is the arm's too.
		// They must be deleted, not only detached: the provisioner
		// deletes them through the same 20 requests/s the next arm's
		// claims need. (An arm that started while 5,000 volumes of the
		// last were still being deleted waited minutes for its first
		// volume.)
		pvs, err := env.Client.CoreV1().PersistentVolumes().List(env.Ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		volumes := map[string]bool{}
		for _, pv := range pvs.Items {
			if ofArm(pv.Spec.ClaimRef) {
				volumes[pv.Name] = true
				left = append(left, fmt.Sprintf("volume %s not deleted yet (%s)", pv.Name, pv.Status.Phase))
			}
		}
		vas, err := env.Client.StorageV1().VolumeAttachments().List(env.Ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for _, va := range vas.Items {
			if pv := va.Spec.Source.PersistentVolumeName; pv != nil && volumes[*pv] {
				left = append(left, fmt.Sprintf("volume %s still attached to %s", *pv, va.Spec.NodeName))
			}
		}
		if len(left) == 0 {
			return
		}
		if lastLeft < 0 || len(left) < lastLeft {
			lastLeft, lastProgress = len(left), time.Now()
		}
		if time.Since(lastProgress) > cleanupStall {
			b.Fatalf("the arm's cleanup made no progress for %s: %d pods, claims, volumes and attachments left, e.g. %s", cleanupStall, len(left), left[0])
		}
		if time.Since(lastLog) > time.Minute {
			// To stderr, as it happens: a benchmark's log is cut at a
			// few lines, and this would push the figures out of it.
			fmt.Fprintf(os.Stderr, "cleaning up the arm: %d pods, claims, volumes and attachments left\n", len(left))
			lastLog = time.Now()
		}
		time.Sleep(2 * time.Second)
	}
}

// cleanupStall is how long an arm's cleanup may go without a pod, an
// attachment or a volume going before it fails: longer than a detach's worst case in
// the simulated cloud (90 s) with the attacher's backoff.
const cleanupStall = 3 * time.Minute

// runningWatch records when this process first saw each pod Running.
type runningWatch struct {
	mu sync.Mutex
	at map[string]time.Time
}

func newRunningWatch(env *simtest.Env) *runningWatch {
	w := &runningWatch{at: map[string]time.Time{}}
	watchPods(env, func(p *corev1.Pod, now time.Time) {
		if p.Status.Phase != corev1.PodRunning {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, ok := w.at[p.Name]; !ok {
			w.at[p.Name] = now
		}
	})
	return w
}

func (w *runningWatch) running(name string) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.at[name]
	return at, ok
}

func (w *runningWatch) count(names []string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, name := range names {
		if _, ok := w.at[name]; ok {
			n++
		}
	}
	return n
}
