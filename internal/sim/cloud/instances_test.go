package cloud

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/timing"
)

func node(name string, ready corev1.ConditionStatus, annotations map[string]string, taints ...corev1.Taint) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: annotations},
		Spec:       corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-" + name, Taints: taints},
		Status:     corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: ready}}},
	}
}

// TestLifecycleFollowsInstances runs the real cloud node lifecycle
// controller over the simulated instances: the NotReady node of a
// terminated instance is deleted once the instance is terminated (not while
// it shuts down), the NotReady node of a stopped instance is tainted
// shutdown, a Ready node loses that taint, and a NotReady node whose
// instance runs (a crash) is left alone.
func TestLifecycleFollowsInstances(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	shutdownTaint := corev1.Taint{Key: "node.cloudprovider.kubernetes.io/shutdown", Effect: corev1.TaintEffectNoSchedule}
	client := fake.NewClientset(
		node("terminated", corev1.ConditionUnknown, map[string]string{kubelet.AnnotationTerminate: "true"}),
		node("stopped", corev1.ConditionUnknown, map[string]string{kubelet.AnnotationShutdown: "true"}),
		node("started", corev1.ConditionTrue, nil, shutdownTaint),
		node("crashed", corev1.ConditionUnknown, map[string]string{kubelet.AnnotationPower: "off"}),
	)
	p := timing.Fast()
	p.InstanceTerminateDelay = 300 * time.Millisecond
	ec2 := ebs.NewCloud(p, 1)
	factory := informers.NewSharedInformerFactory(client, 0)
	instances, err := NewInstances(client, ec2, factory, 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	done := make(chan struct{})
	go func() { instances.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	get := func(name string) (*corev1.Node, error) {
		return client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	}
	tainted := func(n *corev1.Node) bool {
		return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Key == shutdownTaint.Key })
	}
	eventually := func(what string, f func() error) {
		t.Helper()
		var err error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if err = f(); err == nil {
				return
			}
		}
		t.Fatalf("%s: %v", what, err)
	}

	eventually("the stopped instance's node is tainted shutdown", func() error {
		n, err := get("stopped")
		if err != nil {
			return err
		}
		if !tainted(n) {
			return fmt.Errorf("no shutdown taint")
		}
		return nil
	})
	if s := ec2.InstanceState("terminated"); s != ebs.ShuttingDown {
		t.Fatalf("terminated instance %s, want shutting-down for InstanceTerminateDelay", s)
	}
	if _, err := get("terminated"); err != nil {
		t.Fatalf("node deleted while its instance was still shutting down: %v", err)
	}
	eventually("the terminated instance's node is deleted", func() error {
		if _, err := get("terminated"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("node still there (%v)", err)
		}
		return nil
	})
	if s := ec2.InstanceState("terminated"); s != ebs.Terminated {
		t.Fatalf("instance %s, want terminated", s)
	}
	eventually("the Ready node loses its shutdown taint", func() error {
		n, err := get("started")
		if err != nil {
			return err
		}
		if tainted(n) {
			return fmt.Errorf("still tainted")
		}
		return nil
	})
	n, err := get("crashed")
	if err != nil {
		t.Fatalf("the crashed node (instance running) was deleted: %v", err)
	}
	if tainted(n) {
		t.Fatal("the crashed node (instance running) was tainted shutdown")
	}
}
