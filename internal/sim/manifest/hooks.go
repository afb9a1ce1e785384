package manifest

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
)

// The annotations of a Helm hook, as `helm template` prints them
// (https://helm.sh/docs/topics/charts_hooks/).
const (
	annotationHook       = "helm.sh/hook"
	annotationHookWeight = "helm.sh/hook-weight"
	annotationHookDelete = "helm.sh/hook-delete-policy"
)

// byHookPhase splits objs as helm install runs them: pre-install hooks,
// the release, post-install hooks (hooks sorted as Helm sorts them: by
// weight, then name, kind mattering only between hooks of one name, as
// Helm sorts by kind first and stably by weight and name after; helm v4
// pkg/action/hooks.go), and explanations for the hooks install does not
// run (tests, upgrade and delete hooks).
func byHookPhase(objs []Object) (pre, release, post []Object, skipped []string) {
	for _, o := range objs {
		value, ok := o.GetAnnotations()[annotationHook]
		if !ok {
			release = append(release, o)
			continue
		}
		events := strings.Split(strings.ToLower(strings.ReplaceAll(value, " ", "")), ",")
		switch {
		case slices.Contains(events, "pre-install"):
			pre = append(pre, o)
		case slices.Contains(events, "post-install"):
			post = append(post, o)
		case slices.Contains(events, "test") || slices.Contains(events, "test-success"):
			skipped = append(skipped, fmt.Sprintf("%s: %s %s skipped: a Helm test hook, which helm test runs, not helm install", o.Source, o.GetKind(), o.GetName()))
		default:
			skipped = append(skipped, fmt.Sprintf("%s: %s %s skipped: a Helm hook for %s, which helm install does not run", o.Source, o.GetKind(), o.GetName(), value))
		}
	}
	for _, hooks := range [][]Object{pre, post} {
		sort.SliceStable(hooks, func(i, j int) bool {
			wi, wj := hookWeight(hooks[i]), hookWeight(hooks[j])
			if wi != wj {
				return wi < wj
			}
			if ni, nj := hooks[i].GetName(), hooks[j].GetName(); ni != nj {
				return ni < nj
			}
			return rank(hooks[i].GetKind()) < rank(hooks[j].GetKind())
		})
	}
	return pre, release, post, skipped
}

// hookWeight is the hook's helm.sh/hook-weight (0 if unset or not a
// number, as Helm reads it).
func hookWeight(o Object) int {
	w, _ := strconv.Atoi(strings.TrimSpace(o.GetAnnotations()[annotationHookWeight]))
	return w
}

// hook applies a hook and, for a Job or a Pod, waits as Helm does until
// it has succeeded; then it deletes it if its delete policy says so. A hook
// that fails or does not finish within the hook timeout is listed with the
// refusals: helm install would stop there. The rest is still applied, so
// that the report shows where everything lands.
func (a *applier) hook(ctx context.Context, o Object) error {
	fmt.Fprintf(a.opts.Progress, "Helm hook %s %s %s\n", o.GetAnnotations()[annotationHook], o.GetKind(), o.GetName())
	applied, err := a.applyObject(ctx, o)
	if err != nil || !applied {
		return err
	}
	if o.GroupVersionKind().Group != "" && o.GroupVersionKind().Group != "batch" {
		return nil
	}
	var done func(context.Context) (bool, error)
	switch o.GetKind() {
	case "Job":
		done = func(ctx context.Context) (bool, error) {
			j, err := a.client.BatchV1().Jobs(o.GetNamespace()).Get(ctx, o.GetName(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil // deleted once done (ttlSecondsAfterFinished)
			}
			if err != nil {
				return false, err
			}
			for _, c := range j.Status.Conditions {
				if c.Status != corev1.ConditionTrue {
					continue
				}
				switch c.Type {
				case batchv1.JobComplete:
					return true, nil
				case batchv1.JobFailed:
					return false, fmt.Errorf("Job failed: %s", c.Message)
				}
			}
			return false, nil
		}
	case "Pod":
		done = func(ctx context.Context) (bool, error) {
			p, err := a.client.CoreV1().Pods(o.GetNamespace()).Get(ctx, o.GetName(), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			if err != nil {
				return false, err
			}
			switch p.Status.Phase {
			case corev1.PodSucceeded:
				return true, nil
			case corev1.PodFailed:
				return false, fmt.Errorf("pod failed: %s %s", p.Status.Reason, p.Status.Message)
			}
			return false, nil
		}
	default:
		return nil
	}
	start := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, a.opts.HookTimeout, true, done)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	policy := o.GetAnnotations()[annotationHookDelete]
	if err != nil {
		if wait.Interrupted(err) {
			err = fmt.Errorf("not finished after %s (helm install --timeout)", a.opts.HookTimeout)
		}
		a.refuse(o, fmt.Sprintf("Helm hook did not succeed, so helm install would stop here: %v", err))
		if strings.Contains(policy, "hook-failed") {
			a.deleteHook(ctx, o)
		}
		return nil
	}
	fmt.Fprintf(a.opts.Progress, "  hook %s %s succeeded after %s\n", o.GetKind(), o.GetName(), time.Since(start).Round(100*time.Millisecond))
	if strings.Contains(policy, "hook-succeeded") {
		a.deleteHook(ctx, o)
	}
	return nil
}

// deleteHook deletes a hook as its delete policy asks, with its pods.
func (a *applier) deleteHook(ctx context.Context, o Object) {
	opts := metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}
	var err error
	if o.GetKind() == "Job" {
		err = a.client.BatchV1().Jobs(o.GetNamespace()).Delete(ctx, o.GetName(), opts)
	} else {
		err = a.client.CoreV1().Pods(o.GetNamespace()).Delete(ctx, o.GetName(), opts)
	}
	if err != nil && !apierrors.IsNotFound(err) {
		fmt.Fprintf(a.opts.Progress, "warning: delete hook %s %s as its delete policy asks: %v\n", o.GetKind(), o.GetName(), err)
	}
}
