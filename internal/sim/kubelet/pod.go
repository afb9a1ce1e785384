package kubelet

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	resourcehelper "k8s.io/component-helpers/resource"
	csitranslation "k8s.io/csi-translation-lib"
	"k8s.io/utils/ptr"
)

// AnnotationRunSeconds on a pod whose restartPolicy is not Always makes its
// containers exit 0 after that many seconds (fractions allowed). Pods of
// Jobs without it run for the timing profile's JobDuration.
const AnnotationRunSeconds = "sim.huddle.io/run-seconds"

// AnnotationStopSeconds is how long a pod's containers take to exit after
// SIGTERM (default: the timing profile's ContainerStopDelay). The kubelet
// kills them when the scaled termination grace period runs out first.
const AnnotationStopSeconds = "sim.huddle.io/stop-seconds"

var (
	schemeForEvents  = scheme.Scheme
	labelsEverything = labels.Everything()
)

// stage is how far the kubelet has taken a pod's status.
type stage int

const (
	stageAdmitted stage = iota // ContainerCreating
	stageRunning
	stageDone
)

// podState is what a kubelet remembers about a pod it admitted.
type podState struct {
	uid      types.UID
	requests corev1.ResourceList
	ports    []corev1.ContainerPort // host ports it takes
	// volumes are the unique names of the pod's attachable volumes, as the
	// attach/detach controller names them in status.volumesAttached.
	volumes []string
	// released: the pod's containers are gone and it holds no volume.
	released bool
	stage    stage
	readyAt  time.Time // containers start at this time, once volumes are attached
	started  time.Time
	stopAt   time.Time // a deleted pod's containers have exited at this time
	// killed: they outlast the grace period and the kubelet kills them.
	killed bool
	// lostAt is when the node lost power under the running containers;
	// restarts and lastTerm are what their restarts left.
	lostAt   time.Time
	restarts int32
	lastTerm *corev1.ContainerStateTerminated
	ip       string
	// proc runs the pod's containers as processes (nil: simulated);
	// written is the proc status version last written.
	proc    *procPod
	written int
}

