package cloud

import (
	"context"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/cloud-provider/controllers/nodelifecycle"
	controllersmetrics "k8s.io/component-base/metrics/prometheus/controllers"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
)

// Instances applies the instance actions users ask for on Nodes (stop,
// start, terminate) to the simulated EC2, and runs the real cloud node
// lifecycle controller against it.
type Instances struct {
	ec2       *ebs.Cloud
	nodes     corelisters.NodeLister
	queue     workqueue.TypedRateLimitingInterface[string]
	lifecycle *nodelifecycle.CloudNodeLifecycleController

	start   sync.Once
	running sync.WaitGroup
}

// NewInstances wires the instances of ec2 to the Nodes of factory; the
// lifecycle controller checks NotReady nodes every period (the
// cloud-controller-manager's --node-monitor-period).
func NewInstances(client kubernetes.Interface, ec2 *ebs.Cloud, factory informers.SharedInformerFactory, period time.Duration) (*Instances, error) {
	lifecycle, err := nodelifecycle.NewCloudNodeLifecycleController(factory.Core().V1().Nodes(), client, NewProvider(ec2), period)
	if err != nil {
		return nil, err
	}
	i := &Instances{
		ec2:       ec2,
		nodes:     factory.Core().V1().Nodes().Lister(),
		lifecycle: lifecycle,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "sim-instances"}),
	}
	_, _ = factory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if n, ok := obj.(*corev1.Node); ok && action(n) != "" {
				i.queue.Add(n.Name)
			}
		},
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(*corev1.Node)
			n, ok2 := obj.(*corev1.Node)
			if ok1 && ok2 && action(o) != action(n) {
				i.queue.Add(n.Name)
			}
		},
	})
	return i, nil
}

// action is what a node's annotations ask of its instance: "terminate",
// "stop" or "" (run).
func action(n *corev1.Node) string {
	switch {
	case n.Annotations[kubelet.AnnotationTerminate] == "true":
		return "terminate"
	case n.Annotations[kubelet.AnnotationShutdown] == "true":
		return "stop"
	}
	return ""
}

// Run applies instance actions until ctx ends.
func (i *Instances) Run(ctx context.Context) {
	defer i.running.Wait()
	defer i.queue.ShutDown()
	go wait.UntilWithContext(ctx, i.worker, time.Second)
	<-ctx.Done()
}

func (i *Instances) worker(ctx context.Context) {
	for {
		name, quit := i.queue.Get()
		if quit {
			return
		}
		i.sync(ctx, name)
		i.queue.Done(name)
	}
}

func (i *Instances) sync(ctx context.Context, name string) {
	n, err := i.nodes.Get(name)
	if apierrors.IsNotFound(err) || err != nil {
		return
	}
	switch action(n) {
	case "terminate":
		i.ec2.TerminateInstance(name)
	case "stop":
		i.ec2.StopInstance(name)
	default:
		i.ec2.StartInstance(name)
	}
	if i.ec2.InstanceState(name) != ebs.Running {
		i.startLifecycle(ctx)
	}
}

// startLifecycle starts the cloud node lifecycle controller the first time
// an instance is not running. Until then it would find nothing to do (no
// instance is stopped or gone); starting it late keeps its startup log
// line out of runs that never stop or terminate an instance.
func (i *Instances) startLifecycle(ctx context.Context) {
	i.start.Do(func() {
		i.running.Add(1)
		go func() {
			defer i.running.Done()
			i.lifecycle.Run(ctx, controllersmetrics.NewControllerManagerMetrics("cloud-controller-manager"))
		}()
	})
}
