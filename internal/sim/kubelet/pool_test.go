package kubelet

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// The pods that run processes are synced from a queue of their own, so
// that a crashed huddle replica is restarted whatever the simulated pods
// of thousands of other nodes wait for; a key stays in its queue even
// when its pod is gone, so no two workers ever sync one pod.
func TestProcessPodsHaveTheirOwnQueue(t *testing.T) {
	p := &Pool{
		queue: newPodQueue("test"), procQueue: newPodQueue("test-processes"),
		nodes:    map[string]*node{"n1": {}},
		procKeys: map[string]bool{},
		syncing:  map[string]bool{},
		procs:    &Processes{Images: map[string]Image{"ghcr.io/huddle-io/huddle": {Binary: "/bin/huddle"}}},
	}
	defer p.queue.ShutDown()
	defer p.procQueue.ShutDown()
	pod := func(name, image string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
			Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "c", Image: image}}}}
	}
	huddle := pod("huddle", "ghcr.io/huddle-io/huddle:0.1.0")
	for range 3 {
		p.onPod(pod("web", "nginx:1.27"))
		p.onPod(huddle)
	}
	elsewhere := pod("elsewhere", "ghcr.io/huddle-io/huddle:0.1.0")
	elsewhere.Spec.NodeName = "n2" // another pool's node
	p.onPod(elsewhere)
	if got := p.procQueue.Len(); got != 1 {
		t.Errorf("the process queue holds %d keys, want the huddle pod's", got)
	}
	if got := p.queue.Len(); got != 1 {
		t.Errorf("the queue of simulated pods holds %d keys, want web's", got)
	}
	p.enqueue("ns/huddle") // as its process's exit does
	p.onPod(cache.DeletedFinalStateUnknown{Key: "ns/huddle", Obj: huddle})
	if p.procQueue.Len() != 1 || p.queue.Len() != 1 {
		t.Errorf("an exit or the deletion of the huddle pod queued it with the simulated pods: %d / %d", p.procQueue.Len(), p.queue.Len())
	}
}

// A process pod's key that reached the shared queue first (a node powered
// on enqueues what it lists before onPod has seen the pod) is handed to
// the process queue, not synced there.
func TestProcessPodKeyLeavesTheSharedQueue(t *testing.T) {
	p := &Pool{queue: newPodQueue("test"), procQueue: newPodQueue("test-processes"),
		procKeys: map[string]bool{"ns/huddle": true}, syncing: map[string]bool{}}
	defer p.procQueue.ShutDown()
	p.queue.Add("ns/huddle")
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.worker(context.Background(), p.queue) // syncPod would panic: the pool has no listers
	}()
	deadline := time.Now().Add(5 * time.Second)
	for p.procQueue.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	p.queue.ShutDown()
	<-done
	if p.procQueue.Len() != 1 || p.queue.Len() != 0 {
		t.Errorf("process queue %d, shared queue %d: want the key handed over", p.procQueue.Len(), p.queue.Len())
	}
}
