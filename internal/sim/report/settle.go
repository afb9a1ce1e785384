package report

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Outcome says how Settle ended.
type Outcome string

// The ways a settle ends.
const (
	// AllRunning: every pod is Running (Jobs: Succeeded) and every
	// workload has all its pods.
	AllRunning Outcome = "allRunning"
	// Quiet: nothing changed for the quiet period and nothing was due;
	// something is stuck.
	Quiet Outcome = "quiet"
	// Timeout: still changing, or something still due, when the time ran
	// out.
	Timeout Outcome = "timeout"
)

// Wait says how long Settle waits.
type Wait struct {
	// Quiet ends the wait once nothing has changed for this long.
	Quiet time.Duration
	// Timeout ends it in any case.
	Timeout time.Duration
	// Pending, if set, lists what is still due to change the pods (huddle's
	// timers: a replacement, a move); while anything is due before the
	// timeout, the wait goes on past a quiet period. What is due later is
	// only reported.
	Pending func(ctx context.Context, now time.Time) ([]Due, error)
	// Progress receives a line every five seconds.
	Progress io.Writer
}

// Settle waits for the workloads in namespaces to settle and returns how
// long that took, how the wait ended, and what was still pending then.
func Settle(ctx context.Context, client kubernetes.Interface, namespaces []string, w Wait) (time.Duration, Outcome, []string, error) {
	start := time.Now()
	lastChange, lastPrint := start, start
	prev := ""
	var pending []string
	for {
		state, summary, done, err := snapshot(ctx, client, namespaces)
		if err != nil {
			return time.Since(start), Timeout, nil, err
		}
		now := time.Now()
		if done {
			return now.Sub(start), AllRunning, nil, nil
		}
		if state != prev {
			prev, lastChange = state, now
		}
		pending = nil
		holding := false
		if w.Pending != nil {
			dues, err := w.Pending(ctx, now)
			if err != nil {
				return time.Since(start), Timeout, nil, err
			}
			for _, d := range dues {
				pending = append(pending, d.String(now))
				if !d.At.After(start.Add(w.Timeout)) {
					holding = true
				}
			}
		}
		if now.Sub(lastChange) >= w.Quiet && !holding {
			return lastChange.Sub(start), Quiet, pending, nil
		}
		if now.Sub(start) >= w.Timeout {
			return now.Sub(start), Timeout, pending, nil
		}
		if now.Sub(lastPrint) >= 5*time.Second && w.Progress != nil {
			line := fmt.Sprintf("  %4.0fs  %s", now.Sub(start).Seconds(), summary)
			if len(pending) > 0 {
				line += "; waiting for huddle: " + strings.Join(pending, "; ")
			}
			fmt.Fprintln(w.Progress, line)
			lastPrint = now
		}
		select {
		case <-ctx.Done():
			return time.Since(start), Timeout, pending, ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// snapshot fingerprints pods and workloads, summarises pod states, and
// says whether everything is done.
func snapshot(ctx context.Context, client kubernetes.Interface, namespaces []string) (string, string, bool, error) {
	var fp []string
	counts := map[string]int{}
	done := true
	total := 0
	for _, ns := range namespaces {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return "", "", false, err
		}
		for i := range pods.Items {
			p := &pods.Items[i]
			total++
			status := displayStatus(p)
			counts[status]++
			fp = append(fp, fmt.Sprintf("%s/%s %s %s %v", ns, p.Name, p.Spec.NodeName, status, ready(p)))
			if !OK(p) {
				done = false
			}
		}
		pending, wfp, err := workloads(ctx, client, ns)
		if err != nil {
			return "", "", false, err
		}
		fp = append(fp, wfp...)
		if pending {
			done = false
		}
	}
	sort.Strings(fp)
	var parts []string
	for s, n := range counts {
		parts = append(parts, fmt.Sprintf("%d %s", n, s))
	}
	sort.Strings(parts)
	summary := fmt.Sprintf("%d pods: %s", total, strings.Join(parts, ", "))
	return strings.Join(fp, "\n"), summary, done, nil
}

// workloads reports whether any workload in ns still lacks pods, with a
// fingerprint of their status.
func workloads(ctx context.Context, client kubernetes.Interface, ns string) (bool, []string, error) {
	pending := false
	var fp []string
	deps, err := client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil, err
	}
	for _, d := range deps.Items {
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		s := d.Status
		if s.ObservedGeneration < d.Generation || s.UpdatedReplicas != want || s.Replicas != want || s.AvailableReplicas != want {
			pending = true
		}
		fp = append(fp, fmt.Sprintf("deploy/%s %d/%d/%d/%d", d.Name, s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas))
	}
	sets, err := client.AppsV1().StatefulSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil, err
	}
	for _, s := range sets.Items {
		want := int32(1)
		if s.Spec.Replicas != nil {
			want = *s.Spec.Replicas
		}
		if s.Status.ReadyReplicas != want || s.Status.UpdatedReplicas != want {
			pending = true
		}
		fp = append(fp, fmt.Sprintf("sts/%s %d/%d", s.Name, s.Status.ReadyReplicas, s.Status.UpdatedReplicas))
	}
	jobs, err := client.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil, err
	}
	for _, j := range jobs.Items {
		finished := false
		for _, c := range j.Status.Conditions {
			if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
				finished = true
			}
		}
		if !finished {
			pending = true
		}
		fp = append(fp, fmt.Sprintf("job/%s %d/%d/%v", j.Name, j.Status.Active, j.Status.Succeeded, finished))
	}
	dss, err := client.AppsV1().DaemonSets(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, nil, err
	}
	for _, d := range dss.Items {
		if d.Status.NumberReady != d.Status.DesiredNumberScheduled {
			pending = true
		}
		fp = append(fp, fmt.Sprintf("ds/%s %d/%d", d.Name, d.Status.NumberReady, d.Status.DesiredNumberScheduled))
	}
	return pending, fp, nil
}

// displayStatus is the pod's state as kubectl's STATUS column shows it.
func displayStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	if p.Status.Phase == corev1.PodPending {
		if p.Spec.NodeName == "" {
			if len(p.Spec.SchedulingGates) > 0 {
				return "SchedulingGated"
			}
			return "Pending"
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.State.Waiting != nil && c.State.Waiting.Reason != "" {
				return c.State.Waiting.Reason
			}
		}
	}
	if p.Status.Phase == corev1.PodSucceeded {
		return "Completed"
	}
	if p.Status.Reason != "" {
		return p.Status.Reason
	}
	return string(p.Status.Phase)
}
