// Package volumes measures the simulated EBS CSI controller at scale: N
// pods, each with a claim of its own of the default gp3 class
// (WaitForFirstConsumer), created in a burst on M nodes of the eks
// profile. Every claim is provisioned once the scheduler picks its pod's
// node, and every volume then attached there; the benchmark reports how
// fast the simulated provisioner and attacher keep up, so a run shows
// whether the simulator, and not the real control plane it drives, is
// the bottleneck (issue 10).
//
//	go test -run '^$' -bench . -benchtime 1x -timeout 15m ./test/scale/volumes/ -args -nodes 100 -pods 1000
//
// Without -bench the package boots nothing and runs nothing.
package volumes

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/huddle-io/huddle/internal/sim/simtest"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

var (
	nodeCount = flag.Int("nodes", 100, "simulated nodes (m5.xlarge, one zone)")
	podCount  = flag.Int("pods", 1000, "pods, each with a claim of its own")
	rate      = flag.Float64("rate", 100, "pod creations per second")
	deadline  = flag.Duration("deadline", 8*time.Minute, "how long the burst may take to run before the rest count as hung")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	eks := timing.EKS()
	// The EKS add-ons' pods mount no volumes; without them the nodes come
	// up sooner and the run measures only the pods' volumes.
	os.Exit(simtest.Main(m, simtest.Options{Timing: &eks, NoSystemPods: true}))
}

// BenchmarkVolumeThroughput creates the claims, then the pods at -rate,
// and waits until every pod runs (or -deadline passes, or nothing starts
// for a minute). It reports claims provisioned, volumes attached and pods
// Running per second over the burst (from the first pod's creation to the
// last of each), the provisioner's latency (the scheduler's selected-node
// on the claim to the PersistentVolume), the attacher's (VolumeAttachment
// created to attached), create to Running p50 and p99, and how often
// kube-controller-manager gave up waiting for the attacher.
func BenchmarkVolumeThroughput(b *testing.B) {
	for b.Loop() {
		env := simtest.New(b)
		start := time.Now()
		nodes := env.AddNodes(*nodeCount, simtest.NodeOptions{})
		b.Logf("%d nodes schedulable in %s", len(nodes), time.Since(start).Round(time.Second))
		w := watch(env, nodes)

		names := make([]string, *podCount)
		for i := range names {
			names[i] = fmt.Sprintf("v-%d", i)
		}
		createClaims(b, env, names)

		pods := make([]*corev1.Pod, len(names))
		for i, name := range names {
			pods[i] = env.Pod(name, name)
		}
		burst := time.Now()
		created := env.CreatePaced(pods, *rate)
		b.Logf("%d pods created in %s", len(names), time.Since(burst).Round(time.Millisecond))

		last, lastCount := time.Now(), -1
		for time.Since(burst) < *deadline {
			n := w.runningCount()
			if n == len(names) {
				break
			}
			if n != lastCount {
				last, lastCount = time.Now(), n
			}
			if time.Since(last) > time.Minute {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		w.report(b, burst, created)
		timeouts := attachTimeouts(b, env)
		b.Logf("kube-controller-manager's FailedAttachVolume events waiting for the attacher: %d", timeouts)
		b.ReportMetric(float64(timeouts), "attach-timeouts")
		b.ReportMetric(0, "ns/op")
	}
}

// createClaims creates one claim per name, a few at a time: the claims
// are the setup, not the measured burst.
func createClaims(b *testing.B, env *simtest.Env, names []string) {
	todo := make(chan string)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range todo {
				if _, err := env.Client.CoreV1().PersistentVolumeClaims(env.Namespace).Create(env.Ctx, env.Claim(name), metav1.CreateOptions{}); err != nil {
					b.Errorf("create claim %s: %v", name, err)
				}
			}
		}()
	}
	for _, n := range names {
		todo <- n
	}
	close(todo)
	wg.Wait()
}

// watcher records when this process first saw each step of each pod's
// way to Running: the claim's selected node, its PersistentVolume, its
// VolumeAttachment created and attached, the pod Running. Claims and pods
// share names; VolumeAttachments are keyed by PersistentVolume name.
type watcher struct {
	mu       sync.Mutex
	selected map[string]time.Time
	pv       map[string]time.Time // by claim
	vaSeen   map[string]time.Time // by PV
	attached map[string]time.Time // by PV
	running  map[string]time.Time
}

