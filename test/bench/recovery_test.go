package bench

import (
	"fmt"
	"os/exec"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// BenchmarkRecovery disrupts a running huddle of 4 pods and reports the
// time until it runs together again, next to its floor: what the
// simulator's own delays add up to (container stop, EBS detach and
// attach, container start, and for a shutdown the node monitor's grace
// period), which no placement could beat. Huddle's own share is reported
// as measured, not by subtraction:
//
//   - drain: `kubectl drain` of home; huddle's share is the slowest
//     replacement's time gated (created to released);
//   - move: spec.move: WhenStuck, a member stuck at home; timed from the
//     move's start (huddle evicts every member) to all running at the
//     target; huddle's share as for drain;
//   - shutdown: home powered off with the cloud's shutdown taint, huddle
//     run with --failover; huddle's share is from the node seen NotReady
//     with the taint to huddle's out-of-service taint seen, plus the
//     slowest replacement's time gated.
func BenchmarkRecovery(b *testing.B) {
	for _, kind := range []string{"drain", "move", "shutdown"} {
		b.Run(kind, func(b *testing.B) {
			total, floor, share := &samples{}, &samples{}, &samples{}
			for b.Loop() {
				b.StopTimer()
				r := recover1(b, kind)
				total.add(r.total)
				floor.add(r.floor)
				share.add(r.share)
				b.StartTimer()
			}
			b.ReportMetric(total.q(0.5).Seconds(), "recovery-s")
			b.ReportMetric(floor.q(0.5).Seconds(), "floor-s")
			b.ReportMetric(share.q(0.5).Seconds(), "huddle-s")
			b.ReportMetric(0, "ns/op")
		})
	}
}

type recovery struct{ total, floor, share time.Duration }

// watch records, with the time this process saw them, pods created,
// released by huddle and running, and nodes seen NotReady or fenced.
type watch struct {
	mu       sync.Mutex
	created  map[string]time.Time
	released map[string]time.Time
	notReady map[string]time.Time
	fenced   map[string]time.Time
}

func watchNamespace(env *simtest.Env) *watch {
	w := &watch{created: map[string]time.Time{}, released: map[string]time.Time{}, notReady: map[string]time.Time{}, fenced: map[string]time.Time{}}
	first := func(m map[string]time.Time, k string) {
		if _, ok := m[k]; !ok {
			m[k] = time.Now()
		}
	}
	pods := informers.NewSharedInformerFactoryWithOptions(env.Client, 0, informers.WithNamespace(env.Namespace))
	onPod := func(obj any) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		first(w.created, p.Name)
		if !placement.HasGate(p) {
			first(w.released, p.Name)
		}
	}
	_, _ = pods.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onPod, UpdateFunc: func(_, o any) { onPod(o) }})
	nodes := informers.NewSharedInformerFactory(env.Client, 0)
	onNode := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		shutdown, fenced := false, false
		for _, t := range n.Spec.Taints {
			shutdown = shutdown || t.Key == "node.cloudprovider.kubernetes.io/shutdown"
			fenced = fenced || t.Key == corev1.TaintNodeOutOfService
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue && shutdown {
				first(w.notReady, n.Name)
			}
		}
		if fenced {
			first(w.fenced, n.Name)
		}
	}
	_, _ = nodes.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onNode, UpdateFunc: func(_, o any) { onNode(o) }})
	pods.Start(env.Ctx.Done())
	nodes.Start(env.Ctx.Done())
	pods.WaitForCacheSync(env.Ctx.Done())
	nodes.WaitForCacheSync(env.Ctx.Done())
	return w
}

// slowestGate is the longest time gated of the pods created after t.
func (w *watch) slowestGate(after time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var worst time.Duration
	for name, c := range w.created {
		if r, ok := w.released[name]; ok && c.After(after) {
			worst = max(worst, r.Sub(c))
		}
	}
	return worst
}

// recover1 runs one disruption in a namespace of its own.
func recover1(b *testing.B, kind string) recovery {
	env := simtest.New(b)
	env.AddNodes(3, simtest.NodeOptions{})
	w := watchNamespace(env)
	tm := env.Timing()
	if kind == "move" {
		hud := &huddlev1.Huddle{ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: env.Namespace},
			Spec: huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: time.Second}}}
		if err := env.Typed.Create(env.Ctx, hud); err != nil {
			b.Fatal(err)
		}
	}
	dep := env.Deployment("app", 4, "data")
	dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("500m")
	env.Create(env.Claim("data"), dep)
	home := runningTogether(env, "", time.Minute)
	// What the simulator cannot do faster: stop, detach, attach, start
	// (the cloud's times are drawn: their medians).
	floor := tm.ContainerStopDelay + tm.DetachLatency.Median + tm.AttachLatency.Median + tm.ContainerStartDelay

	var start time.Time
	switch kind {
	case "drain":
		start = time.Now()
		kubectl(env, "drain", home, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s")
	case "move":
		// Fill home so that a fifth replica cannot fit there.
		filler := env.Pod("filler")
		filler.Spec.NodeName = home
		filler.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1600m")
		env.Create(filler)
		kubectl(env, "scale", "deployment/app", "--replicas=5")
		env.Eventually("the move starts", time.Minute, func() error {
			h, err := env.Huddle("data")
			if err != nil {
				return err
			}
			if h.Status.LastMove == nil {
				return fmt.Errorf("no move yet")
			}
			return nil
		})
		start = time.Now()
	case "shutdown":
		start = time.Now()
		env.Annotate(home, kubelet.AnnotationShutdown, "true")
		floor += tm.NodeMonitorGracePeriod
	}
	moved := runningTogether(env, home, 3*time.Minute)
	r := recovery{total: time.Since(start), floor: floor, share: w.slowestGate(start)}
	if kind == "shutdown" {
		w.mu.Lock()
		r.share += w.fenced[home].Sub(w.notReady[home])
		w.mu.Unlock()
		env.Annotate(home, kubelet.AnnotationShutdown, "false")
	}
	b.Logf("%s: huddle of %d Running again on %s after %s; floor %s; huddle's own share %s",
		kind, len(env.Pods("app=app")), moved, r.total.Round(100*time.Millisecond), r.floor, r.share.Round(time.Millisecond))
	return r
}

// runningTogether waits until every app pod runs on one node other than
// not, and returns it.
func runningTogether(env *simtest.Env, not string, timeout time.Duration) string {
	var node string
	env.Eventually("app running together", timeout, func() error {
		nodes := map[string]bool{}
		for _, p := range env.Pods("app=app") {
			if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || p.Spec.NodeName == not {
				return fmt.Errorf("pod %s %s on %s", p.Name, p.Status.Phase, p.Spec.NodeName)
			}
			nodes[p.Spec.NodeName] = true
		}
		if len(nodes) != 1 {
			return fmt.Errorf("on %d nodes", len(nodes))
		}
		for n := range nodes {
			node = n
		}
		return nil
	})
	return node
}

func kubectl(env *simtest.Env, args ...string) {
	cmd := exec.CommandContext(env.Ctx, env.Cluster.Binaries.Kubectl, append([]string{"--kubeconfig", env.Cluster.Kubeconfig, "-n", env.Namespace}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		env.T.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
}
