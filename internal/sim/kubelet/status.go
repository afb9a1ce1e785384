package kubelet

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// The pod statuses a kubelet writes, shaped as the real kubelet shapes
// them so tools (kubectl, the report, huddle) read them the usual way.

func creatingStatus(pod *corev1.Pod, n *node, now time.Time) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	t := metav1.NewTime(now)
	s.Phase = corev1.PodPending
	s.HostIP = n.ip
	s.HostIPs = []corev1.HostIP{{IP: n.ip}}
	s.StartTime = &t
	names := containerNames(pod)
	s.Conditions = setConditions(s.Conditions, t,
		cond(corev1.PodReadyToStartContainers, corev1.ConditionFalse, "", ""),
		cond(corev1.PodInitialized, corev1.ConditionTrue, "", ""),
		cond(corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", names)),
		cond(corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", names)),
	)
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		s.ContainerStatuses = append(s.ContainerStatuses, corev1.ContainerStatus{
			Name:  c.Name,
			Image: c.Image,
			State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		})
	}
	return s
}

func runningStatus(pod *corev1.Pod, n *node, now time.Time, st *podState) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	t := metav1.NewTime(now)
	s.Phase = corev1.PodRunning
	s.HostIP = n.ip
	s.HostIPs = []corev1.HostIP{{IP: n.ip}}
	s.PodIP = st.ip
	s.PodIPs = []corev1.PodIP{{IP: st.ip}}
	s.Conditions = setConditions(s.Conditions, t,
		cond(corev1.PodReadyToStartContainers, corev1.ConditionTrue, "", ""),
		cond(corev1.PodInitialized, corev1.ConditionTrue, "", ""),
		cond(corev1.PodReady, corev1.ConditionTrue, "", ""),
		cond(corev1.ContainersReady, corev1.ConditionTrue, "", ""),
	)
	s.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		s.InitContainerStatuses = append(s.InitContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true,
			ContainerID: containerID(pod, c.Name),
			State:       corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed", StartedAt: t, FinishedAt: t}},
		})
	}
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Ready: true, Started: ptr.To(true),
			ContainerID:  containerID(pod, attempt(c.Name, st.restarts)),
			RestartCount: st.restarts,
			State:        corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: t}},
		}
		if st.lastTerm != nil {
			cs.LastTerminationState.Terminated = st.lastTerm.DeepCopy()
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	return s
}

// restartingStatus is the status of a running pod whose containers died
// with its node, while the kubelet recreates its sandbox: still Running
// (its restart policy restarts them), not Ready, the containers waiting
// with the lost run as their last state.
func restartingStatus(pod *corev1.Pod, n *node, now time.Time, st *podState, lost *corev1.ContainerStateTerminated) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	t := metav1.NewTime(now)
	s.Phase = corev1.PodRunning
	names := containerNames(pod)
	s.Conditions = setConditions(s.Conditions, t,
		cond(corev1.PodReadyToStartContainers, corev1.ConditionFalse, "", ""),
		cond(corev1.PodReady, corev1.ConditionFalse, "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", names)),
		cond(corev1.ContainersReady, corev1.ConditionFalse, "ContainersNotReady", fmt.Sprintf("containers with unready status: [%s]", names)),
	)
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		lost := lost.DeepCopy()
		lost.ContainerID = containerID(pod, attempt(c.Name, st.restarts))
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Started: ptr.To(false),
			RestartCount: st.restarts,
			State:        corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}},
		}
		cs.LastTerminationState.Terminated = lost
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	return s
}

// exit is how a pod's simulated containers ended.
type exit struct {
	code   int32
	reason string
}

// Exit codes as containerd reports them: 128+signal for a process a signal
// ended, reason Error for any non-zero code; 255, Unknown for a container
// whose task vanished (a node that lost power).
var (
	exitCompleted = exit{0, "Completed"}
	exitSIGTERM   = exit{143, "Error"}
	exitSIGKILL   = exit{137, "Error"}
	exitLost      = exit{255, "Unknown"}
)

// terminatedStatus is the last status of a pod whose containers ended as
// end says: Succeeded if they exited 0, else Failed, as the kubelet's
// getPhase makes a terminal pod (kubernetes pkg/kubelet/kubelet_pods.go).
func terminatedStatus(pod *corev1.Pod, now time.Time, st *podState, end exit) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	t := metav1.NewTime(now)
	reason := "PodCompleted"
	s.Phase = corev1.PodSucceeded
	if end.code != 0 {
		s.Phase, reason = corev1.PodFailed, "PodFailed"
	}
	s.Conditions = setConditions(s.Conditions, t,
		cond(corev1.PodReadyToStartContainers, corev1.ConditionFalse, "", ""),
		cond(corev1.PodReady, corev1.ConditionFalse, reason, ""),
		cond(corev1.ContainersReady, corev1.ConditionFalse, reason, ""),
	)
	started := t
	if !st.started.IsZero() {
		started = metav1.NewTime(st.started)
	}
	s.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		id := containerID(pod, attempt(c.Name, st.restarts))
		cs := corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, ImageID: c.Image, Started: ptr.To(false),
			ContainerID: id, RestartCount: st.restarts,
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: end.code, Reason: end.reason, StartedAt: started, FinishedAt: t, ContainerID: id,
			}},
		}
		if st.lastTerm != nil {
			cs.LastTerminationState.Terminated = st.lastTerm.DeepCopy()
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	return s
}

// rejectedStatus is the status the kubelet writes when admission fails.
func rejectedStatus(pod *corev1.Pod, r *rejection) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	s.Phase = corev1.PodFailed
	s.Reason = r.reason
	s.Message = "Pod was rejected: " + r.message
	return s
}

func cond(t corev1.PodConditionType, s corev1.ConditionStatus, reason, msg string) corev1.PodCondition {
	return corev1.PodCondition{Type: t, Status: s, Reason: reason, Message: msg}
}

// setConditions upserts conditions by type, keeping others' conditions
// (PodScheduled, DisruptionTarget) and transition times that did not change.
func setConditions(existing []corev1.PodCondition, now metav1.Time, set ...corev1.PodCondition) []corev1.PodCondition {
	out := append([]corev1.PodCondition(nil), existing...)
	for _, c := range set {
		found := false
		for i := range out {
			if out[i].Type != c.Type {
				continue
			}
			found = true
			if out[i].Status != c.Status {
				out[i].LastTransitionTime = now
			}
			out[i].Status, out[i].Reason, out[i].Message = c.Status, c.Reason, c.Message
			out[i].LastProbeTime = metav1.Time{}
		}
		if !found {
			c.LastTransitionTime = now
			out = append(out, c)
		}
	}
	return out
}

func containerNames(pod *corev1.Pod) string {
	names := make([]string, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		names = append(names, c.Name)
	}
	return strings.Join(names, " ")
}

// attempt names a container's n-th run: each run is a new container.
func attempt(name string, restarts int32) string {
	if restarts == 0 {
		return name
	}
	return fmt.Sprintf("%s-%d", name, restarts)
}

func containerID(pod *corev1.Pod, name string) string {
	return "containerd://" + InstanceID(string(pod.UID) + name)[2:]
}
