// Package bench measures what huddle costs a pod in the simulator: the
// start latency it adds to pods of shared claims (create to bound, next to
// the stock scheduler's pods of unshared claims, interleaved in one run)
// and its webhook's admission latency under load.
//
//	go test -run '^$' -bench . -benchtime 1x ./test/bench/
//	go test -run '^$' -bench PodStart -benchtime 1x ./test/bench/ -args -pods 400
//
// Without -bench the package boots nothing and runs nothing.
package bench

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/scope"
	"github.com/huddle-io/huddle/internal/sim/simtest"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

var (
	podsPerArm = flag.Int("pods", 200, "pods created per arm (stock and huddle) in each latency benchmark")
	groupSize  = flag.Int("group", 4, "pods per claim: the size of each huddle")
	createRate = flag.Float64("rate", 40, "pod creations per second, both arms together")
	// The fast profile's node heartbeats (every 0.5 s) from 1,000 nodes
	// saturate the API server on 2 cores; big runs take EKS's cadence.
	timingName = flag.String("timing", "fast", "timing profile of the simulated cluster: fast or eks (use eks from a few hundred nodes up)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	profile, err := timing.ByName(*timingName)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Exit(simtest.Main(m, simtest.Options{Timing: &profile, Huddle: true, HuddleValues: map[string]any{"failover": true}}))
}

// BenchmarkPodStartLatency creates pods of shared claims (gated by huddle,
// pinned, released) and, interleaved with them, as many pods of claims
// opted out of huddle (the stock path), and reports the time from create
// to bound of each arm: median, p90, p99, and huddle's added median.
//
//   - fresh: every claim is new, so each huddle is placed from scratch:
//     its oldest member first, the rest once it is bound;
//   - home: each claim already has a running member, so every new pod is
//     pinned to that home (scale-ups and rollouts);
//   - provisioned: every claim is new and not provisioned yet, as in a
//     fresh install (WaitForFirstConsumer, the EBS StorageClass), so both
//     arms wait for a volume to be made; huddle's followers wait for the
//     first member's bind, which waits for its volume.
func BenchmarkPodStartLatency(b *testing.B) {
	env := simtest.New(b)
	env.AddNodes(16, simtest.NodeOptions{CPU: "32", Memory: "128Gi", Pods: 250})
	lat := newLatencies(env)
	rounds := 0
	for _, name := range []string{"fresh", "home", "provisioned"} {
		b.Run(name, func(b *testing.B) {
			stock, huddled, gated, scheduled, follow := &samples{}, &samples{}, &samples{}, &samples{}, &samples{}
			webhook := webhookMetrics(env)
			for b.Loop() {
				rounds++ // names stay unique across -count runs
				r := lat.round(b, fmt.Sprintf("%s%d", name, rounds), name)
				stock.add(r.stock...)
				gated.add(r.gated...)
				scheduled.add(r.scheduled...)
				follow.add(r.follow...)
				huddled.add(r.huddle...)
			}
			webhook = webhookMetrics(env).since(webhook)
			report(b, stock, huddled, gated, scheduled, follow, webhook)
		})
	}
}

// samples are latencies.
type samples struct{ d []time.Duration }

func (s *samples) add(d ...time.Duration) { s.d = append(s.d, d...) }

// q is the q-quantile (nearest rank).
func (s *samples) q(q float64) time.Duration {
	if len(s.d) == 0 {
		return 0
	}
	sort.Slice(s.d, func(i, j int) bool { return s.d[i] < s.d[j] })
	i := int(q*float64(len(s.d))+0.999999) - 1
	return s.d[max(0, min(i, len(s.d)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func report(b *testing.B, stock, huddled, gated, scheduled, follow *samples, w webhookLatency) {
	b.ReportMetric(ms(stock.q(0.5)), "stock-p50-ms")
	b.ReportMetric(ms(huddled.q(0.5)), "huddle-p50-ms")
	b.ReportMetric(ms(huddled.q(0.5)-stock.q(0.5)), "added-p50-ms")
	b.ReportMetric(ms(stock.q(0.99)), "stock-p99-ms")
	b.ReportMetric(ms(huddled.q(0.99)), "huddle-p99-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("create to bound, %d pods per arm in claims of %d, %.0f creations/s:", len(stock.d), *groupSize, *createRate)
	b.Logf("  %-8s %9s %9s %9s %9s", "", "p50", "p90", "p99", "max")
	for _, a := range []struct {
		name string
		s    *samples
	}{{"stock", stock}, {"huddle", huddled}, {"  gated", gated}, {"  sched", scheduled}, {"  follow", follow}} {
		if len(a.s.d) == 0 {
			continue
		}
		b.Logf("  %-8s %9s %9s %9s %9s", a.name, a.s.q(0.5).Round(time.Millisecond), a.s.q(0.9).Round(time.Millisecond),
			a.s.q(0.99).Round(time.Millisecond), a.s.q(1).Round(time.Millisecond))
	}
	b.Logf("  (huddle pods: gated = create to gate removed, huddle's share; sched = gate removed to bound;")
	b.Logf("   follow = first member of a fresh huddle bound to each other member released; negative when released before it is bound)")
	b.Logf("huddle's webhook meanwhile, %d calls:", w.apiserver.count)
	b.Logf("  as kube-apiserver timed it (call, TLS, transport): %5.1f%% within 5ms, %5.1f%% within 25ms", w.apiserver.within(0.005), w.apiserver.within(0.025))
	b.Logf("  as huddle's handler timed it:                      %5.1f%% within 1ms, %5.1f%% within 10ms", w.handler.within(0.001), w.handler.within(0.01))
}

// latencies runs rounds of pod creations in one namespace.
type latencies struct {
	env *simtest.Env

	mu       sync.Mutex
	bound    map[string]time.Time // pod name -> first seen bound
	released map[string]time.Time // pod name -> first seen without huddle's gate
	seen     map[string]time.Time // pod name -> first seen (pods a controller creates)
}

func newLatencies(env *simtest.Env) *latencies {
	l := &latencies{env: env, bound: map[string]time.Time{}, released: map[string]time.Time{}, seen: map[string]time.Time{}}
	watchPods(env, func(p *corev1.Pod, now time.Time) {
		l.mu.Lock()
		defer l.mu.Unlock()
		if _, ok := l.seen[p.Name]; !ok {
			l.seen[p.Name] = now
		}
		if _, ok := l.released[p.Name]; !ok && !placement.HasGate(p) {
			l.released[p.Name] = now
		}
		if _, ok := l.bound[p.Name]; !ok && p.Spec.NodeName != "" {
			l.bound[p.Name] = now
		}
	})
	return l
}

// watchPods calls seen with each version of the Env's pods as its
// informer sees it, and when; it returns once the informer has synced.
func watchPods(env *simtest.Env, seen func(p *corev1.Pod, now time.Time)) {
	factory := informers.NewSharedInformerFactoryWithOptions(env.Client, 0, informers.WithNamespace(env.Namespace))
	handle := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok {
			seen(p, time.Now())
		}
	}
	_, _ = factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    handle,
		UpdateFunc: func(_, obj any) { handle(obj) },
	})
	factory.Start(env.Ctx.Done())
	factory.WaitForCacheSync(env.Ctx.Done())
}

type roundResult struct {
	stock, huddle []time.Duration
	// gated is huddle's share of each huddle pod's latency (create to
	// gate removed), scheduled the scheduler's (gate removed to bound).
	gated, scheduled []time.Duration
	// follow is, for each member of a fresh huddle but the first, the
	// time from the first member bound to this one released.
	follow []time.Duration
}

// round creates *podsPerArm pods per arm, in claims of *groupSize,
// interleaving the arms, and returns each pod's create-to-bound latency.
// In mode home each claim first gets one running member, unmeasured; in
// mode provisioned the claims are left to be provisioned.
func (l *latencies) round(b *testing.B, tag, mode string) roundResult {
	b.StopTimer()
	home, provisioned := mode == "home", mode == "provisioned"
	claims := (*podsPerArm + *groupSize - 1) / *groupSize
	arms := []string{"huddle", "stock"}
	for _, arm := range arms {
		for c := range claims {
			name := fmt.Sprintf("%s-%s-%d", tag, arm, c)
			if provisioned {
				l.newClaim(b, name, arm == "stock")
				continue
			}
			l.claim(b, name, arm == "stock")
		}
	}
	l.env.Eventually("claims bound", time.Minute, func() error {
		if provisioned {
			return nil
		}
		list, err := l.env.Client.CoreV1().PersistentVolumeClaims(l.env.Namespace).List(l.env.Ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, c := range list.Items {
			if strings.HasPrefix(c.Name, tag+"-") && c.Status.Phase != corev1.ClaimBound {
				return fmt.Errorf("claim %s is %s", c.Name, c.Status.Phase)
			}
		}
		return nil
	})
	if home {
		// Each claim's home is a running member: its volume attached
		// there, as for a scale-up or a rollout, so no attach of the
		// anchors runs while the measured pods are created.
		var anchors []string
		for _, arm := range arms {
			for c := range claims {
				name := fmt.Sprintf("%s-%s-%d-anchor", tag, arm, c)
				l.create(b, name, fmt.Sprintf("%s-%s-%d", tag, arm, c))
				anchors = append(anchors, name)
			}
		}
		l.waitRunning(b, anchors)
	}
	if provisioned {
		return l.replicaSetRound(b, tag, claims)
	}
	b.StartTimer()

	created := map[string]time.Time{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / *createRate))
	defer tick.Stop()
	var names []string
	for i := range *podsPerArm {
		for _, arm := range arms {
			claim := fmt.Sprintf("%s-%s-%d", tag, arm, i / *groupSize)
			name := fmt.Sprintf("%s-%d", claim, i%*groupSize)
			names = append(names, name)
			<-tick.C
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				l.create(b, name, claim)
				mu.Lock()
				created[name] = start
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	l.wait(b, names)
	b.StopTimer()

	var r roundResult
	l.mu.Lock()
	for _, name := range names {
		d := l.bound[name].Sub(created[name])
		if strings.Contains(name, "-stock-") {
			r.stock = append(r.stock, d)
		} else {
			r.huddle = append(r.huddle, d)
			r.gated = append(r.gated, l.released[name].Sub(created[name]))
			r.scheduled = append(r.scheduled, l.bound[name].Sub(l.released[name]))
			if first := name[:strings.LastIndex(name, "-")] + "-0"; !home && first != name {
				r.follow = append(r.follow, l.released[name].Sub(l.bound[first]))
			}
		}
	}
	l.mu.Unlock()
	l.cleanup(tag)
	b.StartTimer()
	return r
}

// claim creates a ReadWriteOnce EBS volume and its claim, bound to each
// other up front so provisioning does not enter the figures: the volume
// exists in the simulated cloud (an existing disk, as a static PV names
// one), so its attaches succeed. Stock claims are opted out of huddle.
func (l *latencies) claim(b *testing.B, name string, optOut bool) {
	env := l.env
	sum := sha256.Sum256([]byte(env.Namespace + "/" + name))
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: env.Namespace + "-" + name, Labels: map[string]string{"bench": env.Namespace}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "ebs.csi.aws.com", VolumeHandle: "vol-" + hex.EncodeToString(sum[:])[:17]}},
			ClaimRef: &corev1.ObjectReference{Namespace: env.Namespace, Name: name},
			// Retain: cleanup deletes the PV itself (Delete would ask a
			// provisioner that never made it, and leave it Failed).
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"us-east-1a"}}},
			}}}},
		},
	}
	warnings, err := env.Cluster.AddExistingVolumes(env.Ctx, []*corev1.PersistentVolume{pv})
	if err != nil || len(warnings) > 0 {
		b.Fatalf("volume of %s not in the simulated cloud: %v %q", pv.Name, err, warnings)
	}
	if _, err := env.Client.CoreV1().PersistentVolumes().Create(env.Ctx, pv, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	c := env.Claim(name)
	c.Spec.StorageClassName = new(string)
	c.Spec.VolumeName = pv.Name
	if optOut {
		c.Annotations = map[string]string{scope.AnnotationShare: "false"}
	}
	if _, err := env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).Create(env.Ctx, c, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}

