package kubelet

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestTerminatedStatus: the last status of a pod follows how its
// containers ended: exit 0 Succeeded; 143 (SIGTERM honoured), 137 (killed
// at the end of the grace period) and 255 (lost with its node) Failed,
// reason Error or Unknown, as containerd reports and getPhase decides.
func TestTerminatedStatus(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: "sidecar"}}}}
	started := time.Now().Add(-time.Minute)
	for _, tc := range []struct {
		end    exit
		phase  corev1.PodPhase
		code   int32
		reason string
	}{
		{exitCompleted, corev1.PodSucceeded, 0, "Completed"},
		{exitSIGTERM, corev1.PodFailed, 143, "Error"},
		{exitSIGKILL, corev1.PodFailed, 137, "Error"},
		{exitLost, corev1.PodFailed, 255, "Unknown"},
	} {
		s := terminatedStatus(pod, time.Now(), &podState{started: started, restarts: 2}, tc.end)
		if s.Phase != tc.phase || len(s.ContainerStatuses) != 2 {
			t.Fatalf("%v: phase %s with %d container statuses, want %s and 2", tc.end, s.Phase, len(s.ContainerStatuses), tc.phase)
		}
		for _, cs := range s.ContainerStatuses {
			term := cs.State.Terminated
			if term == nil || term.ExitCode != tc.code || term.Reason != tc.reason || !term.StartedAt.Time.Equal(started) || cs.RestartCount != 2 {
				t.Errorf("%v: container %s: %+v restarts %d", tc.end, cs.Name, cs.State, cs.RestartCount)
			}
		}
	}
}

// TestRestartingStatus: containers lost with their node are shown waiting
// for a new sandbox, the lost run (255, Unknown) as their last state; the
// pod stays Running (it restarts them) but not Ready. Once they run again
// the restart count is up and startedAt is the new run's.
func TestRestartingStatus(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	n := &node{ip: "10.0.0.1"}
	first := time.Now().Add(-time.Hour)
	lostAt := time.Now().Add(-time.Minute)
	st := &podState{started: first, ip: "100.64.0.1"}
	lost := &corev1.ContainerStateTerminated{ExitCode: 255, Reason: "Unknown", StartedAt: metav1.NewTime(first), FinishedAt: metav1.NewTime(lostAt)}

	s := restartingStatus(pod, n, time.Now(), st, lost)
	cs := s.ContainerStatuses[0]
	if s.Phase != corev1.PodRunning || readyCondition(&corev1.Pod{Status: s}) || cs.State.Waiting == nil || cs.Ready {
		t.Fatalf("phase %s, ready %v, state %+v: want Running, not Ready, waiting", s.Phase, readyCondition(&corev1.Pod{Status: s}), cs.State)
	}
	if last := cs.LastTerminationState.Terminated; last == nil || last.ExitCode != 255 || last.Reason != "Unknown" {
		t.Fatalf("last state %+v, want exited 255 Unknown", cs.LastTerminationState)
	}

	st.restarts, st.lastTerm = 1, lost
	again := time.Now()
	s = runningStatus(pod, n, again, st)
	cs = s.ContainerStatuses[0]
	if cs.RestartCount != 1 || cs.State.Running == nil || cs.State.Running.StartedAt.Time.Before(again.Truncate(time.Second)) || cs.LastTerminationState.Terminated == nil {
		t.Fatalf("after the restart: restarts %d, state %+v, last %+v", cs.RestartCount, cs.State, cs.LastTerminationState)
	}
	if cs.ContainerID == containerID(pod, "app") {
		t.Errorf("the restarted container kept its first ID %s", cs.ContainerID)
	}
}