func watch(env *simtest.Env, nodes []string) *watcher {
	w := &watcher{
		selected: map[string]time.Time{}, pv: map[string]time.Time{},
		vaSeen: map[string]time.Time{}, attached: map[string]time.Time{}, running: map[string]time.Time{},
	}
	first := func(m map[string]time.Time, key string) {
		now := time.Now()
		w.mu.Lock()
		if _, ok := m[key]; !ok {
			m[key] = now
		}
		w.mu.Unlock()
	}
	ours := map[string]bool{}
	for _, n := range nodes {
		ours[n] = true
	}
	handler := func(f func(obj any)) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{AddFunc: f, UpdateFunc: func(_, obj any) { f(obj) }}
	}
	local := informers.NewSharedInformerFactoryWithOptions(env.Client, 0, informers.WithNamespace(env.Namespace))
	_, _ = local.Core().V1().Pods().Informer().AddEventHandler(handler(func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
			first(w.running, p.Name)
		}
	}))
	_, _ = local.Core().V1().PersistentVolumeClaims().Informer().AddEventHandler(handler(func(obj any) {
		if c, ok := obj.(*corev1.PersistentVolumeClaim); ok && c.Annotations["volume.kubernetes.io/selected-node"] != "" {
			first(w.selected, c.Name)
		}
	}))
	global := informers.NewSharedInformerFactory(env.Client, 0)
	_, _ = global.Core().V1().PersistentVolumes().Informer().AddEventHandler(handler(func(obj any) {
		pv, ok := obj.(*corev1.PersistentVolume)
		if !ok || pv.Spec.ClaimRef == nil || pv.Spec.ClaimRef.Namespace != env.Namespace {
			return
		}
		first(w.pv, pv.Spec.ClaimRef.Name)
	}))
	_, _ = global.Storage().V1().VolumeAttachments().Informer().AddEventHandler(handler(func(obj any) {
		va, ok := obj.(*storagev1.VolumeAttachment)
		if !ok || !ours[va.Spec.NodeName] || va.Spec.Source.PersistentVolumeName == nil {
			return
		}
		pv := *va.Spec.Source.PersistentVolumeName
		first(w.vaSeen, pv)
		if va.Status.Attached {
			first(w.attached, pv)
		}
	}))
	local.Start(env.Ctx.Done())
	global.Start(env.Ctx.Done())
	local.WaitForCacheSync(env.Ctx.Done())
	global.WaitForCacheSync(env.Ctx.Done())
	return w
}

func (w *watcher) runningCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.running)
}

func (w *watcher) report(b *testing.B, burst time.Time, created map[string]time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var provision, attach, start []time.Duration
	for claim, at := range w.pv {
		if sel, ok := w.selected[claim]; ok {
			provision = append(provision, at.Sub(sel))
		}
	}
	for pv, at := range w.attached {
		if seen, ok := w.vaSeen[pv]; ok {
			attach = append(attach, at.Sub(seen))
		}
	}
	for pod, at := range w.running {
		if c, ok := created[pod]; ok {
			start = append(start, at.Sub(c))
		}
	}
	perSecond := func(m map[string]time.Time) float64 {
		var end time.Time
		for _, at := range m {
			if at.After(end) {
				end = at
			}
		}
		if len(m) == 0 {
			return 0
		}
		return float64(len(m)) / end.Sub(burst).Seconds()
	}
	hung := len(created) - len(w.running)
	b.Logf("%d pods with a claim each on %d nodes, eks profile, %.0f creations/s:", len(created), *nodeCount, *rate)
	b.Logf("  %-26s %6s %9s %9s %9s", "step", "done", "per s", "p50", "p99")
	row := func(name string, m map[string]time.Time, d []time.Duration) {
		b.Logf("  %-26s %6d %9.1f %9s %9s", name, len(m), perSecond(m), quantile(d, 0.5), quantile(d, 0.99))
	}
	row("provisioned (selected→PV)", w.pv, provision)
	row("attached (VA→attached)", w.attached, attach)
	row("Running (create→Running)", w.running, start)
	b.Logf("  hung (not Running): %d", hung)
	b.ReportMetric(perSecond(w.pv), "provisioned/s")
	b.ReportMetric(perSecond(w.attached), "attached/s")
	b.ReportMetric(perSecond(w.running), "running/s")
	b.ReportMetric(float64(quantile(start, 0.5).Milliseconds()), "start-p50-ms")
	b.ReportMetric(float64(quantile(start, 0.99).Milliseconds()), "start-p99-ms")
	b.ReportMetric(float64(hung), "hung")
	if hung > 0 {
		b.Errorf("%d of %d pods were not Running at the end", hung, len(created))
	}
}

// attachTimeouts counts the attach/detach controller's FailedAttachVolume
// events in the namespace that say it stopped waiting for the attacher.
func attachTimeouts(b *testing.B, env *simtest.Env) int {
	events, err := env.Client.CoreV1().Events(env.Namespace).List(env.Ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("reason", "FailedAttachVolume").String(),
	})
	if err != nil {
		b.Fatal(err)
	}
	n := 0
	for _, e := range events.Items {
		if strings.Contains(e.Message, "timed out waiting for external-attacher") {
			n += max(int(e.Count), 1)
		}
	}
	return n
}

func quantile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)].Round(time.Millisecond)
}
