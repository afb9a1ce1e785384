package huddle

import (
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestEdgesEphemeralGenerateName (issue 8, case 8): a Deployment's pods are
// created with generateName, so at admission they have no name and the
// claim of their generic ephemeral volume (<pod>-<volume>) cannot be named.
// The webhook gates them by the volume's template, and huddle places each
// with its claim: every pod carries huddle's pin and its claim a Huddle.
func TestEdgesEphemeralGenerateName(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	env.AddNodes(2, simtest.NodeOptions{})
	dep := env.Deployment("scratch", 2)
	dep.Spec.Template.Spec.Volumes = []corev1.Volume{{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{
		VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		}}}}}}
	dep.Spec.Template.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "scratch", MountPath: "/scratch"}}
	env.Create(dep)
	env.Eventually("both pods running, each placed by huddle with its claim's Huddle", 2*time.Minute, func() error {
		pods := env.Pods("app=scratch")
		if len(pods) != 2 {
			return fmt.Errorf("%d pods", len(pods))
		}
		for _, p := range pods {
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("pod %s %s", p.Name, p.Status.Phase)
			}
			if p.Annotations[placement.AnnotationPinnedBy] == "" {
				return fmt.Errorf("pod %s runs without huddle's pin: it was created ungated", p.Name)
			}
			if _, err := env.Huddle(p.Name + "-scratch"); err != nil {
				return fmt.Errorf("Huddle of claim %s-scratch: %w", p.Name, err)
			}
		}
		return nil
	})
}

// firstSeen records, for every pod of a namespace, whether the first
// version of it this process saw carried huddle's gate.
type firstSeen struct {
	mu      sync.Mutex
	ungated map[string]bool
}

func watchFirstSeen(env *simtest.Env) *firstSeen {
	f := &firstSeen{ungated: map[string]bool{}}
	factory := informers.NewSharedInformerFactoryWithOptions(env.Client, 0, informers.WithNamespace(env.Namespace))
	_, _ = factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(o any) {
		p, ok := o.(*corev1.Pod)
		if !ok {
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		// A pod is seen first when it is created; the placer removes the
		// gate later, with an update.
		if _, seen := f.ungated[p.Name]; !seen {
			f.ungated[p.Name] = !placement.HasGate(p) && p.Annotations[placement.AnnotationPinnedBy] == ""
		}
	}})
	factory.Start(env.Ctx.Done())
	factory.WaitForCacheSync(env.Ctx.Done())
	return f
}

func (f *firstSeen) created() (all int, ungated []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, u := range f.ungated {
		all++
		if u {
			ungated = append(ungated, name)
		}
	}
	return all, ungated
}

// TestEdgesGatedRightAfterStart (issue 8, case 11): the moment huddle-sim
// says huddle is ready, a new pod is gated. huddle is stopped and started
// again (its pods killed, new ones elected and serving), and the Sentry
// huddle is created at once: every member is created gated, exactly one is
// released as the first member, and none is evicted away from home.
// Before, huddle-sim's readiness was read through its own watches (pods
// Ready, endpoints, CA bundle) while the API server's view of them lags,
// and with failurePolicy: Ignore the pods created in between went
// ungated, were scheduled anywhere and evicted.
func TestEdgesGatedRightAfterStart(t *testing.T) {
	// Not parallel: it restarts the cluster's huddle.
	env := simtest.New(t)
	env.AddNodes(3, simtest.NodeOptions{})
	seen := watchFirstSeen(env)
	env.Cluster.StopHuddle(true)
	if err := env.Cluster.StartHuddle(env.Ctx); err != nil {
		t.Fatalf("start huddle: %v", err)
	}
	sentry(env)
	home := together(env, "app.kubernetes.io/part-of=sentry", 6, 2*time.Minute)
	huddled(env, "sentry-data", home, 6)
	all, ungated := seen.created()
	if len(ungated) > 0 {
		t.Errorf("%d of %d pods were created ungated right after huddle was reported ready: %v", len(ungated), all, ungated)
	}
	if n := eventCount(env, placement.ReasonCandidates); n != 1 {
		t.Errorf("%d PinnedCandidates events, want 1 (one first member)", n)
	}
	if n := eventCount(env, "EvictedAwayFromHome"); n != 0 {
		t.Errorf("%d EvictedAwayFromHome events, want 0", n)
	}
}
