package sim

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// nodeUpdate is one version of a Node as a watch delivered it.
type nodeUpdate struct {
	at        time.Time
	inUse     []corev1.UniqueVolumeName
	heartbeat metav1.Time
}

// TestVolumeInUseOnNodeStatusCadence: the kubelet reports a pod's volume in
// status.volumesInUse in a node status update (the Ready heartbeat moves in
// the same write, not in a bare patch of volumesInUse), and starts the
// pod's containers only after that update, as the volume manager mounts a
// volume only once it is reported in use. When the pod is gone the volume
// leaves volumesInUse the same way.
func TestVolumeInUseOnNodeStatusCadence(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{})[0]

	var mu sync.Mutex
	var updates []nodeUpdate
	var runningAt time.Time
	nw, err := env.Client.CoreV1().Nodes().Watch(env.Ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + node})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	pw, err := env.Client.CoreV1().Pods(env.Namespace).Watch(env.Ctx, metav1.ListOptions{FieldSelector: "metadata.name=a"})
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Stop()
	go func() {
		for ev := range nw.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			u := nodeUpdate{at: time.Now(), inUse: n.Status.VolumesInUse}
			for _, c := range n.Status.Conditions {
				if c.Type == corev1.NodeReady {
					u.heartbeat = c.LastHeartbeatTime
				}
			}
			mu.Lock()
			updates = append(updates, u)
			mu.Unlock()
		}
	}()
	go func() {
		for ev := range pw.ResultChan() {
			if p, ok := ev.Object.(*corev1.Pod); ok && p.Status.Phase == corev1.PodRunning {
				mu.Lock()
				if runningAt.IsZero() {
					runningAt = time.Now()
				}
				mu.Unlock()
			}
		}
	}()
	// Heartbeats have a resolution of one second: let the registration's
	// go stale, so a status write is told from a bare patch.
	time.Sleep(1100 * time.Millisecond)

	env.Create(env.Claim("data"), env.Pod("a", "data"))
	running(env, "a", node)
	pv, err := env.Volume("data")
	if err != nil {
		t.Fatal(err)
	}
	unique := corev1.UniqueVolumeName("kubernetes.io/csi/" + ebs.DriverName + "^" + pv.Spec.CSI.VolumeHandle)
	// change finds the first update from which the volume is (or is no
	// longer) in use, and checks it was a node status write.
	change := func(inUse bool) (nodeUpdate, error) {
		mu.Lock()
		defer mu.Unlock()
		for i, u := range updates {
			if slices.Contains(u.inUse, unique) != inUse || i == 0 {
				continue
			}
			if prev := updates[i-1]; slices.Contains(prev.inUse, unique) == inUse {
				continue
			} else if !u.heartbeat.After(prev.heartbeat.Time) {
				return u, fmt.Errorf("volumesInUse changed to %v without a node status update: Ready heartbeat still %s", u.inUse, u.heartbeat)
			}
			return u, nil
		}
		return nodeUpdate{}, fmt.Errorf("no node update with %s in use=%v yet", unique, inUse)
	}
	var added nodeUpdate
	env.Eventually("volume reported in use", 10*time.Second, func() error {
		added, err = change(true)
		return err
	})
	mu.Lock()
	started := runningAt
	mu.Unlock()
	if started.IsZero() || !started.After(added.at) {
		t.Fatalf("pod Running (seen %s) before its volume was reported in use (seen %s)", started.Format(time.StampMilli), added.at.Format(time.StampMilli))
	}
	t.Logf("volume reported in use %s before the pod ran (node status every %s)", started.Sub(added.at).Round(time.Millisecond), env.Timing().NodeStatusUpdateFrequency)

	time.Sleep(1100 * time.Millisecond)
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually("volume no longer in use", 20*time.Second, func() error {
		_, err := change(false)
		return err
	})
}

// lastStatus deletes the pod and returns the last status the kubelet wrote
// before the pod object was removed (the object of the watch's Deleted
// event).
func lastStatus(env *simtest.Env, name string) corev1.PodStatus {
	env.T.Helper()
	w, err := env.Client.CoreV1().Pods(env.Namespace).Watch(env.Ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		env.T.Fatal(err)
	}
	defer w.Stop()
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, name, metav1.DeleteOptions{}); err != nil {
		env.T.Fatal(err)
	}
	timeout := time.After(30 * time.Second)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				env.T.Fatalf("watch of %s ended before the pod was removed", name)
			}
			if p, isPod := ev.Object.(*corev1.Pod); isPod && ev.Type == watch.Deleted {
				return p.Status
			}
		case <-timeout:
			env.T.Fatalf("pod %s not removed within 30s", name)
		}
	}
}

