package sim

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestTerminatedInstance follows an instance terminated the way an Auto
// Scaling group or Karpenter terminates one: the kubelet is gone at once;
// EC2 detaches the volume once the instance is terminated, while the
// VolumeAttachment stays (nothing tells Kubernetes); the node goes NotReady
// and the cloud node lifecycle controller deletes its Node; the pod
// garbage collector then deletes the pods bound to the missing node, the
// attach/detach controller lets go of the volume, and the Deployment's
// replacement pod attaches the claim on the other node.
func TestTerminatedInstance(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(2, simtest.NodeOptions{Zone: "us-east-1a"})
	env.Create(env.Claim("data"), env.Deployment("app", 1, "data"))
	old := waitPods(env, "app=app", 1)[0]
	dead := old.Spec.NodeName
	running(env, old.Name, dead)
	pv, err := env.Volume("data")
	if err != nil {
		t.Fatal(err)
	}
	volumeID := pv.Spec.CSI.VolumeHandle
	tm := env.Timing()

	start := time.Now()
	env.Annotate(dead, kubelet.AnnotationTerminate, "true")
	env.Eventually("EC2 detaches the volume when the instance is terminated", tm.InstanceTerminateDelay+10*time.Second, func() error {
		if s := env.Cluster.Cloud.InstanceState(dead); s != ebs.Terminated {
			return fmt.Errorf("instance %s", s)
		}
		if v, _ := env.Cluster.Cloud.Describe(volumeID); v.State != ebs.Available {
			return fmt.Errorf("volume %s %s on %q", volumeID, v.State, v.Instance)
		}
		return nil
	})
	if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{dead}) {
		t.Fatalf("after EC2 detached the volume, VolumeAttachments say attached to %v; want the dead node's left as it was, [%s]", got, dead)
	}

	// The Node goes only once it is NotReady: node monitor grace, then the
	// lifecycle controller's next check.
	env.Eventually("the cloud node lifecycle controller deletes the Node", tm.NodeMonitorGracePeriod+tm.CloudNodeMonitorPeriod+30*time.Second, func() error {
		_, err := env.Client.CoreV1().Nodes().Get(env.Ctx, dead, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("node %s still there (%v)", dead, err)
	})
	took := time.Since(start)
	t.Logf("Node deleted %s after the instance was terminated (node monitor grace %s, cloud node monitor period %s)", took.Round(100*time.Millisecond), tm.NodeMonitorGracePeriod, tm.CloudNodeMonitorPeriod)
	// The last heartbeat may have come up to a lease renewal interval
	// before the termination.
	if earliest := tm.NodeMonitorGracePeriod - tm.LeaseRenewInterval; took < earliest {
		t.Fatalf("Node deleted after %s, before the node monitor grace period (%s after the last heartbeat) made it NotReady", took, tm.NodeMonitorGracePeriod)
	}
	if msgs := env.EventsIn("default", dead, "DeletingNode"); len(msgs) == 0 {
		t.Errorf("no DeletingNode event from the cloud node lifecycle controller for %s", dead)
	}

	// PodGC deletes pods bound to a node that is gone after a 40 s
	// quarantine (its gcCheckPeriod is 20 s).
	env.Eventually("the dead node's pods are garbage-collected", 2*time.Minute, func() error {
		for _, p := range env.Pods("") {
			if p.Spec.NodeName == dead {
				return fmt.Errorf("pod %s still bound to %s", p.Name, dead)
			}
		}
		return nil
	})
	var replacement corev1.Pod
	env.Eventually("the replacement runs on the other node with the claim attached there", 2*time.Minute, func() error {
		pods := env.Pods("app=app")
		if len(pods) != 1 {
			return fmt.Errorf("%d pods", len(pods))
		}
		replacement = pods[0]
		if replacement.Spec.NodeName == "" || replacement.Spec.NodeName == dead || replacement.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod %s on %q is %s", replacement.Name, replacement.Spec.NodeName, replacement.Status.Phase)
		}
		if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{replacement.Spec.NodeName}) {
			return fmt.Errorf("volume attached to %v", got)
		}
		return nil
	})
	if v, _ := env.Cluster.Cloud.Describe(volumeID); v.State != ebs.InUse || v.Instance != replacement.Spec.NodeName {
		t.Fatalf("EBS volume %s on %q, want in-use on %s", v.State, v.Instance, replacement.Spec.NodeName)
	}
	t.Logf("replacement %s Running on %s %s after the termination", replacement.Name, replacement.Spec.NodeName, time.Since(start).Round(100*time.Millisecond))
}
