package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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
	recovery = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "huddle_recovery_seconds",
		Help:    "Time from a huddle leaving Huddled (a disruption) to every member running at home again.",
		Buckets: []float64{1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1200},
	})
)

func init() {
	metrics.Registry.MustRegister(placementLatency, decisions, huddlesByPhase, evictions, fences, moves, stuckReplaced, recovery)
}
