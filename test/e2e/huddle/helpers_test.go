package huddle

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	resourcehelper "k8s.io/component-helpers/resource"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// sentry creates the Sentry case: web x2, worker x2, cron, ingest-consumer
// on one claim; 2.35 CPU in all.
func sentry(env *simtest.Env) {
	env.T.Helper()
	env.Create(env.Claim("sentry-data"))
	for _, d := range []struct {
		name     string
		replicas int32
		cpu      string
	}{{"web", 2, "500m"}, {"worker", 2, "500m"}, {"cron", 1, "100m"}, {"ingest-consumer", 1, "250m"}} {
		dep := env.Deployment("sentry-"+d.name, d.replicas, "sentry-data")
		dep.Spec.Template.Labels["app.kubernetes.io/part-of"] = "sentry"
		dep.Spec.Template.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse(d.cpu)
		env.Create(dep)
	}
}

// together waits until n pods of selector run Ready on one node, and
// returns it.
func together(env *simtest.Env, selector string, n int, timeout time.Duration) string {
	env.T.Helper()
	var node string
	env.Eventually(fmt.Sprintf("%d pods %s running together", n, selector), timeout, func() error {
		pods := env.Pods(selector)
		nodes := map[string]int{}
		running := 0
		for _, p := range pods {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("pod %s still terminating", p.Name)
			}
			if p.Status.Phase == corev1.PodRunning {
				running++
			}
			nodes[p.Spec.NodeName]++
		}
		if len(pods) != n || running != n || len(nodes) != 1 {
			return fmt.Errorf("%d pods, %d running, on nodes %v", len(pods), running, nodes)
		}
		for k := range nodes {
			node = k
		}
		return nil
	})
	return node
}

// huddled waits until the claim's Huddle says Huddled at home with n
// members, all ready.
func huddled(env *simtest.Env, claim, home string, n int32) *huddlev1.Huddle {
	env.T.Helper()
	var h *huddlev1.Huddle
	env.Eventually("huddle "+claim+" Huddled", 30*time.Second, func() error {
		var err error
		if h, err = env.Huddle(claim); err != nil {
			return err
		}
		s := h.Status
		if s.Phase != huddlev1.PhaseHuddled || s.Home != home || s.MemberCount != n || s.ReadyCount != n {
			return fmt.Errorf("phase=%s home=%s members=%d ready=%d", s.Phase, s.Home, s.MemberCount, s.ReadyCount)
		}
		return nil
	})
	return h
}

// eventCount counts the namespace's events with reason.
func eventCount(env *simtest.Env, reason string) int {
	env.T.Helper()
	list, err := env.Client.CoreV1().Events(env.Namespace).List(env.Ctx, metav1.ListOptions{})
	if err != nil {
		env.T.Fatal(err)
	}
	n := 0
	for _, e := range list.Items {
		if e.Reason == reason {
			n += max(int(e.Count), 1)
		}
	}
	return n
}

func pinnedHome(p corev1.Pod, home string) bool {
	return strings.HasSuffix(p.Annotations["huddle.io/pinned-by"], "home "+home)
}

func csiDriver(name string, attach bool) *storagev1.CSIDriver {
	return &storagev1.CSIDriver{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: storagev1.CSIDriverSpec{AttachRequired: &attach}}
}

// freeCPU is the CPU of node's allocatable that the requests of the pods
// bound there (in every namespace, not yet finished) leave free, as the
// scheduler counts it.
func freeCPU(env *simtest.Env, node string) resource.Quantity {
	env.T.Helper()
	n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, node, metav1.GetOptions{})
	if err != nil {
		env.T.Fatal(err)
	}
	pods, err := env.Client.CoreV1().Pods("").List(env.Ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		env.T.Fatal(err)
	}
	free := n.Status.Allocatable.Cpu().DeepCopy()
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		free.Sub(resourcehelper.PodRequests(&p, resourcehelper.PodResourcesOptions{})[corev1.ResourceCPU])
	}
	return free
}