// replicaSetRound is a round of mode provisioned: a fresh install's pods
// come from their controllers, and only pods a controller recreates are
// placed ahead of their first member's bind. Each huddle is a ReplicaSet
// of *groupSize replicas mounting its claim; each stock pod a ReplicaSet
// of one with a claim of its own. ReplicaSets are created at the rate of
// their pods, interleaving the arms, and each pod's latency runs from its
// first sight (the informer's) to bound.
func (l *latencies) replicaSetRound(b *testing.B, tag string, claims int) roundResult {
	env := l.env
	b.StartTimer()
	tick := time.NewTicker(time.Duration(float64(time.Second) / *createRate))
	defer tick.Stop()
	var sets []string
	rs := func(name, claim string, replicas int32) {
		d := env.Deployment(name, replicas, claim)
		set := &appsv1.ReplicaSet{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: env.Namespace},
			Spec:       appsv1.ReplicaSetSpec{Replicas: d.Spec.Replicas, Selector: d.Spec.Selector, Template: d.Spec.Template},
		}
		set.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("10m")
		if _, err := env.Client.AppsV1().ReplicaSets(env.Namespace).Create(env.Ctx, set, metav1.CreateOptions{}); err != nil {
			b.Fatalf("create ReplicaSet %s: %v", name, err)
		}
		sets = append(sets, name)
	}
	for c := range claims {
		for _, arm := range []string{"huddle", "stock"} {
			claim := fmt.Sprintf("%s-%s-%d", tag, arm, c)
			if arm == "huddle" {
				for range *groupSize {
					<-tick.C
				}
				rs(claim, claim, int32(*groupSize))
				continue
			}
			// Stock: one pod per claim; the group's other pods get
			// claims of their own.
			for i := range *groupSize {
				<-tick.C
				name := fmt.Sprintf("%s-%d", claim, i)
				if i > 0 {
					l.newClaim(b, name, true)
					rs(name, name, 1)
					continue
				}
				rs(name, claim, 1)
			}
		}
	}
	var names []string
	l.env.Eventually("the ReplicaSets' pods created", time.Minute, func() error {
		pods, err := env.Client.CoreV1().Pods(env.Namespace).List(env.Ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		names = names[:0]
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, tag+"-") {
				names = append(names, p.Name)
			}
		}
		if want := 2 * claims * *groupSize; len(names) < want {
			return fmt.Errorf("%d of %d pods", len(names), want)
		}
		return nil
	})
	l.wait(b, names)
	b.StopTimer()

	var r roundResult
	l.mu.Lock()
	for _, name := range names {
		d := l.bound[name].Sub(l.seen[name])
		if strings.Contains(name, "-stock-") {
			r.stock = append(r.stock, d)
			continue
		}
		r.huddle = append(r.huddle, d)
		r.gated = append(r.gated, l.released[name].Sub(l.seen[name]))
		r.scheduled = append(r.scheduled, l.bound[name].Sub(l.released[name]))
	}
	l.mu.Unlock()
	for _, name := range sets {
		_ = env.Client.AppsV1().ReplicaSets(env.Namespace).Delete(env.Ctx, name, metav1.DeleteOptions{})
	}
	l.cleanup(tag)
	b.StartTimer()
	return r
}

