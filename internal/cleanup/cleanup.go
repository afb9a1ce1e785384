package cleanup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// Options say what to clean up.
type Options struct {
	// WebhookConfiguration is the MutatingWebhookConfiguration to delete.
	WebhookConfiguration string
	// Namespace is huddle's namespace, where CertSecret lives.
	Namespace string
	// CertSecret is the webhook certificate's Secret; empty: none.
	CertSecret string
	// Settle is the wait before the second look for gated pods: an
	// admission that called the webhook just before its configuration
	// was deleted may still create a gated pod.
	Settle time.Duration
	// PageSize is how many pods one list request returns.
	PageSize int64
	// Clock times the events and the settle wait.
	Clock clock.Clock
}

// Run deletes the webhook configuration, releases every pod gated by
// huddle and deletes the certificate Secret, logging each step to the
// logger in ctx. What is already gone is fine; any other failure is
// returned, after the remaining steps were tried.
func Run(ctx context.Context, cs kubernetes.Interface, o Options) error {
	logger := logr.FromContextOrDiscard(ctx)
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.PageSize <= 0 {
		o.PageSize = 500
	}
	var errs []error
	if err := deleteWebhookConfiguration(ctx, cs, o.WebhookConfiguration, logger); err != nil {
		errs = append(errs, err)
	}
	released, err := releaseGated(ctx, cs, o, logger)
	if err != nil {
		errs = append(errs, err)
	}
	if err == nil && o.Settle > 0 {
		logger.Info("Looking again for gated pods after a pause, for admissions that were in flight", "pause", o.Settle)
		select {
		case <-ctx.Done():
			return errors.Join(append(errs, ctx.Err())...)
		case <-o.Clock.After(o.Settle):
		}
		n, err := releaseGated(ctx, cs, o, logger)
		released += n
		if err != nil {
			errs = append(errs, err)
		}
	}
	logger.Info("Released the pods huddle had gated", "pods", released)
	if err := deleteCertSecret(ctx, cs, o.Namespace, o.CertSecret, logger); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func deleteWebhookConfiguration(ctx context.Context, cs kubernetes.Interface, name string, logger logr.Logger) error {
	if name == "" {
		return nil
	}
	err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		logger.Info("Webhook configuration already gone", "mutatingWebhookConfiguration", name)
		return nil
	case err != nil:
		return fmt.Errorf("delete MutatingWebhookConfiguration %s: %w", name, err)
	}
	logger.Info("Deleted the webhook configuration: no new pod is gated", "mutatingWebhookConfiguration", name)
	return nil
}

// releaseGated releases the gated pods of the whole cluster. Gated pods
// are never bound, so only unscheduled ones are listed.
func releaseGated(ctx context.Context, cs kubernetes.Interface, o Options, logger logr.Logger) (int, error) {
	opts := metav1.ListOptions{FieldSelector: "spec.nodeName=", Limit: o.PageSize}
	released := 0
	var errs []error
	for {
		list, err := cs.CoreV1().Pods(metav1.NamespaceAll).List(ctx, opts)
		if err != nil {
			return released, fmt.Errorf("list unscheduled pods: %w", err)
		}
		for i := range list.Items {
			pod := &list.Items[i]
			if _, gated := Ungate(pod.Spec.SchedulingGates); !gated {
				continue
			}
			ok, err := release(ctx, cs, pod, o.Clock, logger)
			if err != nil {
				errs = append(errs, err)
			} else if ok {
				released++
			}
		}
		if list.Continue == "" {
			return released, errors.Join(errs...)
		}
		opts.Continue = list.Continue
	}
}

// release removes huddle's gate from pod, re-reading it on a conflict;
// false if the pod is gone or no longer gated.
func release(ctx context.Context, cs kubernetes.Interface, pod *corev1.Pod, clk clock.Clock, logger logr.Logger) (bool, error) {
	pods := cs.CoreV1().Pods(pod.Namespace)
	released := false
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		patch, ok, err := releasePatch(pod)
		if err != nil || !ok {
			return err
		}
		updated, err := pods.Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{})
		if apierrors.IsConflict(err) {
			// Changed meanwhile (pinned by huddle, deleted, …): look again.
			fresh, getErr := pods.Get(ctx, pod.Name, metav1.GetOptions{})
			if getErr != nil {
				if apierrors.IsNotFound(getErr) {
					pod = &corev1.Pod{}
					return nil
				}
				return getErr
			}
			pod = fresh
			return err
		}
		if err != nil {
			return err
		}
		released, pod = true, updated
		return nil
	})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("release pod %s/%s from its scheduling gate: %w", pod.Namespace, pod.Name, err)
	}
	if !released {
		return false, nil
	}
	logger.Info("Released pod from huddle's scheduling gate", "pod", klog.KObj(pod))
	if _, err := cs.CoreV1().Events(pod.Namespace).Create(ctx, releasedEvent(pod, clk.Now()), metav1.CreateOptions{}); err != nil {
		// The annotation already records it; an event is a courtesy.
		logger.Error(err, "Could not record the ReleasedOnUninstall event", "pod", klog.KObj(pod))
	}
	return true, nil
}

func deleteCertSecret(ctx context.Context, cs kubernetes.Interface, namespace, name string, logger logr.Logger) error {
	if name == "" {
		return nil
	}
	err := cs.CoreV1().Secrets(namespace).Delete(ctx, name, metav1.DeleteOptions{})
	switch {
	case apierrors.IsNotFound(err):
		logger.Info("Certificate Secret already gone", "secret", klog.KRef(namespace, name))
		return nil
	case err != nil:
		return fmt.Errorf("delete Secret %s/%s: %w", namespace, name, err)
	}
	logger.Info("Deleted the webhook certificate Secret", "secret", klog.KRef(namespace, name))
	return nil
}
