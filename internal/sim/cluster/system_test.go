package cluster

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/klog/v2"

	"github.com/huddle-io/huddle/internal/instancetype"
)

// The add-ons' requests per node, summed as the scheduler sums them: the
// figures docs/simulator.md gives and tests subtract from allocatable.
func TestSystemRequests(t *testing.T) {
	got := SystemRequests()
	want := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("180m"),  // aws-node 50m, kube-proxy 100m, ebs-csi-node 30m
		corev1.ResourceMemory: resource.MustParse("104Mi"), // ebs-csi-node 40Mi+32Mi+32Mi
		corev1.ResourcePods:   resource.MustParse("4"),
	}
	for r, q := range want {
		if g := got[r]; g.Cmp(q) != 0 {
			t.Errorf("%s: got %s, want %s", r, g.String(), q.String())
		}
		// kubectl huddle plan subtracts the same from an instance type.
		if p := instancetype.EKSAddOns()[r]; p.Cmp(q) != 0 {
			t.Errorf("%s: instancetype.EKSAddOns says %s, the simulator runs %s", r, p.String(), q.String())
		}
	}
}

// Every DaemonSet tolerates every taint (they run on tainted node groups,
// as on EKS); CoreDNS tolerates only the add-on taints, so a test's pool
// taint keeps it off.
func TestSystemTolerations(t *testing.T) {
	pool := corev1.Taint{Key: "sim.huddle.io/pool", Value: "t", Effect: corev1.TaintEffectNoSchedule}
	for _, ds := range systemDaemonSets() {
		if !tolerates(ds.Spec.Template.Spec.Tolerations, pool) {
			t.Errorf("DaemonSet %s does not tolerate %v", ds.Name, pool)
		}
	}
	dep, _, _ := coreDNS()
	if tolerates(dep.Spec.Template.Spec.Tolerations, pool) {
		t.Errorf("CoreDNS tolerates %v", pool)
	}
	if !tolerates(dep.Spec.Template.Spec.Tolerations, corev1.Taint{Key: "CriticalAddonsOnly", Effect: corev1.TaintEffectNoSchedule}) {
		t.Error("CoreDNS does not tolerate CriticalAddonsOnly")
	}
}

func tolerates(tolerations []corev1.Toleration, taint corev1.Taint) bool {
	for _, tol := range tolerations {
		if tol.ToleratesTaint(klog.Background(), &taint, false) {
			return true
		}
	}
	return false
}
