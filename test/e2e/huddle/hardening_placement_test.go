package huddle

import (
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestStatefulSetClaimDemandsOnePod: each claim a StatefulSet's
// volumeClaimTemplates make (data-web-0, data-web-1, ...) is mounted by one
// pod, so its huddle demands that pod's requests, not every replica's: on
// 4-CPU nodes, 6 replicas of 1 CPU each fit, and no Huddle says Fits=False
// (before, each claim demanded 6 CPU).
func TestStatefulSetClaimDemandsOnePod(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{CPU: "4"})
	labels := map[string]string{"app": "web"}
	spec := env.PodSpec()
	spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("1")
	spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	tmpl := env.Claim("data")
	tmpl.Namespace = ""
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: env.Namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas:             ptr.To[int32](6),
			PodManagementPolicy:  appsv1.ParallelPodManagement,
			Selector:             &metav1.LabelSelector{MatchLabels: labels},
			Template:             corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{*tmpl},
		},
	}
	env.Create(sts)
	env.Eventually("6 replicas running", 2*time.Minute, func() error {
		running := 0
		for _, p := range env.Pods("app=web") {
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
		}
		if running != 6 {
			return fmt.Errorf("%d of 6 running", running)
		}
		return nil
	})
	env.Eventually("every Huddle demands one pod and fits", time.Minute, func() error {
		for i := range 6 {
			claim := fmt.Sprintf("data-web-%d", i)
			h, err := env.Huddle(claim)
			if err != nil {
				return err
			}
			cpu := h.Status.Demand[corev1.ResourceCPU]
			if cpu.Cmp(resource.MustParse("1")) != 0 {
				return fmt.Errorf("%s demands %s CPU, want 1", claim, cpu.String())
			}
			if c := meta.FindStatusCondition(h.Status.Conditions, huddlev1.ConditionFits); c == nil || c.Status != metav1.ConditionTrue {
				return fmt.Errorf("%s Fits=%+v", claim, c)
			}
		}
		return nil
	})
	if n := eventCount(env, "NoNodeFitsHuddle"); n > 0 {
		t.Fatalf("%d NoNodeFitsHuddle events; every claim fits on any node", n)
	}
}
