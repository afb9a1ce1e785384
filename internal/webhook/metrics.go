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

func init() { metrics.Registry.MustRegister(gatesTotal) }
