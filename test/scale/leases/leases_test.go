// Package leases measures the simulated kubelets' node heartbeats at
// scale: with N nodes (1,000 by default) on the eks profile, every node's
// Lease must be renewed every LeaseRenewInterval (10 s), and never later
// than its duration (40 s), after which the node lifecycle controller
// would mark the node NotReady. Each simulated kubelet has its own clients
// and rate limits and its own lease loop, as real kubelets are separate
// processes; a shared client renewing serially falls behind as the node
// count grows.
//
//	make bench-leases
//	go test -run '^$' -bench . -benchtime 1x -timeout 30m ./test/scale/leases/ -args -nodes 1000
//
// Without -bench the package boots nothing and runs nothing.
package leases

import (
	"flag"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/sim/simtest"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

var nodeCount = flag.Int("nodes", 1000, "simulated nodes")

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	eks := timing.EKS()
	os.Exit(simtest.Main(m, simtest.Options{Timing: &eks}))
}

// BenchmarkLeaseRenewal registers the nodes, then watches every node Lease
// for two lease durations and reports the gaps between renewals of the
// same lease (p50, p99, max) and how many nodes went NotReady.
func BenchmarkLeaseRenewal(b *testing.B) {
	// The timer keeps running (b.Loop refuses a stopped one); what is
	// measured is reported as metrics.
	for b.Loop() {
		env := simtest.New(b)
		tm := env.Timing()
		start := time.Now()
		names := env.AddNodes(*nodeCount, simtest.NodeOptions{})
		b.Logf("%d nodes registered and schedulable in %s", len(names), time.Since(start).Round(time.Second))
		var mem runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&mem)
		b.Logf("heap in use with the control plane's clients and %d simulated kubelets: %d MiB", len(names), mem.HeapInuse>>20)

		ours := map[string]bool{}
		for _, n := range names {
			ours[n] = true
		}
		w, err := env.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease).Watch(env.Ctx, metav1.ListOptions{})
		if err != nil {
			b.Fatal(err)
		}
		var mu sync.Mutex
		last := map[string]time.Time{}
		var gaps []time.Duration
		go func() {
			for ev := range w.ResultChan() {
				l, ok := ev.Object.(*coordinationv1.Lease)
				if !ok || !ours[l.Name] || l.Spec.RenewTime == nil {
					continue
				}
				mu.Lock()
				if prev, seen := last[l.Name]; seen && l.Spec.RenewTime.After(prev) {
					gaps = append(gaps, l.Spec.RenewTime.Sub(prev))
				}
				last[l.Name] = l.Spec.RenewTime.Time
				mu.Unlock()
			}
		}()
		window := 2 * tm.NodeLeaseDuration
		time.Sleep(window)
		w.Stop()

		mu.Lock()
		defer mu.Unlock()
		// A lease not seen renewed in the window counts as one gap of the
		// whole window.
		for _, n := range names {
			if _, seen := last[n]; !seen {
				gaps = append(gaps, window)
			}
		}
		slices.Sort(gaps)
		q := func(f float64) time.Duration { return gaps[int(f*float64(len(gaps)-1))] }
		notReady := 0
		for _, n := range names {
			if env.NodeReady(n) != corev1.ConditionTrue {
				notReady++
			}
		}
		b.ReportMetric(q(0.5).Seconds(), "renew-gap-p50-s")
		b.ReportMetric(q(0.99).Seconds(), "renew-gap-p99-s")
		b.ReportMetric(gaps[len(gaps)-1].Seconds(), "renew-gap-max-s")
		b.ReportMetric(float64(notReady), "nodes-not-ready")
		b.Logf("%d renewals of %d leases in %s: gap p50 %s, p99 %s, max %s (renew every %s, lease %s); %d nodes not Ready",
			len(gaps), len(names), window, q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), gaps[len(gaps)-1].Round(time.Millisecond),
			tm.LeaseRenewInterval, tm.NodeLeaseDuration, notReady)
		if max := gaps[len(gaps)-1]; max >= tm.NodeLeaseDuration || notReady > 0 {
			b.Fatalf("a lease went %s without renewal (lease duration %s), %d nodes not Ready: the simulator throttles its own kubelets", max, tm.NodeLeaseDuration, notReady)
		}
	}
}
