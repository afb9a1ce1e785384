package controller

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

var (
	// placementLatency is the time from a pod's creation to its release by
	// the placer.
	placementLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "huddle_placement_latency_seconds",
		Help:    "Time from a gated pod's creation to huddle releasing it to the scheduler.",
		Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
	})
	decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "huddle_placement_decisions_total",
		Help: "Placement decisions by action (PinHome, PinCandidates, Release, Hold) and reason.",
	}, []string{"action", "reason"})
	huddlesByPhase = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "huddle_huddles",
		Help: "Huddles by phase.",
	}, []string{"phase"})
	evictions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "huddle_evictions_total",
		Help: "Evictions of members away from home, by result (evicted, refused, error).",
	}, []string{"result"})
	fences = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "huddle_fences_total",
		Help: "Out-of-service taints added to (fence) and removed from (unfence) shut-down home nodes; pods of fenced or deleted nodes force-deleted (delete-pod); volumes released from deleted nodes (detach-deleted).",
	}, []string{"action"})
	moves = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "huddle_moves_total",
		Help: "Whole-huddle moves by step (Start, Retarget, Finish, Abandon).",
	}, []string{"action"})
	stuckReplaced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "huddle_stuck_members_replaced_total",
		Help: "Pinned members that could not bind, deleted so that their controller recreates them and huddle places them again.",
	})
	// reconcileSeconds gives quantiles computed from every reconcile's
	// time (a streaming summary of the raw samples, within the stated
	// error), where controller_runtime_reconcile_time_seconds only has
	// buckets to interpolate in: between its 0.1 s and 0.15 s bounds a
	// p99 may be anywhere. An hour's window holds a whole scale run.
	reconcileSeconds = prometheus.NewSummaryVec(prometheus.SummaryOpts{
		Name:       "huddle_reconcile_seconds",
		Help:       "Time of each reconcile by controller, quantiles over the last hour from the raw samples.",
		Objectives: map[float64]float64{0.5: 0.01, 0.9: 0.005, 0.99: 0.001},
		MaxAge:     time.Hour,
		AgeBuckets: 6,
	}, []string{"controller"})
	recovery = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "huddle_recovery_seconds",
		Help:    "Time from a huddle leaving Huddled (a disruption) to every member running at home again.",
		Buckets: []float64{1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200},
	})
)

func init() {
	metrics.Registry.MustRegister(placementLatency, decisions, huddlesByPhase, evictions, fences, moves, stuckReplaced, recovery, reconcileSeconds)
}

// timed records each reconcile's time in reconcileSeconds.
type timed struct {
	controller string
	next       reconcile.Reconciler
}

func (t timed) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	start := time.Now()
	defer func() { reconcileSeconds.WithLabelValues(t.controller).Observe(time.Since(start).Seconds()) }()
	return t.next.Reconcile(ctx, req)
}
