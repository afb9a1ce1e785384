// Package cloud plays the part of the cloud node lifecycle controller that
// the simulator needs: a node whose instance is shut down
// (sim.huddle.io/shutdown=true) and that has stopped reporting Ready gets
// the taint node.cloudprovider.kubernetes.io/shutdown:NoSchedule; the taint
// goes once the node is Ready again. This is what the AWS cloud controller
// manager does for a stopped EC2 instance, checked every node monitor
// period.
package cloud

import (
	"context"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/klog/v2"
)

// TaintShutdown is the taint the cloud puts on nodes of stopped instances.
const TaintShutdown = "node.cloudprovider.kubernetes.io/shutdown"

// annotationShutdown marks a simulated instance as stopped.
const annotationShutdown = "sim.huddle.io/shutdown"

// ShutdownTainter keeps the shutdown taint in line with instance state.
type ShutdownTainter struct {
	client kubernetes.Interface
	nodes  corelisters.NodeLister
	period time.Duration
}

// NewShutdownTainter checks every node each period.
func NewShutdownTainter(client kubernetes.Interface, factory informers.SharedInformerFactory, period time.Duration) *ShutdownTainter {
	return &ShutdownTainter{client: client, nodes: factory.Core().V1().Nodes().Lister(), period: period}
}

// Run checks nodes until ctx ends.
func (s *ShutdownTainter) Run(ctx context.Context) {
	t := time.NewTicker(s.period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sync(ctx)
		}
	}
}

func (s *ShutdownTainter) sync(ctx context.Context) {
	nodes, err := s.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	for _, n := range nodes {
		tainted := slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == TaintShutdown })
		shutdown := n.Annotations[annotationShutdown] == "true" && !ready(n)
		if tainted == shutdown {
			continue
		}
		n = n.DeepCopy()
		if shutdown {
			n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: TaintShutdown, Effect: corev1.TaintEffectNoSchedule})
		} else if ready(n) {
			n.Spec.Taints = slices.DeleteFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == TaintShutdown })
		} else {
			continue
		}
		if _, err := s.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).V(2).Info("Updating shutdown taint failed, retrying next period", "node", n.Name, "err", err)
		}
	}
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