// syncPod moves one pod through the kubelet's lifecycle. It returns how
// long to wait before looking at the pod again (0: until something changes).
func (p *Pool) syncPod(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	pod, err := p.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return 0, p.forget(ctx, key)
	}
	if err != nil {
		return 0, err
	}
	n := p.node(pod.Spec.NodeName)
	if n == nil {
		return 0, nil
	}
	p.mu.Lock()
	powered := n.powered
	st := n.pods[key]
	var gone *podState
	if st != nil && st.uid != pod.UID { // same name, new pod (StatefulSet)
		delete(n.pods, key)
		gone, st = st, nil
	}
	p.mu.Unlock()
	if gone != nil && gone.proc != nil {
		gone.proc.powerOff() // the old pod is gone: so are its processes
	}
	if !powered {
		return 0, nil // a node that is off does nothing; power-on resyncs
	}
	now := time.Now()

	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		if err := p.release(ctx, n, st); err != nil {
			return 0, err
		}
		if pod.DeletionTimestamp != nil {
			return 0, p.remove(ctx, n, pod)
		}
		return 0, nil
	}

	if pod.DeletionTimestamp != nil {
		if st == nil {
			return 0, p.remove(ctx, n, pod) // never admitted: nothing runs
		}
		if st.proc != nil {
			return p.stopProcessPod(ctx, n, pod, st, now)
		}
		// SIGTERM, then SIGKILL when the (scaled) grace period runs out:
		// the containers exit 143 if they stop in time, 137 if killed; the
		// containers of a node that lost power are gone already.
		if st.stopAt.IsZero() {
			stop, grace := p.stopDuration(pod), p.timing.Grace(gracePeriod(pod))
			st.stopAt, st.killed = now.Add(min(stop, grace)), stop > grace
			if !st.lostAt.IsZero() {
				st.stopAt = now
			}
		}
		if wait := st.stopAt.Sub(now); wait > 0 {
			return wait, nil
		}
		// The kubelet stops the containers and unmounts the pod's volumes
		// before it publishes the terminal phase and removes the pod.
		if err := p.release(ctx, n, st); err != nil {
			return 0, err
		}
		if st.stage == stageRunning {
			end := exitSIGTERM
			switch {
			case !st.lostAt.IsZero():
				end, now = exitLost, st.lostAt
			case st.killed:
				end = exitSIGKILL
			}
			if err := p.writeStatus(ctx, n, pod, terminatedStatus(pod, now, st, end)); err != nil {
				return 0, err
			}
			st.stage = stageDone
		}
		// Containers that never started stay ContainerCreating to the end.
		return 0, p.remove(ctx, n, pod)
	}

	if st == nil {
		volumes, err := p.attachableVolumes(pod)
		if err != nil {
			return time.Second, nil // claim not bound yet: the volume manager waits
		}
		var rejected *rejection
		if st, rejected = p.admit(n, key, pod, volumes, now); rejected != nil {
			n.recorder.Event(pod, corev1.EventTypeWarning, rejected.reason, rejected.message)
			return 0, p.writeStatus(ctx, n, pod, rejectedStatus(pod, rejected))
		}
		if err := p.writeStatus(ctx, n, pod, creatingStatus(pod, n, now)); err != nil {
			p.mu.Lock()
			delete(n.pods, key)
			p.mu.Unlock()
			return 0, err
		}
	}

	if st.stage == stageAdmitted {
		// The volume manager mounts an attachable volume once the node
		// lists it attached and a node status update has reported it in
		// use; both requeue the pod when they change.
		if !p.volumesMounted(n, st) {
			return 0, nil
		}
		if st.readyAt.IsZero() {
			st.readyAt = now.Add(p.timing.ContainerStartDelay)
		}
		if wait := st.readyAt.Sub(now); wait > 0 {
			return wait, nil
		}
		switch {
		case st.ip != "":
		case pod.Spec.HostNetwork && !p.procs.runsProcesses(pod):
			st.ip = n.ip // the host's network: the kubelet reports the node's address
		default:
			st.ip = p.podIP()
		}
		if p.procs.runsProcesses(pod) {
			if st.proc == nil {
				st.proc = newProcPod(p, n, pod, st.ip)
			}
			st.stage, st.started = stageRunning, now
			return p.syncProcessPod(ctx, n, pod, st, now)
		}
		if err := p.writeStatus(ctx, n, pod, runningStatus(pod, n, now, st)); err != nil {
			return 0, err
		}
		st.stage, st.started = stageRunning, now
	}

	if st.stage == stageRunning && st.proc != nil {
		return p.syncProcessPod(ctx, n, pod, st, now)
	}
	if st.stage == stageRunning && !st.lostAt.IsZero() {
		return p.restartLost(ctx, n, pod, st, now)
	}
	if st.stage == stageRunning {
		if !readyCondition(pod) {
			// The node lifecycle controller marks a NotReady node's pods
			// NotReady; once the node is back its kubelet's status manager
			// reports them Ready again.
			if err := p.writeStatus(ctx, n, pod, runningStatus(pod, n, st.started, st)); err != nil {
				return 0, err
			}
		}
		runFor := p.runDuration(pod)
		if runFor <= 0 {
			return 0, nil
		}
		if wait := st.started.Add(runFor).Sub(now); wait > 0 {
			return wait, nil
		}
		// Containers gone first, terminal phase second: the scheduler frees
		// the pod's requests when it sees the phase, and the kubelet must
		// not refuse a pod bound into that room (see release).
		if err := p.release(ctx, n, st); err != nil {
			return 0, err
		}
		if err := p.writeStatus(ctx, n, pod, terminatedStatus(pod, now, st, exitCompleted)); err != nil {
			return 0, err
		}
		st.stage = stageDone
		return 0, nil
	}
	return 0, nil
}

