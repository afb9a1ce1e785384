// Package scale measures huddle's controller on a large simulated
// cluster: its memory and the cost of its reconciles with, by default,
// 2,000 nodes and 20,000 pods of which 5,000 are in huddles of 4. It uses
// the eks timing profile (lease renewals every 10 s), as 2,000 simulated
// nodes renewing every second would measure the API server, not huddle.
//
//	go test -run '^$' -bench ControllerAtScale -benchtime 1x -timeout 60m ./test/scale/
//	go test -run '^$' -bench ControllerAtScale -benchtime 1x ./test/scale/ -args -nodes 100 -pods 1000 -huddled 250
//	go test -run '^$' -bench ControllerAtScale -benchtime 1x ./test/scale/ -args -heap-profile /tmp/huddle.heap
//
// Without -bench the package boots nothing and runs nothing.
package scale

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/simtest"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

var (
	nodeCount   = flag.Int("nodes", 2000, "simulated nodes")
	podCount    = flag.Int("pods", 20000, "pods in all")
	huddledPods = flag.Int("huddled", 5000, "pods of them in huddles of 4 (one claim per 4)")
	// Off by default, unlike every other package: 2,000 nodes' lease
	// renewals (every 10 s) already fill the one client (200 qps) the
	// simulated kubelets share, and 4 add-on pods per node add 8,000 pods
	// and 16,000 status writes to it; at 20 nodes they took adding the
	// nodes from 1 s to 5 s, so at 2,000 the wait for them would measure
	// that client, not huddle.
	systemPods = flag.Bool("system-pods", false, "run the EKS add-ons' pods on every node, as on EKS")
	// Read it with: go tool pprof -top -sample_index=inuse_space FILE
	heapProfile = flag.String("heap-profile", "", "write huddle's heap profile, taken once settled after a garbage collection, to this file")
	// At 5,000 nodes and 50,000 pods this machine's API server (2 cores,
	// shared with everything else) took over 5 s to answer lease
	// renewals: both replicas lost the lease within 20 minutes and
	// restarted, and the simulated kubelets, busy with 50,000 pods, took
	// over 10 minutes to restart them, so the run measured nothing of
	// huddle. A large real control plane answers in milliseconds.
	leaseDuration = flag.Duration("huddle-lease-duration", 0, "the chart's leaderElection.leaseDuration for huddle (renewDeadline two thirds of it, retryPeriod a tenth), e.g. 60s; 0: the chart's 15s")
	// huddle sets Go's memory limit 32Mi below the container's, so Go
	// collects harder to stay under it; the chart's default is 1Gi.
	memoryLimit = flag.String("huddle-memory-limit", "", "the chart's resources.limits.memory for huddle (Go's memory limit is 32Mi below it), e.g. 150Mi; empty: the chart's default")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	eks := timing.EKS()
	opts := simtest.Options{Timing: &eks, Huddle: true, NoSystemPods: !*systemPods}
	opts.HuddleValues = map[string]any{}
	if *heapProfile != "" {
		opts.HuddleValues["extraArgs"] = []any{fmt.Sprintf("--pprof-bind-address=:%d", cluster.HuddlePprofPort)}
	}
	if d := *leaseDuration; d != 0 {
		// The chart takes whole seconds ("60s") and wants the lease
		// longer than the renew deadline, and that longer than 1.2
		// retry periods: true of whole thirds and tenths from 3s up.
		if d%time.Second != 0 || d < 3*time.Second {
			fmt.Fprintf(os.Stderr, "-huddle-lease-duration %s: whole seconds, 3s or more (e.g. 60s)\n", d)
			os.Exit(2)
		}
		secs := func(d time.Duration) string { return fmt.Sprintf("%ds", int(d.Seconds())) }
		opts.HuddleValues["leaderElection"] = map[string]any{"leaseDuration": secs(d), "renewDeadline": secs(d * 2 / 3), "retryPeriod": secs(max(d/10, time.Second))}
	}
	if *memoryLimit != "" {
		limit, err := resource.ParseQuantity(*memoryLimit)
		if err != nil {
			fmt.Fprintf(os.Stderr, "-huddle-memory-limit %q: %v (a quantity such as 150Mi)\n", *memoryLimit, err)
			os.Exit(2)
		}
		// The chart requests 256Mi; a request above the limit is refused.
		request := resource.MustParse("256Mi")
		if limit.Cmp(request) < 0 {
			request = limit
		}
		opts.HuddleValues["resources"] = map[string]any{
			"requests": map[string]any{"memory": request.String()},
			"limits":   map[string]any{"memory": limit.String()},
		}
	}
	os.Exit(simtest.Main(m, opts))
}