// newClaim creates a claim of the default StorageClass (EBS,
// WaitForFirstConsumer): its volume is made once the first pod that
// mounts it is scheduled. Stock claims are opted out of huddle.
func (l *latencies) newClaim(b *testing.B, name string, optOut bool) {
	c := l.env.Claim(name)
	if optOut {
		c.Annotations = map[string]string{scope.AnnotationShare: "false"}
	}
	if _, err := l.env.Client.CoreV1().PersistentVolumeClaims(l.env.Namespace).Create(l.env.Ctx, c, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
}

func (l *latencies) create(b *testing.B, name, claim string) {
	env := l.env
	p := env.Pod(name, claim)
	p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("10m")
	if _, err := env.Client.CoreV1().Pods(env.Namespace).Create(env.Ctx, p, metav1.CreateOptions{}); err != nil {
		b.Errorf("create pod %s: %v", name, err)
	}
}

// wait until every named pod has been seen bound.
func (l *latencies) wait(b *testing.B, names []string) {
	l.env.Eventually(fmt.Sprintf("%d pods bound", len(names)), 5*time.Minute, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		missing := 0
		for _, n := range names {
			if _, ok := l.bound[n]; !ok {
				missing++
			}
		}
		if missing > 0 {
			return fmt.Errorf("%d of %d not bound yet", missing, len(names))
		}
		return nil
	})
}

