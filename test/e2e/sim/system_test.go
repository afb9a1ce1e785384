package sim

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// systemDaemonSets are the DaemonSets of a fresh EKS cluster with the EBS
// CSI driver add-on.
var systemDaemonSets = []string{"aws-node", "kube-proxy", "ebs-csi-node", "eks-pod-identity-agent"}

// TestSystemPodsOnEveryNode: every node runs a Ready pod of each EKS
// DaemonSet, those registered at boot and those added later, pool nodes
// tainted for one test included (the DaemonSets tolerate every taint, as
// on EKS), at system-node-critical priority; hostNetwork pods have the
// node's address. CoreDNS has 2 Ready replicas, on the add-on nodes (its
// tolerations keep it off the pools), one per node.
func TestSystemPodsOnEveryNode(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	first := env.AddNodes(1, simtest.NodeOptions{})
	later := env.AddNodes(2, simtest.NodeOptions{InstanceType: "m7g.large"})
	nodes := append([]string{systemNodes[0].Name, systemNodes[1].Name}, append(first, later...)...)

	env.Eventually("a Ready pod of every DaemonSet on every node", time.Minute, func() error {
		for _, node := range nodes {
			n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, node, metav1.GetOptions{})
			if err != nil {
				return err
			}
			pods, err := env.Client.CoreV1().Pods("kube-system").List(env.Ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
			if err != nil {
				return err
			}
			ready := map[string]bool{}
			for _, p := range pods.Items {
				owner := metav1.GetControllerOf(&p)
				if owner == nil || owner.Kind != "DaemonSet" || p.Status.Phase != corev1.PodRunning || !podReady(&p) {
					continue
				}
				if p.Spec.Priority == nil || *p.Spec.Priority != 2000001000 {
					return fmt.Errorf("pod %s has priority %v, want system-node-critical's 2000001000", p.Name, p.Spec.Priority)
				}
				if p.Spec.HostNetwork && p.Status.PodIP != n.Status.Addresses[0].Address {
					return fmt.Errorf("hostNetwork pod %s has IP %s, want its node's %s", p.Name, p.Status.PodIP, n.Status.Addresses[0].Address)
				}
				ready[owner.Name] = true
			}
			for _, ds := range systemDaemonSets {
				if !ready[ds] {
					return fmt.Errorf("no Ready %s pod on %s", ds, node)
				}
			}
		}
		return nil
	})

	env.Eventually("CoreDNS: 2 Ready replicas on the add-on nodes", time.Minute, func() error {
		pods, err := env.Client.CoreV1().Pods("kube-system").List(env.Ctx, metav1.ListOptions{LabelSelector: "k8s-app=kube-dns"})
		if err != nil {
			return err
		}
		on := map[string]bool{}
		for _, p := range pods.Items {
			if p.Status.Phase != corev1.PodRunning || !podReady(&p) {
				return fmt.Errorf("coredns pod %s on %q is %s", p.Name, p.Spec.NodeName, p.Status.Phase)
			}
			if !strings.HasPrefix(p.Spec.NodeName, "system-") {
				return fmt.Errorf("coredns pod %s on %s, not an add-on node", p.Name, p.Spec.NodeName)
			}
			on[p.Spec.NodeName] = true
		}
		if len(pods.Items) != 2 || len(on) != 2 {
			return fmt.Errorf("%d coredns pods on %d nodes, want 2 on 2", len(pods.Items), len(on))
		}
		return nil
	})
	pdb, err := env.Client.PolicyV1().PodDisruptionBudgets("kube-system").Get(env.Ctx, "coredns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("coredns PodDisruptionBudget maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}
	if _, err := env.Client.CoreV1().Services("kube-system").Get(env.Ctx, "kube-dns", metav1.GetOptions{}); err != nil {
		t.Errorf("kube-dns Service: %v", err)
	}
}

// TestSystemPodsLeaveRoom: what an m5.xlarge offers a workload is its
// allocatable (3920m CPU, 58 pods) less the DaemonSets' requests (aws-node
// 50m, kube-proxy 100m, ebs-csi-node 30m and 104Mi,
// eks-pod-identity-agent none: 180m, 104Mi, 4 pods). The real scheduler
// agrees: a pod requesting the remaining CPU plus 1m is Unschedulable for
// Insufficient cpu, one requesting exactly the remaining CPU runs.
func TestSystemPodsLeaveRoom(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{})[0]
	room := env.Room(node)
	for _, c := range []struct {
		what      string
		got, want resource.Quantity
	}{
		{"cpu", room[corev1.ResourceCPU], resource.MustParse("3740m")},
		{"pods", room[corev1.ResourcePods], resource.MustParse("54")},
	} {
		if c.got.Cmp(c.want) != 0 {
			t.Errorf("room on an m5.xlarge: %s %s, want %s", c.what, c.got.String(), c.want.String())
		}
	}

	over := env.Pod("over")
	cpu := room[corev1.ResourceCPU].DeepCopy()
	cpu.Add(resource.MustParse("1m"))
	over.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = cpu
	env.Create(over)
	env.Eventually("over Unschedulable for Insufficient cpu", 30*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, "over", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonUnschedulable && strings.Contains(c.Message, "Insufficient cpu") {
				return nil
			}
		}
		return fmt.Errorf("over on %q: %+v", p.Spec.NodeName, p.Status.Conditions)
	})
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "over", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	exact := env.Pod("exact")
	exact.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = room[corev1.ResourceCPU]
	env.Create(exact)
	running(env, "exact", node)
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
