package cli

import (
	"context"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/manifest"
)

// unservedWebhooks warns of the admission webhooks among objs that the API
// server cannot call: their Service has no ready endpoint, or only
// endpoints of simulated pods (only pods that huddle-sim runs as processes
// serve anything; docs/simulator.md). With failurePolicy Fail the API
// server then refuses what they match, with Ignore it lets it pass
// unchecked.
func unservedWebhooks(ctx context.Context, c *cluster.Cluster, objs []manifest.Object) ([]string, error) {
	type hook struct {
		config, name, policy string
		svc                  *admissionregistrationv1.ServiceReference
	}
	var hooks []hook
	for _, o := range objs {
		switch o.GetKind() {
		case "ValidatingWebhookConfiguration":
			var v admissionregistrationv1.ValidatingWebhookConfiguration
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &v); err != nil {
				continue // the API server refused it already, or will say why
			}
			for _, w := range v.Webhooks {
				hooks = append(hooks, hook{"ValidatingWebhookConfiguration " + v.Name, w.Name, policy(w.FailurePolicy), w.ClientConfig.Service})
			}
		case "MutatingWebhookConfiguration":
			var m admissionregistrationv1.MutatingWebhookConfiguration
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &m); err != nil {
				continue
			}
			for _, w := range m.Webhooks {
				hooks = append(hooks, hook{"MutatingWebhookConfiguration " + m.Name, w.Name, policy(w.FailurePolicy), w.ClientConfig.Service})
			}
		}
	}
	var out []string
	served := map[string]bool{}
	for _, h := range hooks {
		if h.svc == nil {
			continue // a URL: outside the cluster, nothing to check here
		}
		key := h.svc.Namespace + "/" + h.svc.Name
		ok, seen := served[key]
		if !seen {
			slices, err := c.Client.DiscoveryV1().EndpointSlices(h.svc.Namespace).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + h.svc.Name})
			if err != nil {
				return nil, err
			}
			for _, s := range slices.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && !*e.Conditions.Ready || e.TargetRef == nil || e.TargetRef.Kind != "Pod" {
						continue
					}
					pod, err := c.Client.CoreV1().Pods(e.TargetRef.Namespace).Get(ctx, e.TargetRef.Name, metav1.GetOptions{})
					if err == nil && c.Kubelets.RunsProcesses(pod) {
						ok = true
					}
				}
			}
			served[key] = ok
		}
		if ok {
			continue
		}
		effect := "requests it matches are refused (\"failed calling webhook\")"
		if h.policy == string(admissionregistrationv1.Ignore) {
			effect = "requests it matches pass unchecked"
		}
		out = append(out, fmt.Sprintf("%s: webhook %s calls Service %s, which no ready pod serves here (huddle-sim simulates your pods; it runs no webhook server but huddle's): the API server cannot call it, and with failurePolicy %s %s; turn the chart's webhook off to see the rest", h.config, h.name, key, h.policy, effect))
	}
	return out, nil
}

// policy is a webhook's failure policy, Fail when unset as the API server
// defaults it.
func policy(p *admissionregistrationv1.FailurePolicyType) string {
	if p == nil {
		return string(admissionregistrationv1.Fail)
	}
	return string(*p)
}