// waitRunning waits until every named pod is Running.
func (l *latencies) waitRunning(b *testing.B, names []string) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	l.env.Eventually(fmt.Sprintf("%d pods running", len(names)), 5*time.Minute, func() error {
		pods, err := l.env.Client.CoreV1().Pods(l.env.Namespace).List(l.env.Ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		running := 0
		for _, p := range pods.Items {
			if want[p.Name] && p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running < len(names) {
			return fmt.Errorf("%d of %d running", running, len(names))
		}
		return nil
	})
}

// cleanup deletes a round's pods, claims and PersistentVolumes at once,
// so rounds do not fill the nodes nor pile up volumes.
func (l *latencies) cleanup(tag string) {
	env := l.env
	zero := metav1.DeleteOptions{GracePeriodSeconds: new(int64)}
	pods, err := env.Client.CoreV1().Pods(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err == nil {
		for _, p := range pods.Items {
			if strings.HasPrefix(p.Name, tag+"-") {
				_ = env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, p.Name, zero)
			}
		}
	}
	claims, err := env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err == nil {
		for _, c := range claims.Items {
			if strings.HasPrefix(c.Name, tag+"-") {
				_ = env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).Delete(env.Ctx, c.Name, metav1.DeleteOptions{})
			}
		}
	}
	pvs, err := env.Client.CoreV1().PersistentVolumes().List(env.Ctx, metav1.ListOptions{LabelSelector: "bench=" + env.Namespace})
	if err == nil {
		for _, pv := range pvs.Items {
			if strings.HasPrefix(pv.Name, env.Namespace+"-"+tag+"-") {
				_ = env.Client.CoreV1().PersistentVolumes().Delete(env.Ctx, pv.Name, metav1.DeleteOptions{})
			}
		}
	}
}