// BenchmarkControllerAtScale builds the cluster, waits until it settles
// (every pod runs, or nothing changes for quiet: then it fails, since a
// pod not running is stuck), and reports huddle's resident memory, the
// p50/p90/p99 time of its reconciles over everything it did to get there
// (huddle_reconcile_seconds: quantiles from the raw samples, not
// interpolated between histogram buckets), and the API server's request rate with huddle's share of it.
func BenchmarkControllerAtScale(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		env := simtest.New(b)
		start := time.Now()
		api0, huddle0 := scrapeAPIServer(b, env).counters["apiserver_request_total"], scrape(b, env).counters["rest_client_requests_total"]
		b.Logf("adding %d nodes", *nodeCount)
		env.AddNodes(*nodeCount, simtest.NodeOptions{CPU: "8", Memory: "32Gi"})
		b.Logf("nodes ready in %s", time.Since(start).Round(time.Second))

		claims := *huddledPods / 4
		plain := *podCount - claims*4
		const perDeployment = 100
		for i := 0; i < plain; i += perDeployment {
			d := env.Deployment(fmt.Sprintf("plain-%d", i/perDeployment), int32(min(perDeployment, plain-i)))
			env.Create(d)
		}
		for i := range claims {
			name := fmt.Sprintf("h-%d", i)
			env.Create(env.Claim(name), env.Deployment(name, 4, name))
		}
		b.Logf("created %d plain pods in Deployments and %d huddles of 4 in %s", plain, claims, time.Since(start).Round(time.Second))
		waitSettled(b, env, *podCount, start)

		m := scrape(b, env)
		took := time.Since(start).Seconds()
		api := (scrapeAPIServer(b, env).counters["apiserver_request_total"] - api0) / took
		huddleRate := (m.counters["rest_client_requests_total"] - huddle0) / took
		b.ReportMetric(api, "apiserver-req/s")
		b.ReportMetric(huddleRate, "huddle-req/s")
		b.Logf("API server: %.0f requests/s from the start to settled (%.0f s), huddle's %.1f/s of them (%.1f%%)", api, took, huddleRate, 100*huddleRate/api)
		b.ReportMetric(m.gauges["process_resident_memory_bytes"]/(1<<20), "huddle-rss-MiB")
		b.ReportMetric(m.counters["process_cpu_seconds_total"], "huddle-cpu-s")
		limit := "the chart's default"
		if *memoryLimit != "" {
			limit = *memoryLimit
		}
		rss := m.gauges["process_resident_memory_bytes"]
		b.Logf("huddle: resident memory %.0f MiB, Go heap in use %.0f MiB, CPU %.0f s in all (GC included), memory limit %s (Go's 32Mi below it)",
			rss/(1<<20), m.gauges["go_memstats_heap_inuse_bytes"]/(1<<20), m.counters["process_cpu_seconds_total"], limit)
		if limit, err := resource.ParseQuantity(*memoryLimit); err == nil && rss > float64(limit.Value()) {
			// The simulator does not enforce memory limits; EKS's kernel does.
			b.Errorf("huddle's resident memory, %.0f MiB, is over its memory limit %s: on a real node the kernel would have killed it", rss/(1<<20), *memoryLimit)
		}
		if *heapProfile != "" {
			prof, err := env.Cluster.HuddleHeapProfile(env.Ctx)
			if err != nil {
				b.Fatalf("huddle's heap profile: %v", err)
			}
			if err := os.WriteFile(*heapProfile, prof, 0o644); err != nil {
				b.Fatal(err)
			}
			b.Logf("huddle's heap profile, after a collection: %s (go tool pprof -top -sample_index=inuse_space %s)", *heapProfile, *heapProfile)
		}
		for _, c := range []string{"placement", "repair", "huddle-status", "failover"} {
			s := m.summaries[c]
			b.ReportMetric(s.quantiles[0.5]*1000, c+"-p50-ms")
			b.ReportMetric(s.quantiles[0.99]*1000, c+"-p99-ms")
			b.Logf("%s: %d reconciles, p50 %.1fms, p90 %.1fms, p99 %.1fms (from the raw samples: huddle_reconcile_seconds)",
				c, s.count, s.quantiles[0.5]*1000, s.quantiles[0.9]*1000, s.quantiles[0.99]*1000)
		}
		b.ReportMetric(0, "ns/op")
		b.StartTimer()
	}
}

