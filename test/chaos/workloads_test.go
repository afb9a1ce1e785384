package chaos

import (
	"fmt"
	"math/rand/v2"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// world is what a run created: the workloads whose replicas must all run
// again once the faults stop.
type world struct {
	deployments  []string
	statefulSets []string
	bare         []string
	// claims are the shared claims of Deployments (jobs and fills pick
	// from them); movable have spec.move: WhenStuck.
	claims  []string
	movable []string
	jobs    int
}

// createWorkloads creates one group of workloads per -groups, sized from
// rng: Deployments of 1–6 replicas (one of them a one-replica
// RollingUpdate), PodDisruptionBudgets, a huddle allowed to move, a
// Deployment whose pods mount two shared claims, a StatefulSet with a
// claim per pod, a Job and a bare pod.
func createWorkloads(env *simtest.Env, rng *rand.Rand, groups int) *world {
	w := &world{}
	for g := range groups {
		claim := func(k int) string { return fmt.Sprintf("d%d-%d", g, k) }
		// Moves: the fill fault crowds this huddle's home. Its Huddle comes
		// first: huddle creates one with the defaults for a new claim.
		moving := &huddlev1.Huddle{
			ObjectMeta: metav1.ObjectMeta{Name: claim(4), Namespace: env.Namespace},
			Spec:       huddlev1.HuddleSpec{Move: huddlev1.MoveWhenStuck, MoveAfter: &metav1.Duration{Duration: 5 * time.Second}},
		}
		if err := env.Typed.Create(env.Ctx, moving); err != nil {
			env.T.Fatalf("create Huddle %s: %v", claim(4), err)
		}
		w.movable = append(w.movable, claim(4))
		for k := range 5 {
			env.Create(env.Claim(claim(k)))
			w.claims = append(w.claims, claim(k))
		}
		replicas := []int32{1, 1, 2 + rng.Int32N(5), 1 + rng.Int32N(6), 1 + rng.Int32N(2)}
		for k, n := range replicas {
			name := fmt.Sprintf("a%d-%d", g, k)
			dep := env.Deployment(name, n, claim(k))
			if k == 4 {
				dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("500m")
			}
			env.Create(dep)
			w.deployments = append(w.deployments, name)
			// Not on the moving huddle (k == 4): a move must evict every
			// member before any replacement can be Ready (the volume is
			// still at the old home), which such a budget never allows,
			// so huddle refuses the move (MoveBlocked; e2e
			// TestMoveRespectsDisruptionBudget) and the fill fault's
			// members would wait for the filler to go.
			if k == 2 {
				pdb(env, name, intstr.FromInt32(1))
			}
		}
		// Two claims: d<g>-0 (also the one-replica Deployment's) and
		// x<g>, which only these pods mount.
		x := fmt.Sprintf("x%d", g)
		env.Create(env.Claim(x))
		two := fmt.Sprintf("two%d", g)
		env.Create(env.Deployment(two, 2, claim(0), x))
		w.deployments = append(w.deployments, two)

		sts := fmt.Sprintf("s%d", g)
		env.Create(statefulSet(env, sts, 2))
		w.statefulSets = append(w.statefulSets, sts)

		env.Create(job(env, fmt.Sprintf("j%d-%d", g, w.jobs), claim(2)))
		w.jobs++

		bare := fmt.Sprintf("b%d", g)
		env.Create(env.Pod(bare, claim(3)))
		w.bare = append(w.bare, bare)
	}
	return w
}

// isMovable: name is the Deployment of a huddle allowed to move.
func (w *world) isMovable(name string) bool {
	for _, claim := range w.movable {
		if name == "a"+claim[1:] {
			return true
		}
	}
	return false
}

// pdb creates a PodDisruptionBudget allowing maxUnavailable of app=name.
func pdb(env *simtest.Env, name string, maxUnavailable intstr.IntOrString) {
	b := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: env.Namespace},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable: &maxUnavailable,
			Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
		},
	}
	if _, err := env.Client.PolicyV1().PodDisruptionBudgets(env.Namespace).Create(env.Ctx, b, metav1.CreateOptions{}); err != nil {
		env.T.Fatalf("create PodDisruptionBudget %s: %v", name, err)
	}
}

// statefulSet builds a StatefulSet whose pods each mount their own claim
// data-<name>-<i> (volumeClaimTemplates): one single-member huddle each.
func statefulSet(env *simtest.Env, name string, replicas int32) *appsv1.StatefulSet {
	labels := map[string]string{"app": name}
	spec := env.PodSpec()
	spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}
	return &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: env.Namespace},
		Spec: appsv1.StatefulSetSpec{
			Replicas:            ptr.To(replicas),
			ServiceName:         name,
			PodManagementPolicy: appsv1.ParallelPodManagement,
			Selector:            &metav1.LabelSelector{MatchLabels: labels},
			Template:            corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{
				ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec:       env.Claim("data").Spec,
			}},
		},
	}
}

// job builds a one-pod Job on claim, removed 20 s after it finishes.
func job(env *simtest.Env, name, claim string) *batchv1.Job {
	j := env.Job(name, claim)
	j.Spec.TTLSecondsAfterFinished = ptr.To(int32(20))
	j.Spec.BackoffLimit = ptr.To(int32(6))
	return j
}
