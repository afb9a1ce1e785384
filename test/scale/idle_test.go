package scale

import (
	"flag"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

var (
	idleNodes   = flag.Int("idle-nodes", 80, "BenchmarkIdleHuddles: simulated nodes")
	idleHuddles = flag.Int("idle-huddles", 800, "BenchmarkIdleHuddles: huddles, of 1 and 2 pods in turn")
	idleWindow  = flag.Duration("idle-window", 2*time.Minute, "BenchmarkIdleHuddles: how long steady state is measured")
)

// BenchmarkIdleHuddles measures what huddle costs when nothing happens:
// it builds many small huddles (cluster-wide mode's typical claim: one
// Deployment of one or two pods), waits until they settle and one more
// minute, then counts, over -idle-window, the reconciles of each of
// huddle's controllers and the requests huddle's clients sent to the API
// server (controller_runtime_reconcile_total, rest_client_requests_total
// on the leader's metrics endpoint). A per-Huddle periodic resync shows
// up here as reconciles per second proportional to the number of
// Huddles.
//
//	go test -run '^$' -bench IdleHuddles -benchtime 1x -timeout 60m ./test/scale/
//	go test -run '^$' -bench IdleHuddles -benchtime 1x -timeout 60m ./test/scale/ -args -idle-huddles 2000 -idle-nodes 200
//
// The first (800 huddles, 80 nodes, a 2-minute window) takes about 14
// minutes, most of it the simulated attachments of 800 volumes.
func BenchmarkIdleHuddles(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		env := simtest.New(b)
		start := time.Now()
		env.AddNodes(*idleNodes, simtest.NodeOptions{CPU: "8", Memory: "32Gi"})
		b.Logf("%d nodes ready in %s", *idleNodes, time.Since(start).Round(time.Second))
		pods := 0
		for i := range *idleHuddles {
			name := fmt.Sprintf("h-%d", i)
			replicas := int32(1 + i%2)
			env.Create(env.Claim(name), env.Deployment(name, replicas, name))
			pods += int(replicas)
		}
		b.Logf("created %d huddles (%d pods) in %s", *idleHuddles, pods, time.Since(start).Round(time.Second))
		waitSettled(b, env, pods, start)
		// Let the last status writes and their echoes pass.
		time.Sleep(time.Minute)

		before := scrapeCounters(b, env)
		t0 := time.Now()
		time.Sleep(*idleWindow)
		after := scrapeCounters(b, env)
		secs := time.Since(t0).Seconds()

		reconciles := 0.0
		for _, c := range []string{"huddle-status", "repair", "placement"} {
			d := after["reconcile/"+c] - before["reconcile/"+c]
			reconciles += d
			mean := 0.0
			if d > 0 {
				mean = (after["seconds/"+c] - before["seconds/"+c]) / d * 1000
			}
			b.Logf("%s: %.0f reconciles in %.0fs, %.2f/s, mean %.2f ms", c, d, secs, d/secs, mean)
		}
		requests := after["requests"] - before["requests"]
		b.Logf("API requests from huddle: %.0f in %.0fs, %.2f/s (%s)", requests, secs, requests/secs, verbs(before, after))
		b.Logf("steady state with %d idle huddles: %.2f reconciles/s, %.2f API requests/s; per 50,000 huddles: %.0f reconciles/s",
			*idleHuddles, reconciles/secs, requests/secs, reconciles/secs*50000/float64(*idleHuddles))
		b.ReportMetric(reconciles/secs, "reconciles/s")
		b.ReportMetric((after["reconcile/huddle-status"]-before["reconcile/huddle-status"])/secs, "status-reconciles/s")
		b.ReportMetric(requests/secs, "api-requests/s")
		b.ReportMetric(0, "ns/op")
		b.StartTimer()
	}
}

// scrapeCounters reads huddle's reconcile counts per controller
// ("reconcile/<controller>"), the seconds they took
// ("seconds/<controller>") and its API requests, in all ("requests")
// and per method ("requests/<METHOD>").
func scrapeCounters(b *testing.B, env *simtest.Env) map[string]float64 {
	text, err := env.Cluster.HuddleMetricsText(env.Ctx)
	if err != nil {
		b.Fatalf("huddle /metrics: %v", err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		b.Fatal(err)
	}
	out := map[string]float64{}
	for _, m := range families["controller_runtime_reconcile_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" {
				out["reconcile/"+l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	for _, m := range families["controller_runtime_reconcile_time_seconds"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "controller" {
				out["seconds/"+l.GetValue()] += m.GetHistogram().GetSampleSum()
			}
		}
	}
	for _, m := range families["rest_client_requests_total"].GetMetric() {
		out["requests"] += m.GetCounter().GetValue()
		for _, l := range m.GetLabel() {
			if l.GetName() == "method" {
				out["requests/"+l.GetValue()] += m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// verbs says how many requests of each method were sent between two
// scrapes.
func verbs(before, after map[string]float64) string {
	var out []string
	for k, v := range after {
		if m, ok := strings.CutPrefix(k, "requests/"); ok && v-before[k] > 0 {
			out = append(out, fmt.Sprintf("%s %.0f", m, v-before[k]))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
