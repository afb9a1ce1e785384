package report

import (
	"context"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	resourcehelper "k8s.io/component-helpers/resource"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
)

// gatherNodes lists the nodes with their allocatable and what the pods
// bound to them request (pods that have ended count no more, as for the
// scheduler).
func gatherNodes(ctx context.Context, client kubernetes.Interface) ([]Node, error) {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "status.phase!=Succeeded,status.phase!=Failed"})
	if err != nil {
		return nil, err
	}
	requested := map[string]corev1.ResourceList{}
	count := map[string]int64{}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Spec.NodeName == "" {
			continue
		}
		sum := requested[p.Spec.NodeName]
		if sum == nil {
			sum = corev1.ResourceList{}
			requested[p.Spec.NodeName] = sum
		}
		for name, q := range resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}) {
			total := sum[name]
			total.Add(q)
			sum[name] = total
		}
		count[p.Spec.NodeName]++
	}
	out := make([]Node, 0, len(nodes.Items))
	for _, n := range nodes.Items {
		req := requested[n.Name]
		out = append(out, Node{
			Name:         n.Name,
			Zone:         n.Labels[corev1.LabelTopologyZone],
			InstanceType: n.Labels[corev1.LabelInstanceTypeStable],
			Allocatable:  amount(n.Status.Allocatable, n.Status.Allocatable.Pods().Value()),
			Requested:    amount(req, count[n.Name]),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func amount(l corev1.ResourceList, pods int64) Amount {
	cpu, mem := l[corev1.ResourceCPU], l[corev1.ResourceMemory]
	return Amount{CPU: canonical(cpu), Memory: canonical(mem), Pods: pods}
}

// canonical prints a quantity as kubectl would, 0 for none.
func canonical(q resource.Quantity) string {
	if q.IsZero() {
		return "0"
	}
	return q.String()
}

// huddlesResource is the Huddle API's resource.
var huddlesResource = huddlev1.GroupVersion.WithResource("huddles")

// gatherHuddles reads the Huddles of namespaces, by "namespace/claim". A
// cluster without the Huddle API (huddle not installed) has none.
func gatherHuddles(ctx context.Context, dyn dynamic.Interface, namespaces []string) (map[string]*HuddleStatus, error) {
	out := map[string]*HuddleStatus{}
	for _, ns := range namespaces {
		list, err := dyn.Resource(huddlesResource).Namespace(ns).List(ctx, metav1.ListOptions{})
		if apierrors.IsNotFound(err) || meta.IsNoMatchError(err) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list huddles in %s: %w", ns, err)
		}
		for _, item := range list.Items {
			var h huddlev1.Huddle
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(item.Object, &h); err != nil {
				return nil, fmt.Errorf("huddle %s/%s: %w", ns, item.GetName(), err)
			}
			out[ns+"/"+h.Name] = huddleStatus(&h)
		}
	}
	return out, nil
}

func huddleStatus(h *huddlev1.Huddle) *HuddleStatus {
	s := &HuddleStatus{Phase: string(h.Status.Phase), Home: h.Status.Home, Members: h.Status.MemberCount, Ready: h.Status.ReadyCount}
	for _, c := range h.Status.Conditions {
		s.Conditions = append(s.Conditions, Condition{Type: c.Type, Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	if m := h.Status.LastMove; m != nil {
		s.LastMove = fmt.Sprintf("%s -> %s", orNone(m.From), m.To)
		if m.Result != "" {
			s.LastMove += ": " + m.Result
		}
	}
	return s
}
