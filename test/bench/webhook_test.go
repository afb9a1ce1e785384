package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// BenchmarkWebhookAdmission sends AdmissionReviews for pods that mount a
// shared claim straight to huddle's webhook server, over TLS with
// keep-alive as kube-apiserver does, and reports the median and p99
// latency the sender saw. Every answer must gate the pod: a benchmark of
// the error path would measure nothing.
//
//   - rate=N: N reviews per second, each sent on schedule whether or not
//     earlier ones have been answered (open loop), which is how an API
//     server's admission traffic arrives;
//   - saturated: 16 senders back to back, for the most reviews per second
//     the webhook answers on this machine (sender and webhook share its
//     cores, so latency here is mostly queueing).
func BenchmarkWebhookAdmission(b *testing.B) {
	env := simtest.New(b)
	env.Create(env.Claim("data"))
	url, client := webhookClient(b, env)
	body := admissionReview(b, env)
	// Let the webhook's cache see the claim.
	env.Eventually("the webhook gates a pod of claim data", 30*time.Second, func() error {
		_, err := admit(client, url, body)
		return err
	})
	for _, rate := range []int{100, 1000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			all := &samples{}
			var mu sync.Mutex
			var wg sync.WaitGroup
			interval := time.Second / time.Duration(rate)
			start := time.Now()
			for i := 0; b.Loop(); i++ {
				time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
				wg.Add(1)
				go func() {
					defer wg.Done()
					d, err := admit(client, url, body)
					if err != nil {
						b.Error(err)
						return
					}
					mu.Lock()
					all.add(d)
					mu.Unlock()
				}()
			}
			wg.Wait()
			reportAdmission(b, all, false)
		})
	}
	b.Run("saturated", func(b *testing.B) {
		var mu sync.Mutex
		all := &samples{}
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			var mine []time.Duration
			for pb.Next() {
				d, err := admit(client, url, body)
				if err != nil {
					b.Error(err)
					return
				}
				mine = append(mine, d)
			}
			mu.Lock()
			all.add(mine...)
			mu.Unlock()
		})
		reportAdmission(b, all, true)
	})
}

// reportAdmission reports the latency quantiles and, for a saturated
// run, the throughput (an open-loop run's rate is its input).
func reportAdmission(b *testing.B, all *samples, saturated bool) {
	b.ReportMetric(float64(all.q(0.5).Microseconds()), "p50-µs")
	b.ReportMetric(float64(all.q(0.99).Microseconds()), "p99-µs")
	if saturated {
		b.ReportMetric(float64(len(all.d))/b.Elapsed().Seconds(), "reviews/s")
	}
	b.ReportMetric(0, "ns/op")
}

// webhookClient reads huddle's webhook from its MutatingWebhookConfiguration
// and returns its URL and a client that reaches it as the API server does:
// a URL as it is; a Service at its ready endpoints (the pods' IPs, through
// the simulator's pod network, round-robin), with the Service's DNS name
// verified against the CA bundle.
func webhookClient(b *testing.B, env *simtest.Env) (string, *http.Client) {
	mwc, err := env.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(env.Ctx, "huddle", metav1.GetOptions{})
	if err != nil || len(mwc.Webhooks) == 0 {
		b.Fatalf("huddle's webhook configuration: %v", err)
	}
	w := mwc.Webhooks[0]
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(w.ClientConfig.CABundle) {
		b.Fatal("webhook configuration has no usable CA bundle")
	}
	// A bounded pool of kept-alive connections, as kube-apiserver keeps to
	// a webhook: more senders than connections queue for one rather than
	// open new ones (a TLS handshake per request would be measured).
	t := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxConnsPerHost: 16, MaxIdleConnsPerHost: 16}
	client := &http.Client{Transport: t, Timeout: 10 * time.Second}
	if w.ClientConfig.URL != nil {
		return *w.ClientConfig.URL, client
	}
	svc := w.ClientConfig.Service
	if svc == nil {
		b.Fatal("webhook configuration has neither URL nor Service")
	}
	service, err := env.Client.CoreV1().Services(svc.Namespace).Get(env.Ctx, svc.Name, metav1.GetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	portName := ""
	for _, p := range service.Spec.Ports {
		if p.Port == ptr.Deref(svc.Port, 443) {
			portName = p.Name
		}
	}
	slices, err := env.Client.DiscoveryV1().EndpointSlices(svc.Namespace).List(env.Ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=" + svc.Name})
	if err != nil {
		b.Fatal(err)
	}
	var endpoints []string
	for _, sl := range slices.Items {
		for _, port := range sl.Ports {
			if ptr.Deref(port.Name, "") != portName || port.Port == nil {
				continue
			}
			for _, e := range sl.Endpoints {
				if ptr.Deref(e.Conditions.Ready, false) {
					endpoints = append(endpoints, net.JoinHostPort(e.Addresses[0], fmt.Sprint(*port.Port)))
				}
			}
		}
	}
	if len(endpoints) == 0 {
		b.Fatalf("service %s/%s has no ready endpoint", svc.Namespace, svc.Name)
	}
	var next atomic.Uint64
	t.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return env.Cluster.Network.Dial(ctx, network, endpoints[next.Add(1)%uint64(len(endpoints))])
	}
	host := svc.Name + "." + svc.Namespace + ".svc"
	return fmt.Sprintf("https://%s:%d%s", host, ptr.Deref(svc.Port, 443), ptr.Deref(svc.Path, "")), client
}

