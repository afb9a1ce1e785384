package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// gatesTotal counts pods the webhook gated. Admission latency is
// controller-runtime's controller_runtime_webhook_latency_seconds.
var gatesTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "huddle_pods_gated_total",
	Help: "Pods that the webhook gated with huddle.io/placement.",
})

// undecodedTotal counts reviews whose pod the webhook could not decode
// and let through ungated.
var undecodedTotal = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "huddle_webhook_undecodable_reviews_total",
	Help: "AdmissionReviews whose pod the webhook could not decode; the pod was allowed without the gate.",
})

func init() { metrics.Registry.MustRegister(gatesTotal, undecodedTotal) }
