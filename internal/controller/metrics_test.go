package controller

import (
	"context"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// TestTimedObservesEveryReconcile: each reconcile through timed adds one
// raw sample, under its controller's label, of the time it took.
func TestTimedObservesEveryReconcile(t *testing.T) {
	slow := reconcile.Func(func(context.Context, reconcile.Request) (reconcile.Result, error) {
		time.Sleep(20 * time.Millisecond)
		return reconcile.Result{}, nil
	})
	r := timed{"test-timed", slow}
	for range 3 {
		if _, err := r.Reconcile(context.Background(), reconcile.Request{}); err != nil {
			t.Fatal(err)
		}
	}
	m := &dto.Metric{}
	if err := reconcileSeconds.WithLabelValues("test-timed").(interface{ Write(*dto.Metric) error }).Write(m); err != nil {
		t.Fatal(err)
	}
	if got := m.GetSummary().GetSampleCount(); got != 3 {
		t.Fatalf("%d samples, want 3", got)
	}
	for _, q := range m.GetSummary().GetQuantile() {
		if q.GetValue() < 0.02 {
			t.Errorf("quantile %v is %.3fs, want at least the 20 ms each reconcile slept", q.GetQuantile(), q.GetValue())
		}
	}
}
