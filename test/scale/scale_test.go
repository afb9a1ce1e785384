// Package scale measures huddle's controller on a large simulated
// cluster: its memory and the cost of its reconciles with, by default,
// 2,000 nodes and 20,000 pods of which 5,000 are in huddles of 4. It uses
// the eks timing profile (lease renewals every 10 s), as 2,000 simulated
// nodes renewing every second would measure the API server, not huddle.
//
//	go test -run '^$' -bench ControllerAtScale -benchtime 1x -timeout 60m ./test/scale/
//	go test -run '^$' -bench ControllerAtScale -benchtime 1x ./test/scale/ -args -nodes 100 -pods 1000 -huddled 250
//
// Without -bench the package boots nothing and runs nothing.
package scale

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"sort"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/placement"
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
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		os.Exit(m.Run())
	}
	eks := timing.EKS()
	os.Exit(simtest.Main(m, simtest.Options{Timing: &eks, Huddle: true, NoSystemPods: !*systemPods}))
}

// BenchmarkControllerAtScale builds the cluster, waits until it settles
// (every pod runs, or none is gated and nothing changes for a minute),
// and reports huddle's resident memory and the p50/p99 time of its
// reconciles (from its controller_runtime_reconcile_time_seconds
// histograms) over everything it did to get there.
func BenchmarkControllerAtScale(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		env := simtest.New(b)
		start := time.Now()
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
		b.ReportMetric(m.gauges["process_resident_memory_bytes"]/(1<<20), "huddle-rss-MiB")
		b.Logf("huddle: resident memory %.0f MiB, Go heap in use %.0f MiB", m.gauges["process_resident_memory_bytes"]/(1<<20), m.gauges["go_memstats_heap_inuse_bytes"]/(1<<20))
		for _, c := range []string{"placement", "repair", "huddle-status"} {
			h := m.histogram("controller_runtime_reconcile_time_seconds", c)
			b.ReportMetric(h.quantile(0.5)*1000, c+"-p50-ms")
			b.ReportMetric(h.quantile(0.99)*1000, c+"-p99-ms")
			b.Logf("%s: %d reconciles, p50 %.1fms, p99 %.1fms", c, h.count, h.quantile(0.5)*1000, h.quantile(0.99)*1000)
		}
		b.ReportMetric(0, "ns/op")
		b.StartTimer()
	}
}

// waitSettled waits until every pod runs, or the number running has not
// changed for a minute: some members may wait
// Pending at a home that filled up meanwhile (by design they never go
// elsewhere), and those are counted and reported.
func waitSettled(b *testing.B, env *simtest.Env, n int, start time.Time) {
	lastLog, lastChange, lastRunning := time.Now(), time.Now(), -1
	env.Eventually(fmt.Sprintf("%d pods settled", n), 60*time.Minute, func() error {
		time.Sleep(5 * time.Second)
		running, gated, pending := 0, 0, 0
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
				case placement.HasGate(p):
					gated++
				default:
					pending++
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
		// Followers of a first member that waits at full candidates stay
		// gated (by design), so a gated pod does not mean unsettled.
		if running < n && time.Since(lastChange) < time.Minute {
			return fmt.Errorf("%d of %d running, %d gated, %d pending", running, n, gated, pending)
		}
		b.Logf("settled after %s: %d of %d pods running, %d gated, %d pending (members waiting at a home or candidates that filled up)", time.Since(start).Round(time.Second), running, n, gated, pending)
		return nil
	})
}

// metrics are huddle's metrics: gauges by name, and histograms.
type metrics struct {
	gauges map[string]float64
	hists  map[string]map[string]histogram // family -> controller -> histogram
}

func (m metrics) histogram(family, controller string) histogram { return m.hists[family][controller] }

type histogram struct {
	count   uint64
	buckets []bucket // sorted by bound
}

type bucket struct {
	le    float64
	count uint64
}

// quantile estimates the q-quantile by linear interpolation within the
// bucket that holds it, as Prometheus' histogram_quantile does.
func (h histogram) quantile(q float64) float64 {
	if h.count == 0 {
		return 0
	}
	rank := q * float64(h.count)
	prevLe, prevCount := 0.0, uint64(0)
	for _, b := range h.buckets {
		if float64(b.count) >= rank {
			if b.count == prevCount {
				return b.le
			}
			return prevLe + (b.le-prevLe)*(rank-float64(prevCount))/float64(b.count-prevCount)
		}
		prevLe, prevCount = b.le, b.count
	}
	return prevLe
}

func scrape(b *testing.B, env *simtest.Env) metrics {
	text, err := env.Cluster.HuddleMetricsText(env.Ctx)
	if err != nil {
		b.Fatalf("huddle /metrics: %v", err)
	}
	raw := []byte(text)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		b.Fatal(err)
	}
	m := metrics{gauges: map[string]float64{}, hists: map[string]map[string]histogram{}}
	for name, f := range families {
		for _, metric := range f.Metric {
			if g := metric.GetGauge(); g != nil {
				m.gauges[name] = g.GetValue()
			}
			hm := metric.GetHistogram()
			if hm == nil {
				continue
			}
			controller := ""
			for _, l := range metric.Label {
				if l.GetName() == "controller" {
					controller = l.GetValue()
				}
			}
			h := histogram{count: hm.GetSampleCount()}
			for _, bk := range hm.Bucket {
				h.buckets = append(h.buckets, bucket{le: bk.GetUpperBound(), count: bk.GetCumulativeCount()})
			}
			sort.Slice(h.buckets, func(i, j int) bool { return h.buckets[i].le < h.buckets[j].le })
			if m.hists[name] == nil {
				m.hists[name] = map[string]histogram{}
			}
			m.hists[name][controller] = h
		}
	}
	return m
}
