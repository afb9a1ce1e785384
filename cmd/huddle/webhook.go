package main

import (
	"context"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// registerWebhook writes the MutatingWebhookConfiguration for a webhook
// reached by URL (out-of-cluster runs; in a cluster the chart installs
// it). The rotator fills in its CA bundle.
func registerWebhook(ctx context.Context, reader client.Reader, mgr ctrl.Manager, c runConfig) error {
	cl, err := client.New(mgr.GetConfig(), client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return err
	}
	want := webhookConfiguration(c)
	existing := &admissionregistrationv1.MutatingWebhookConfiguration{}
	err = reader.Get(ctx, client.ObjectKey{Name: c.webhookName}, existing)
	if err == nil {
		// Keep the CA bundle the rotator injected before a restart.
		for i := range want.Webhooks {
			if i < len(existing.Webhooks) {
				want.Webhooks[i].ClientConfig.CABundle = existing.Webhooks[i].ClientConfig.CABundle
			}
		}
		existing.Webhooks = want.Webhooks
		return cl.Update(ctx, existing)
	}
	if client.IgnoreNotFound(err) != nil {
		return err
	}
	return cl.Create(ctx, want)
}

func webhookConfiguration(c runConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	w := &admissionregistrationv1.MutatingWebhookConfiguration{}
	w.Name = c.webhookName
	ignore := admissionregistrationv1.Ignore
	none := admissionregistrationv1.SideEffectClassNone
	w.Webhooks = []admissionregistrationv1.MutatingWebhook{{
		Name:         "gate.huddle.io",
		ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: ptr.To(c.webhookURL)},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
		}},
		NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
			Key: "kubernetes.io/metadata.name", Operator: "NotIn", Values: []string{"kube-system", c.namespace},
		}}},
		// Pods are never blocked by huddle being down; repair brings
		// pods created meanwhile home.
		FailurePolicy:           &ignore,
		SideEffects:             &none,
		AdmissionReviewVersions: []string{"v1"},
		TimeoutSeconds:          ptr.To(int32(5)),
	}}
	return w
}
