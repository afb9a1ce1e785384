package kubelet

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestNodeSpecResolve: a node reports its instance type's capacity and
// allocatable; overrides of the machine re-derive allocatable; figures
// from a manifest are kept as they are.
func TestNodeSpecResolve(t *testing.T) {
	q := resource.MustParse
	for _, tc := range []struct {
		name                  string
		spec                  NodeSpec
		capacity, allocatable map[corev1.ResourceName]string
		attachLimit           int32
		arch                  string
	}{
		{
			name:        "default m5.xlarge",
			spec:        NodeSpec{Name: "n"},
			capacity:    map[corev1.ResourceName]string{"cpu": "4", "memory": "16052698Ki", "pods": "58", "ephemeral-storage": "80Gi"},
			allocatable: map[corev1.ResourceName]string{"cpu": "3920m", "memory": "15035866Ki", "pods": "58", "ephemeral-storage": "71Gi"},
			attachLimit: 26, arch: "amd64",
		},
		{
			name:        "m7g is arm64",
			spec:        NodeSpec{Name: "n", InstanceType: "m7g.large"},
			capacity:    map[corev1.ResourceName]string{"cpu": "2", "pods": "29"},
			allocatable: map[corev1.ResourceName]string{"cpu": "1930m", "pods": "29"},
			attachLimit: 26, arch: "arm64",
		},
		{
			// 16Gi - (11*58+255)Mi - 100Mi.
			name:        "cpu and memory overrides re-derive allocatable",
			spec:        NodeSpec{Name: "n", CPU: q("8"), Memory: q("16Gi")},
			capacity:    map[corev1.ResourceName]string{"cpu": "8", "memory": "16Gi", "pods": "58"},
			allocatable: map[corev1.ResourceName]string{"cpu": "7910m", "memory": "15391Mi", "pods": "58"},
			attachLimit: 26, arch: "amd64",
		},
		{
			// 16052698Ki - (11*250+255+100)Mi.
			name:        "pods override moves the memory reservation",
			spec:        NodeSpec{Name: "n", Pods: 250, AttachLimit: 2},
			capacity:    map[corev1.ResourceName]string{"pods": "250"},
			allocatable: map[corev1.ResourceName]string{"memory": "12873178Ki", "pods": "250"},
			attachLimit: 2, arch: "amd64",
		},
		{
			name: "a manifest's figures are kept",
			spec: NodeSpec{Name: "n", InstanceType: "m5.24xlarge",
				Capacity:    corev1.ResourceList{"cpu": q("96"), "memory": q("384Gi")},
				Allocatable: corev1.ResourceList{"memory": q("380Gi")},
				Labels:      map[string]string{corev1.LabelArchStable: "arm64"}},
			capacity:    map[corev1.ResourceName]string{"cpu": "96", "memory": "384Gi", "pods": "110"},
			allocatable: map[corev1.ResourceName]string{"cpu": "96", "memory": "380Gi", "pods": "110"},
			attachLimit: 26, arch: "arm64",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			if err := s.resolve(); err != nil {
				t.Fatal(err)
			}
			for _, side := range []struct {
				what string
				got  corev1.ResourceList
				want map[corev1.ResourceName]string
			}{{"capacity", s.Capacity, tc.capacity}, {"allocatable", s.Allocatable, tc.allocatable}} {
				for r, w := range side.want {
					if got := side.got[r]; got.Cmp(q(w)) != 0 {
						t.Errorf("%s %s = %s, want %s", side.what, r, got.String(), w)
					}
				}
			}
			if s.AttachLimit != tc.attachLimit {
				t.Errorf("attach limit %d, want %d", s.AttachLimit, tc.attachLimit)
			}
			node := nodeObject(s, metav1.Now(), "10.0.0.1")
			if node.Labels[corev1.LabelArchStable] != tc.arch || node.Status.NodeInfo.Architecture != tc.arch {
				t.Errorf("arch label %q, node info %q; want %s", node.Labels[corev1.LabelArchStable], node.Status.NodeInfo.Architecture, tc.arch)
			}
			if !equalLists(node.Status.Capacity, s.Capacity) || !equalLists(node.Status.Allocatable, s.Allocatable) {
				t.Errorf("Node reports capacity %v allocatable %v, want the resolved %v and %v", node.Status.Capacity, node.Status.Allocatable, s.Capacity, s.Allocatable)
			}
		})
	}
}

func equalLists(a, b corev1.ResourceList) bool {
	if len(a) != len(b) {
		return false
	}
	for r, q := range a {
		if q.Cmp(b[r]) != 0 {
			return false
		}
	}
	return true
}

func TestNodeSpecUnknownTypeWithoutSize(t *testing.T) {
	err := NodeSpec{Name: "n", InstanceType: "x9.huge"}.Check()
	if err == nil || !strings.Contains(err.Error(), `unknown instance type "x9.huge"`) || !strings.Contains(err.Error(), "m5.xlarge") || !strings.Contains(err.Error(), "give the node's cpu and memory") {
		t.Fatalf("error %v: want it to name the type, list the known ones and say what else works", err)
	}
}
