// Package sim holds the simulator's acceptance scenarios: each runs against
// the real control plane (etcd, kube-apiserver, kube-controller-manager,
// kube-scheduler) with simulated kubelets and EBS, under the stock
// scheduler, and asserts the behaviour users meet on EKS.
package sim

import (
	"os"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// systemNodes are a node group for add-ons only, as EKS clusters often
// have one: tainted CriticalAddonsOnly, which CoreDNS tolerates and the
// tests' pods do not. Every test's pods go to its own pool.
var systemNodes = []kubelet.NodeSpec{
	{Name: "system-0", Zone: "us-east-1a", Taints: []corev1.Taint{criticalAddonsOnly}},
	{Name: "system-1", Zone: "us-east-1b", Taints: []corev1.Taint{criticalAddonsOnly}},
}

var criticalAddonsOnly = corev1.Taint{Key: "CriticalAddonsOnly", Value: "true", Effect: corev1.TaintEffectNoSchedule}

func TestMain(m *testing.M) { os.Exit(simtest.Main(m, simtest.Options{Nodes: systemNodes})) }