func admissionReview(b *testing.B, env *simtest.Env) []byte {
	pod := env.Pod("web", "data")
	pod.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
	raw, err := json.Marshal(pod)
	if err != nil {
		b.Fatal(err)
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID:       types.UID("bench"),
			Kind:      metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
			Namespace: env.Namespace,
			Operation: admissionv1.Create,
			Object:    runtime.RawExtension{Raw: raw},
		},
	}
	body, err := json.Marshal(review)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// admit sends one review and checks that the pod was gated.
func admit(c *http.Client, url string, body []byte) (time.Duration, error) {
	start := time.Now()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil {
		return 0, err
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &review); err != nil || review.Response == nil {
		return 0, fmt.Errorf("webhook answered %s: %s", resp.Status, out)
	}
	if !review.Response.Allowed || !strings.Contains(string(review.Response.Patch), placement.Gate) {
		return 0, fmt.Errorf("webhook did not gate the pod: allowed=%v patch=%s result=%v", review.Response.Allowed, review.Response.Patch, review.Response.Result)
	}
	return d, nil
}

// histogram is a snapshot of one Prometheus histogram: its sample count
// and cumulative counts by upper bound.
type histogram struct {
	count uint64
	le    map[float64]uint64
}

func (h histogram) since(before histogram) histogram {
	d := histogram{count: h.count - before.count, le: map[float64]uint64{}}
	for b, n := range h.le {
		d.le[b] = n - before.le[b]
	}
	return d
}

// within is the share of samples at or below bound, in percent.
func (h histogram) within(bound float64) float64 {
	if h.count == 0 {
		return 0
	}
	for b, n := range h.le {
		// Exponential bucket bounds are not exact decimals.
		if math.Abs(b-bound) <= 1e-9*bound {
			return 100 * float64(n) / float64(h.count)
		}
	}
	return math.NaN()
}

// webhookLatency is huddle's webhook as kube-apiserver timed it
// (apiserver_admission_webhook_admission_duration_seconds: the call,
// TLS and transport included) and as huddle's handler timed it
// (controller_runtime_webhook_latency_seconds).
type webhookLatency struct{ apiserver, handler histogram }

func (w webhookLatency) since(before webhookLatency) webhookLatency {
	return webhookLatency{w.apiserver.since(before.apiserver), w.handler.since(before.handler)}
}

func webhookMetrics(env *simtest.Env) webhookLatency {
	raw, err := env.Client.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(env.Ctx)
	if err != nil {
		env.T.Fatalf("kube-apiserver /metrics: %v", err)
	}
	var w webhookLatency
	w.apiserver = scrape(env, raw, "apiserver_admission_webhook_admission_duration_seconds", "name", "gate.huddle.io")
	// The leader's handler: with two replicas it serves about half the
	// reviews, a fair sample of the handler's latency.
	text, err := env.Cluster.HuddleMetricsText(env.Ctx)
	if err != nil {
		env.T.Fatalf("huddle /metrics: %v", err)
	}
	raw = []byte(text)
	w.handler = scrape(env, raw, "controller_runtime_webhook_latency_seconds", "webhook", "/mutate-v1-pod")
	return w
}

// scrape sums the histograms of family whose label has value.
func scrape(env *simtest.Env, raw []byte, family, label, value string) histogram {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		env.T.Fatalf("parse metrics: %v", err)
	}
	h := histogram{le: map[float64]uint64{}}
	f := families[family]
	if f == nil {
		return h
	}
	for _, m := range f.Metric {
		if labelValue(m, label) != value {
			continue
		}
		hist := m.GetHistogram()
		h.count += hist.GetSampleCount()
		for _, b := range hist.Bucket {
			h.le[b.GetUpperBound()] += b.GetCumulativeCount()
		}
	}
	return h
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
