package kubelet

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// The kubelet's pod workers for pods whose containers run as processes.

// syncProcessPod sets up the sandbox (again, after a power cycle), starts
// and restarts containers, and writes the status they show.
func (p *Pool) syncProcessPod(ctx context.Context, n *node, pod *corev1.Pod, st *podState, now time.Time) (time.Duration, error) {
	if err := st.proc.setUp(ctx); err != nil {
		n.recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "%v", err)
		return 2 * time.Second, nil
	}
	next := st.proc.sync(ctx)
	status, version, done := st.proc.status(pod, n, now, false)
	if done {
		if err := p.release(ctx, n, st); err != nil { // before the terminal phase
			return 0, err
		}
	}
	if version != st.written || pod.Status.Phase == corev1.PodPending {
		if err := p.writeStatus(ctx, n, pod, status); err != nil {
			return 0, err
		}
		st.written = version
	}
	if done {
		st.stage = stageDone
		st.proc.close()
	}
	return next, nil
}

// stopProcessPod stops a deleted pod's processes: SIGTERM, SIGKILL after
// the (scaled) grace period, then the final status, and the pod is gone.
func (p *Pool) stopProcessPod(ctx context.Context, n *node, pod *corev1.Pod, st *podState, now time.Time) (time.Duration, error) {
	if st.stopAt.IsZero() {
		// Real processes take real time to stop: the grace period is not
		// scaled by the profile.
		grace := time.Duration(gracePeriod(pod)) * time.Second
		st.stopAt = now.Add(grace)
		st.proc.stop(grace)
	}
	if !st.proc.exited() {
		// Each exit requeues the pod; this bounds the wait if none comes.
		return max(st.stopAt.Sub(now), 0) + time.Second, nil
	}
	st.proc.close()
	if err := p.release(ctx, n, st); err != nil { // before the terminal phase
		return 0, err
	}
	if st.stage != stageDone {
		status, _, _ := st.proc.status(pod, n, now, true)
		if err := p.writeStatus(ctx, n, pod, status); err != nil {
			return 0, err
		}
		st.stage = stageDone
	}
	return 0, p.remove(ctx, n, pod)
}

// stopAllProcesses stops every process when the simulation ends.
func (p *Pool) stopAllProcesses() {
	p.mu.Lock()
	var procs []*procPod
	for _, n := range p.nodes {
		for _, st := range n.pods {
			if st.proc != nil {
				procs = append(procs, st.proc)
			}
		}
	}
	p.mu.Unlock()
	for _, pp := range procs {
		pp.stop(2 * time.Second)
	}
	deadline := time.Now().Add(3 * time.Second)
	for _, pp := range procs {
		for !pp.exited() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		pp.powerOff()
	}
}