// TestDeletedPodExitCodes: a deleted pod ends as on a real node: its
// containers get SIGTERM and exit 143 if they stop within the grace
// period, or are killed when it runs out and exit 137; reason Error, and
// the pod's last status is Failed.
func TestDeletedPodExitCodes(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{})[0]
	quick := env.Pod("quick")
	quick.Annotations = map[string]string{kubelet.AnnotationStopSeconds: "0.1"}
	stubborn := env.Pod("stubborn")
	stubborn.Annotations = map[string]string{kubelet.AnnotationStopSeconds: "100"}
	stubborn.Spec.TerminationGracePeriodSeconds = ptr.To(int64(20))
	env.Create(quick, stubborn)
	running(env, "quick", node)
	running(env, "stubborn", node)

	for _, tc := range []struct {
		name string
		code int32
	}{{"quick", 143}, {"stubborn", 137}} {
		s := lastStatus(env, tc.name)
		if s.Phase != corev1.PodFailed || len(s.ContainerStatuses) != 1 {
			t.Fatalf("%s: last status phase %s with %d container statuses, want Failed", tc.name, s.Phase, len(s.ContainerStatuses))
		}
		term := s.ContainerStatuses[0].State.Terminated
		if term == nil || term.ExitCode != tc.code || term.Reason != "Error" {
			t.Errorf("%s: container state %+v, want terminated %d Error", tc.name, s.ContainerStatuses[0].State, tc.code)
		}
	}
}

// TestKubeletAdmissionRechecks: pods bound straight to a node (no
// scheduler) are admitted by the kubelet only if they pass its predicate
// checks; otherwise they are Failed with its reason and message.
func TestKubeletAdmissionRechecks(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	nodes := env.AddNodes(2, simtest.NodeOptions{})
	first, tainted := nodes[0], nodes[1]

	// A NoExecute taint (the taint manager would evict what does not
	// tolerate it; the kubelet refuses to start it) and an extended
	// resource advertised as the Kubernetes docs do, in node status.
	n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, tainted, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoExecute})
	if _, err := env.Client.CoreV1().Nodes().Update(env.Ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	patch := []byte(`{"status":{"capacity":{"example.com/dongle":"1"},"allocatable":{"example.com/dongle":"1"}}}`)
	if _, err := env.Client.CoreV1().Nodes().Patch(env.Ctx, first, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the kubelet's informer sees both

	bound := func(name, node string, edit func(*corev1.Pod)) *corev1.Pod {
		p := env.Pod(name)
		p.Spec.NodeName = node
		if edit != nil {
			edit(p)
		}
		return p
	}
	hostPort := func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
	}
	dongles := func(n string) func(*corev1.Pod) {
		return func(p *corev1.Pod) { extended(p, "example.com/dongle", n) }
	}
	env.Create(bound("port-a", first, hostPort), bound("dongle-a", first, dongles("1")))
	running(env, "port-a", first)
	running(env, "dongle-a", first)

	for _, tc := range []struct {
		pod             *corev1.Pod
		reason, message string
	}{
		{bound("selector", first, func(p *corev1.Pod) { p.Spec.NodeSelector["disk"] = "ssd" }),
			"NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"},
		{bound("untolerated", tainted, nil),
			"TaintToleration", "Pod was rejected: Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"},
		{bound("port-b", first, hostPort),
			"NodePorts", "Pod was rejected: Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"},
		{bound("dongle-b", first, dongles("1")),
			"OutOfexample.com/dongle", "Pod was rejected: Node didn't have enough resource: example.com/dongle, requested: 1, used: 1, capacity: 1"},
	} {
		// Watched, not polled: the taint manager deletes a pod that does
		// not tolerate a NoExecute taint, possibly right after the kubelet
		// rejected it.
		w, err := env.Client.CoreV1().Pods(env.Namespace).Watch(env.Ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + tc.pod.Name})
		if err != nil {
			t.Fatal(err)
		}
		env.Create(tc.pod)
		var seen corev1.PodStatus
		timeout := time.After(20 * time.Second)
	wait:
		for {
			select {
			case ev := <-w.ResultChan():
				if p, ok := ev.Object.(*corev1.Pod); ok {
					seen = p.Status
					if seen.Phase == corev1.PodFailed {
						break wait
					}
				}
			case <-timeout:
				break wait
			}
		}
		w.Stop()
		if seen.Phase != corev1.PodFailed || seen.Reason != tc.reason || seen.Message != tc.message {
			t.Fatalf("%s: phase=%s reason=%q message=%q; want Failed, %s: %q", tc.pod.Name, seen.Phase, seen.Reason, seen.Message, tc.reason, tc.message)
		}
		if len(env.Events(tc.pod.Name, tc.reason)) == 0 {
			t.Errorf("no %s event for %s", tc.reason, tc.pod.Name)
		}
	}
	// Tolerating the taint, or asking for an extended resource the node
	// does not advertise (the kubelet drops such requests), is admitted.
	env.Create(bound("tolerant", tainted, func(p *corev1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "db", Effect: corev1.TaintEffectNoExecute})
	}), bound("gadget", first, func(p *corev1.Pod) {
		extended(p, "example.com/gadget", "1")
	}))
	running(env, "tolerant", tainted)
	running(env, "gadget", first)
}

// extended makes the pod's container ask for an extended resource, whose
// limit the API server wants equal to the request.
func extended(p *corev1.Pod, name corev1.ResourceName, n string) {
	c := &p.Spec.Containers[0]
	c.Resources.Requests[name] = resource.MustParse(n)
	if c.Resources.Limits == nil {
		c.Resources.Limits = corev1.ResourceList{}
	}
	c.Resources.Limits[name] = resource.MustParse(n)
}
