package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"
)

// TestAdmission: the kubelet's admit handlers, with the reasons and
// messages of pkg/kubelet/lifecycle/predicate.go, for pods bound straight
// to a node.
func TestAdmission(t *testing.T) {
	q := resource.MustParse
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{corev1.LabelHostname: "n1", "disk": "ssd"}},
		Spec: corev1.NodeSpec{Taints: []corev1.Taint{
			{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule},
		}},
	}
	allocatable := corev1.ResourceList{"cpu": q("3920m"), "memory": q("14Gi"), "pods": q("58"), "example.com/dongle": q("1")}
	pod := func(edit func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{
			Name:      "app",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{"cpu": q("100m")}},
		}}}}
		if edit != nil {
			edit(p)
		}
		return p
	}
	withPort := func(port int32, ip string) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: port, HostIP: ip}}
		}
	}
	running := nodeUsage{pods: 1, requested: corev1.ResourceList{"cpu": q("3"), "example.com/dongle": q("1")},
		ports: []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080, Protocol: corev1.ProtocolTCP}}}

	for _, tc := range []struct {
		name            string
		pod             *corev1.Pod
		used            nodeUsage
		reason, message string
	}{
		{name: "fits", pod: pod(nil), used: running},
		{name: "nodeSelector", pod: pod(func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{"disk": "hdd"} }),
			reason: "NodeAffinity", message: "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"},
		{name: "required node affinity", pod: pod(func(p *corev1.Pod) {
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
				NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n2"}}}}},
			}}}
		}), reason: "NodeAffinity", message: "Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector"},
		{name: "a NoSchedule taint does not matter to the kubelet", pod: pod(nil)},
		{name: "untolerated NoExecute taint", pod: pod(nil),
			reason: "TaintToleration", message: "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"},
		{name: "tolerated NoExecute taint", pod: pod(func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "evict", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
		})},
		{name: "host port taken", pod: pod(withPort(8080, "")), used: running,
			reason: "NodePorts", message: "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"},
		{name: "host port taken on every IP", pod: pod(withPort(8080, "10.0.0.5")), used: running, reason: "NodePorts"},
		{name: "other host port", pod: pod(withPort(8081, "")), used: running},
		{name: "extended resource used up", pod: pod(func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Requests["example.com/dongle"] = q("1") }), used: running,
			reason: "OutOfexample.com/dongle", message: "Node didn't have enough resource: example.com/dongle, requested: 1, used: 1, capacity: 1"},
		{name: "extended resource the node does not advertise is not checked", pod: pod(func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Requests["example.com/gadget"] = q("4") }), used: running},
		{name: "cpu", pod: pod(func(p *corev1.Pod) { p.Spec.Containers[0].Resources.Requests["cpu"] = q("1") }), used: running,
			reason: "OutOfcpu", message: "Node didn't have enough resource: cpu, requested: 1000, used: 3000, capacity: 3920"},
		{name: "resources come before affinity", pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Resources.Requests["cpu"] = q("1")
			p.Spec.NodeSelector = map[string]string{"disk": "hdd"}
		}), used: running, reason: "OutOfcpu"},
		{name: "pods", pod: pod(nil), used: nodeUsage{pods: 58}, reason: "OutOfpods",
			message: "Node didn't have enough resource: pods, requested: 1, used: 58, capacity: 58"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := node.DeepCopy()
			if tc.name == "untolerated NoExecute taint" || tc.name == "tolerated NoExecute taint" {
				n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: "evict", Effect: corev1.TaintEffectNoExecute})
			}
			requests := resourcehelper.PodRequests(tc.pod, resourcehelper.PodResourcesOptions{})
			r := admission(tc.pod, n, allocatable, requests, tc.used)
			switch {
			case tc.reason == "" && r != nil:
				t.Fatalf("rejected %s: %s, want admitted", r.reason, r.message)
			case tc.reason != "" && r == nil:
				t.Fatalf("admitted, want %s", tc.reason)
			case r != nil && (r.reason != tc.reason || tc.message != "" && r.message != tc.message):
				t.Fatalf("rejected %s: %q, want %s: %q", r.reason, r.message, tc.reason, tc.message)
			}
		})
	}
}