// restartLost handles a running pod whose node lost power: its containers
// died with the instance. containerd, restarting, finds a container that
// was running without its task and records it exited 255, reason Unknown
// (containerd internal/cri/server/restart.go, loadContainer); the kubelet
// then creates a new sandbox ("SandboxChanged") and starts the containers
// again, restart count up, Ready only once they run, unless the restart
// policy is Never, when the pod fails (kubernetes pkg/kubelet/kuberuntime
// computePodActions; pkg/kubelet/kubelet_pods.go getPhase).
func (p *Pool) restartLost(ctx context.Context, n *node, pod *corev1.Pod, st *podState, now time.Time) (time.Duration, error) {
	lost := &corev1.ContainerStateTerminated{
		ExitCode: exitLost.code, Reason: exitLost.reason,
		StartedAt: metav1.NewTime(st.started), FinishedAt: metav1.NewTime(st.lostAt),
	}
	if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
		if err := p.release(ctx, n, st); err != nil {
			return 0, err
		}
		if err := p.writeStatus(ctx, n, pod, terminatedStatus(pod, st.lostAt, st, exitLost)); err != nil {
			return 0, err
		}
		st.stage = stageDone
		return 0, nil
	}
	n.recorder.Event(pod, corev1.EventTypeNormal, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
	status := restartingStatus(pod, n, now, st, lost)
	if err := p.writeStatus(ctx, n, pod, status); err != nil {
		return 0, err
	}
	st.lastTerm, st.lostAt = lost, time.Time{}
	st.stage, st.readyAt = stageAdmitted, now.Add(p.timing.ContainerStartDelay)
	st.restarts++
	return p.timing.ContainerStartDelay, nil
}

// rejection is a kubelet admission failure.
type rejection struct{ reason, message string }

// admit runs the kubelet's admission for pod on n (see admission) and,
// if it passes, records the pod as running there.
func (p *Pool) admit(n *node, key string, pod *corev1.Pod, volumes []string, now time.Time) (*podState, *rejection) {
	requests := resourcehelper.PodRequests(pod, resourcehelper.PodResourcesOptions{})
	// The kubelet admits against the Node from its informer: labels and
	// taints as they are now, and the extended resources it advertises.
	nodeObj, err := p.nodeLister.Get(n.spec.Name)
	if err != nil {
		nodeObj = nodeObject(n.spec, metav1.NewTime(now), n.ip)
	}
	allocatable := n.spec.Allocatable.DeepCopy()
	for r, q := range nodeObj.Status.Allocatable {
		if _, ok := allocatable[r]; !ok && isExtendedResource(r) {
			allocatable[r] = q
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	used := nodeUsage{requested: corev1.ResourceList{}}
	for _, other := range n.pods {
		if other.released {
			continue
		}
		used.pods++
		used.ports = append(used.ports, other.ports...)
		for r, q := range other.requests {
			sum := used.requested[r]
			sum.Add(q)
			used.requested[r] = sum
		}
	}
	if r := admission(pod, nodeObj, allocatable, requests, used); r != nil {
		return nil, r
	}
	st := &podState{uid: pod.UID, requests: requests, volumes: volumes, ports: hostPorts(pod)}
	n.pods[key] = st
	return st, nil
}

// release marks a pod's containers gone and its volumes unmounted. It
// comes before the pod's terminal phase is written, as in the kubelet,
// whose admission stops counting a pod once its worker has terminated it:
// the scheduler frees a pod's requests as soon as it sees a terminal phase
// and may bind another pod into that room at once.
func (p *Pool) release(ctx context.Context, n *node, st *podState) error {
	if st == nil {
		return nil
	}
	p.mu.Lock()
	st.released = true
	p.mu.Unlock()
	return nil // its volumes leave volumesInUse at the next node status update
}

// forget drops the state of a pod that no longer exists.
func (p *Pool) forget(ctx context.Context, key string) error {
	n := p.nodeOfKey(key)
	if n == nil {
		return nil
	}
	p.mu.Lock()
	if !n.powered {
		p.mu.Unlock()
		return nil // a dead kubelet notices nothing; power-on resyncs
	}
	st := n.pods[key]
	delete(n.pods, key)
	p.mu.Unlock()
	if st != nil && st.proc != nil {
		st.proc.powerOff() // the pod was force-deleted: its processes go at once
	}
	return nil
}

// remove deletes the pod object once the kubelet is done with it, as the
// kubelet's status manager does (grace period 0, UID precondition).
func (p *Pool) remove(ctx context.Context, n *node, pod *corev1.Pod) error {
	err := n.client.core.Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: ptr.To(int64(0)),
		Preconditions:      &metav1.Preconditions{UID: &pod.UID},
	})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

func (p *Pool) writeStatus(ctx context.Context, n *node, pod *corev1.Pod, status corev1.PodStatus) error {
	updated := pod.DeepCopy()
	updated.Status = status
	_, err := n.client.core.Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	return err
}

// podIP gives each pod an address of its own from 100.64.0.0/10, unique
// in the cluster as the VPC CNI's are.
func (p *Pool) podIP() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.podIPs++
	i := p.podIPs
	return fmt.Sprintf("100.%d.%d.%d", 64+(i>>16)%64, (i>>8)&255, i&255)
}

