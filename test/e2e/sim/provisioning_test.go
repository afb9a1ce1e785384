package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestWaitForFirstConsumerZone: a gp3 claim stays Pending until a pod that
// uses it is scheduled, then its volume is created in that node's zone and
// its PV may only be used there; EBS refuses to attach it in another zone.
func TestWaitForFirstConsumerZone(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	nodes := env.AddNodes(2, simtest.NodeOptions{Zones: []string{"us-east-1a", "us-east-1b"}})
	env.Create(env.Claim("data"))
	env.Never("claim waits for its first consumer", 2*time.Second, func() error {
		if pv, err := env.Volume("data"); err == nil {
			return fmt.Errorf("claim bound to %s before any pod used it", pv.Name)
		}
		return nil
	})

	pod := env.Pod("app", "data")
	pod.Spec.NodeSelector[corev1.LabelTopologyZone] = "us-east-1b"
	env.Create(pod)
	running(env, "app", nodes[1])
	pv, err := env.Volume("data")
	if err != nil {
		t.Fatal(err)
	}
	terms := pv.Spec.NodeAffinity.Required.NodeSelectorTerms
	if len(terms) != 1 || len(terms[0].MatchExpressions) != 1 ||
		terms[0].MatchExpressions[0].Key != corev1.LabelTopologyZone ||
		len(terms[0].MatchExpressions[0].Values) != 1 || terms[0].MatchExpressions[0].Values[0] != "us-east-1b" {
		t.Fatalf("PV node affinity %+v, want %s In [us-east-1b]", terms, corev1.LabelTopologyZone)
	}
	if v, ok := env.Cluster.Cloud.Describe(pv.Spec.CSI.VolumeHandle); !ok || v.Zone != "us-east-1b" {
		t.Fatalf("EBS volume %s in zone %q, want us-east-1b", pv.Spec.CSI.VolumeHandle, v.Zone)
	}
	if got := env.Events("data", "ProvisioningSucceeded"); len(got) != 1 {
		t.Fatalf("want one ProvisioningSucceeded event, got %q", got)
	}

	va := &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "cross-zone-" + env.Namespace},
		Spec: storagev1.VolumeAttachmentSpec{
			Attacher: ebs.DriverName, NodeName: nodes[0],
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To(pv.Name)},
		},
	}
	env.Create(va)
	env.Eventually("EBS refuses a cross-zone attach", 10*time.Second, func() error {
		got, err := env.Client.StorageV1().VolumeAttachments().Get(env.Ctx, va.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got.Status.AttachError == nil || !strings.Contains(got.Status.AttachError.Message, "ZoneMismatch") {
			return fmt.Errorf("attached=%v attachError=%v", got.Status.Attached, got.Status.AttachError)
		}
		return nil
	})
	_ = env.Client.StorageV1().VolumeAttachments().Delete(env.Ctx, va.Name, metav1.DeleteOptions{})
}

// TestKubeletAdmission: a pod bound straight to a node (no scheduler) that
// does not fit the node's allocatable is rejected by the kubelet, Failed
// with OutOfcpu or OutOfmemory and the kubelet's message.
func TestKubeletAdmission(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{CPU: "4", Memory: "16Gi"})[0]

	big := env.Pod("big")
	big.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("3")
	env.Create(big)
	running(env, "big", node)

	// Used counts the add-ons' pods on the node (180m CPU, 104Mi) besides
	// big (3 CPU, 64Mi).
	system := env.SystemRequests()
	usedCPU := 3000 + system.Cpu().MilliValue()
	usedMemory := int64(64<<20) + system.Memory().Value()
	for _, tc := range []struct {
		name, resource, quantity, reason, message string
	}{
		// The kubelet's message says capacity but gives allocatable: 4 CPU
		// less kube-reserved 80m; 16Gi less 11Mi*58+255Mi kube-reserved and
		// the 100Mi eviction threshold.
		{"cpu", "cpu", "2", "OutOfcpu", fmt.Sprintf("Pod was rejected: Node didn't have enough resource: cpu, requested: 2000, used: %d, capacity: 3920", usedCPU)},
		{"memory", "memory", "20Gi", "OutOfmemory", fmt.Sprintf("Pod was rejected: Node didn't have enough resource: memory, requested: 21474836480, used: %d, capacity: 16138633216", usedMemory)},
	} {
		pod := env.Pod("over-" + tc.name)
		pod.Spec.NodeName = node
		pod.Spec.Containers[0].Resources.Requests[corev1.ResourceName(tc.resource)] = resource.MustParse(tc.quantity)
		env.Create(pod)
		env.Eventually(pod.Name+" rejected", 20*time.Second, func() error {
			p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, pod.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != corev1.PodFailed || p.Status.Reason != tc.reason || p.Status.Message != tc.message {
				return fmt.Errorf("phase=%s reason=%q message=%q", p.Status.Phase, p.Status.Reason, p.Status.Message)
			}
			return nil
		})
		if got := env.Events(pod.Name, tc.reason); len(got) == 0 {
			t.Errorf("no %s event for %s", tc.reason, pod.Name)
		}
	}
	// The big pod was not disturbed.
	running(env, "big", node)
}

// TestJobSucceeds: a Job's pod runs for the profile's job duration, exits 0,
// and the Job controller completes the Job.
func TestJobSucceeds(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(1, simtest.NodeOptions{})
	env.Create(env.Claim("data"), env.Job("once", "data"))
	env.Eventually("job complete", 60*time.Second, func() error {
		j, err := env.Client.BatchV1().Jobs(env.Namespace).Get(env.Ctx, "once", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if j.Status.Succeeded != 1 || j.Status.CompletionTime == nil {
			return fmt.Errorf("succeeded=%d", j.Status.Succeeded)
		}
		return nil
	})
	pods := env.Pods("job=once")
	if len(pods) != 1 || pods[0].Status.Phase != corev1.PodSucceeded {
		t.Fatalf("want one Succeeded pod, got %d", len(pods))
	}
}

// TestGracefulTerminationHonoursGrace: a pod whose containers would take
// 100s to exit after SIGTERM is killed when its termination grace period
// (60s, scaled by the profile) runs out, not before and not after.
func TestGracefulTerminationHonoursGrace(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{})[0]
	pod := env.Pod("slow")
	pod.Annotations = map[string]string{kubelet.AnnotationStopSeconds: "100"}
	pod.Spec.TerminationGracePeriodSeconds = ptr.To(int64(60))
	env.Create(pod)
	running(env, "slow", node)

	grace := env.Timing().Grace(60)
	start := time.Now()
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "slow", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually("pod removed", grace+30*time.Second, func() error {
		_, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "slow", metav1.GetOptions{})
		if err == nil {
			return fmt.Errorf("still there")
		}
		return nil
	})
	took := time.Since(start)
	t.Logf("pod removed %s after deletion (scaled grace %s)", took.Round(100*time.Millisecond), grace)
	if took < grace {
		t.Fatalf("pod removed after %s, before its grace period %s ran out", took, grace)
	}
}