// quiet is how long the number of running pods must stay the same
// before a cluster where some pods do not run counts as settled: longer
// than huddle's unschedulableDeadline (the chart's 5 minutes), after which
// a pinned member that cannot bind is replaced, so a pod still not
// running after it is stuck, not slow.
const quiet = 6 * time.Minute

// waitSettled waits until every pod runs, or the number running has not
// changed for quiet, and fails the benchmark if any pod is then not
// running (issue 8's target at scale: 0 pods stuck gated or pinned and
// unbound), naming a few.
func waitSettled(b *testing.B, env *simtest.Env, n int, start time.Time) {
	lastLog, lastChange, lastRunning := time.Now(), time.Now(), -1
	var stuck []string
	env.Eventually(fmt.Sprintf("%d pods settled", n), 60*time.Minute, func() error {
		time.Sleep(5 * time.Second)
		running, gated, pending := 0, 0, 0
		stuck = stuck[:0]
		opts := metav1.ListOptions{Limit: 5000}
		for {
			list, err := env.Client.CoreV1().Pods(env.Namespace).List(env.Ctx, opts)
			if err != nil {
				return err
			}
			for i := range list.Items {
				p := &list.Items[i]
				switch {
				case p.Status.Phase == corev1.PodRunning:
					running++
					continue
				case placement.HasGate(p):
					gated++
				default:
					pending++
				}
				if len(stuck) < 10 {
					stuck = append(stuck, fmt.Sprintf("%s (node %q, held %q, pinned-by %q)", p.Name, p.Spec.NodeName, p.Annotations[placement.AnnotationHeld], p.Annotations[placement.AnnotationPinnedBy]))
				}
			}
			if list.Continue == "" {
				break
			}
			opts.Continue = list.Continue
		}
		if running != lastRunning {
			lastRunning, lastChange = running, time.Now()
		}
		if time.Since(lastLog) > 5*time.Minute {
			b.Logf("%d of %d pods running, %d gated, %d pending after %s", running, n, gated, pending, time.Since(start).Round(time.Second))
			lastLog = time.Now()
		}
		if running < n && time.Since(lastChange) < quiet {
			return fmt.Errorf("%d of %d running, %d gated, %d pending", running, n, gated, pending)
		}
		b.ReportMetric(float64(n-running), "pods-not-running")
		b.Logf("settled after %s: %d of %d pods running, %d gated, %d pending", time.Since(start).Round(time.Second), running, n, gated, pending)
		if running < n {
			b.Errorf("%d pods not running %s after the last change (stuck gated or pinned and unbound), e.g. %s", n-running, quiet, strings.Join(stuck, "; "))
		}
		return nil
	})
}

// metrics are huddle's metrics: gauges and counters (summed over their
// labels) by name, and the reconcile summaries by controller.
type metrics struct {
	gauges    map[string]float64
	counters  map[string]float64
	summaries map[string]summary // controller -> huddle_reconcile_seconds
}

// summary is a Prometheus summary: quantiles computed by huddle from the
// raw samples.
type summary struct {
	count     uint64
	quantiles map[float64]float64
}

// scrape reads huddle's metrics.
func scrape(b *testing.B, env *simtest.Env) metrics {
	text, err := env.Cluster.HuddleMetricsText(env.Ctx)
	if err != nil {
		b.Fatalf("huddle /metrics: %v", err)
	}
	return parseMetrics(b, []byte(text))
}

// scrapeAPIServer reads kube-apiserver's metrics.
func scrapeAPIServer(b *testing.B, env *simtest.Env) metrics {
	raw, err := env.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(env.Ctx)
	if err != nil {
		b.Fatalf("kube-apiserver /metrics: %v", err)
	}
	return parseMetrics(b, raw)
}

func parseMetrics(b *testing.B, raw []byte) metrics {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		b.Fatal(err)
	}
	m := metrics{gauges: map[string]float64{}, counters: map[string]float64{}, summaries: map[string]summary{}}
	for name, f := range families {
		for _, metric := range f.Metric {
			if g := metric.GetGauge(); g != nil {
				m.gauges[name] = g.GetValue()
			}
			controller := ""
			for _, l := range metric.Label {
				if l.GetName() == "controller" {
					controller = l.GetValue()
				}
			}
			if sm := metric.GetSummary(); sm != nil && name == "huddle_reconcile_seconds" {
				s := summary{count: sm.GetSampleCount(), quantiles: map[float64]float64{}}
				for _, q := range sm.Quantile {
					s.quantiles[q.GetQuantile()] = q.GetValue()
				}
				m.summaries[controller] = s
			}
			if c := metric.GetCounter(); c != nil {
				m.counters[name] += c.GetValue()
			}
		}
	}
	return m
}
