package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestNodeReportsEKSFigures: a simulated m5.xlarge reports, through the
// API server, what an EKS m5.xlarge reports: capacity 4 CPU and 58 pods
// (eni-max-pods.txt), allocatable 3920m CPU (4 CPU less the EKS AMI's
// kube-reserved 80m) and its memory capacity less 993Mi (kube-reserved
// 11Mi*58+255Mi, plus the 100Mi eviction threshold), and a CSINode whose
// EBS attach limit is the driver's 26. An m7g is an arm64 node.
func TestNodeReportsEKSFigures(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	m5 := env.AddNodes(1, simtest.NodeOptions{})[0]
	m7g := env.AddNodes(1, simtest.NodeOptions{InstanceType: "m7g.large"})[0]

	node, err := env.Client.CoreV1().Nodes().Get(env.Ctx, m5, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	capMem := node.Status.Capacity.Memory().DeepCopy()
	wantAllocMem := capMem.DeepCopy()
	wantAllocMem.Sub(resource.MustParse("993Mi"))
	for _, c := range []struct {
		what      string
		got, want resource.Quantity
	}{
		{"capacity cpu", *node.Status.Capacity.Cpu(), resource.MustParse("4")},
		{"capacity pods", *node.Status.Capacity.Pods(), resource.MustParse("58")},
		{"allocatable cpu", *node.Status.Allocatable.Cpu(), resource.MustParse("3920m")},
		{"allocatable pods", *node.Status.Allocatable.Pods(), resource.MustParse("58")},
		{"allocatable memory", *node.Status.Allocatable.Memory(), wantAllocMem},
	} {
		if c.got.Cmp(c.want) != 0 {
			t.Errorf("m5.xlarge %s = %s, want %s", c.what, c.got.String(), c.want.String())
		}
	}
	// The OS-visible memory of a 16 GiB instance: under 16Gi, over 15Gi
	// (real m5.xlarge nodes report 15896988Ki to 16069020Ki).
	if capMem.Cmp(resource.MustParse("16Gi")) >= 0 || capMem.Cmp(resource.MustParse("15Gi")) <= 0 {
		t.Errorf("m5.xlarge capacity memory %s: want a 16 GiB instance's MemTotal, between 15Gi and 16Gi", capMem.String())
	}
	if node.Labels[corev1.LabelInstanceTypeStable] != "m5.xlarge" || node.Labels[corev1.LabelArchStable] != "amd64" {
		t.Errorf("m5.xlarge labels %v", node.Labels)
	}
	csiNode, err := env.Client.StorageV1().CSINodes().Get(env.Ctx, m5, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := csiNode.Spec.Drivers; len(d) != 1 || d[0].Name != kubelet.EBSDriver || d[0].Allocatable == nil || d[0].Allocatable.Count == nil || *d[0].Allocatable.Count != 26 {
		t.Errorf("CSINode drivers %+v, want %s with allocatable count 26", d, kubelet.EBSDriver)
	}

	arm, err := env.Client.CoreV1().Nodes().Get(env.Ctx, m7g, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if arm.Labels[corev1.LabelArchStable] != "arm64" || arm.Status.NodeInfo.Architecture != "arm64" || arm.Status.Allocatable.Pods().Value() != 29 || arm.Status.Allocatable.Cpu().MilliValue() != 1930 {
		t.Errorf("m7g.large: arch label %q, node info %q, allocatable %v; want arm64, 29 pods, 1930m CPU",
			arm.Labels[corev1.LabelArchStable], arm.Status.NodeInfo.Architecture, arm.Status.Allocatable)
	}
}

// TestAttachLimitRefusesPod: on a node whose CSINode allows one EBS
// volume, a pod whose claim would be a second volume there is refused by
// the real scheduler's NodeVolumeLimits plugin, in its words, and stays
// Pending; once the first pod is gone it is scheduled and runs.
func TestAttachLimitRefusesPod(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{AttachLimit: 1})[0]
	env.Create(env.Claim("first"), env.Pod("first", "first"))
	running(env, "first", node)

	env.Create(env.Claim("second"), env.Pod("second", "second"))
	env.Eventually("the scheduler refuses the second volume", 30*time.Second, func() error {
		for _, msg := range env.Events("second", "FailedScheduling") {
			if strings.Contains(msg, "node(s) exceed max volume count") {
				return nil
			}
		}
		return fmt.Errorf("FailedScheduling events %q", env.Events("second", "FailedScheduling"))
	})
	p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "second", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Spec.NodeName != "" || p.Status.Phase != corev1.PodPending {
		t.Fatalf("second pod on %q, %s: want Pending, unscheduled", p.Spec.NodeName, p.Status.Phase)
	}

	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually("second pod running once the first volume is gone", time.Minute, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "second", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != node || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("second pod on %q is %s", p.Spec.NodeName, p.Status.Phase)
		}
		return nil
	})
}