// attachableVolumes resolves the pod's claims to the unique volume names
// of those that need attaching: CSI volumes whose driver requires attach
// (a driver without a CSIDriver object does, as in the attach/detach
// controller).
func (p *Pool) attachableVolumes(pod *corev1.Pod) ([]string, error) {
	var out []string
	for _, v := range pod.Spec.Volumes {
		var claimName string
		switch {
		case v.PersistentVolumeClaim != nil:
			claimName = v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			claimName = pod.Name + "-" + v.Name
		default:
			continue
		}
		claim, err := p.claims.PersistentVolumeClaims(pod.Namespace).Get(claimName)
		if err != nil {
			return nil, err
		}
		if claim.Spec.VolumeName == "" {
			return nil, fmt.Errorf("claim %s/%s is not bound", pod.Namespace, claimName)
		}
		pv, err := p.volumes.Get(claim.Spec.VolumeName)
		if err != nil {
			return nil, err
		}
		// CSI migration: an in-tree PV (awsElasticBlockStore) is handled as
		// its CSI driver's volume.
		if translator := csitranslation.New(); translator.IsPVMigratable(pv) {
			if pv, err = translator.TranslateInTreePVToCSI(p.logger, pv.DeepCopy()); err != nil {
				return nil, err
			}
		}
		if pv.Spec.CSI == nil {
			continue
		}
		if d, err := p.csiDrivers.Get(pv.Spec.CSI.Driver); err == nil && d.Spec.AttachRequired != nil && !*d.Spec.AttachRequired {
			continue
		}
		out = append(out, "kubernetes.io/csi/"+pv.Spec.CSI.Driver+"^"+pv.Spec.CSI.VolumeHandle)
	}
	return out, nil
}

// runDuration is how long a pod's containers run before exiting 0; zero
// for pods that run until deleted.
func (p *Pool) runDuration(pod *corev1.Pod) time.Duration {
	if pod.Spec.RestartPolicy == corev1.RestartPolicyAlways {
		return 0
	}
	if v, ok := pod.Annotations[AnnotationRunSeconds]; ok {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
			return max(time.Duration(s*float64(time.Second)), time.Millisecond)
		}
	}
	for _, o := range pod.OwnerReferences {
		if o.Kind == "Job" && o.Controller != nil && *o.Controller {
			return p.timing.JobDuration
		}
	}
	return 0
}

func (p *Pool) stopDuration(pod *corev1.Pod) time.Duration {
	if v, ok := pod.Annotations[AnnotationStopSeconds]; ok {
		if s, err := strconv.ParseFloat(v, 64); err == nil && s >= 0 {
			return time.Duration(s * float64(time.Second))
		}
	}
	return p.timing.ContainerStopDelay
}

func gracePeriod(pod *corev1.Pod) int64 {
	if pod.DeletionGracePeriodSeconds != nil {
		return *pod.DeletionGracePeriodSeconds
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return corev1.DefaultTerminationGracePeriodSeconds
}

// readyCondition reports whether the pod's Ready condition is True.
func readyCondition(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
