package sim

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/huddle-io/huddle/internal/sim/ebs"
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
