package kubelet

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/huddle-io/huddle/internal/sim/timing"
)

// Pool plays the kubelets of many nodes.
type Pool struct {
	transports  *transports
	timing      timing.Profile
	broadcaster record.EventBroadcaster
	logger      klog.Logger

	pods       corelisters.PodLister
	nodeLister corelisters.NodeLister
	claims     corelisters.PersistentVolumeClaimLister
	volumes    corelisters.PersistentVolumeLister
	csiDrivers storagelisters.CSIDriverLister
	// queue holds the keys of pods to sync; procQueue those of pods whose
	// containers run as processes (procKeys), which have workers of their
	// own: a real node's kubelet restarts its containers and reports
	// their readiness whatever other nodes' pods do, and with one queue
	// for all the simulated nodes' pods a crashed huddle replica waited
	// minutes behind 20,000 other pods' syncs to be restarted.
	queue     workqueue.TypedRateLimitingInterface[string]
	procQueue workqueue.TypedRateLimitingInterface[string]

	// procs runs some images' containers as processes (nil: none).
	procs *Processes

	mu    sync.Mutex
	nodes map[string]*node
	// procKeys are the keys of pods seen running processes: such a key
	// goes to procQueue for good. syncing are the keys being synced: a
	// key that moves queues is never synced by two workers at once.
	procKeys map[string]bool
	syncing  map[string]bool
	nextIP   int
	podIPs   int
	// runCtx is Run's context once it runs: nodes added from then on
	// start their heartbeats at once.
	runCtx context.Context
}

// node is one simulated node's kubelet state.
type node struct {
	spec    NodeSpec
	ip      string
	client  nodeClients
	powered bool
	// beating: the node's heartbeat loops run.
	beating bool
	// terminated: the instance was terminated; it never powers on again.
	terminated bool
	lease      *coordinationv1.Lease
	recorder   record.EventRecorder
	// attached is the node's status.volumesAttached, from the informer.
	attached map[string]bool
	// pods are the pods this kubelet admitted, by key.
	pods map[string]*podState
	// reportedInUse is the last status.volumesInUse written, sorted;
	// lastReport when node status was last written.
	reportedInUse []string
	lastReport    time.Time
}

// volumesInUse lists, sorted, the attachable volumes of pods that hold
// their volumes: admitted and not yet released.
func (n *node) volumesInUse() []string {
	set := map[string]bool{}
	for _, st := range n.pods {
		if st.released {
			continue
		}
		for _, v := range st.volumes {
			set[v] = true
		}
	}
	out := make([]string, 0, len(set))
	for v := range set {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// heartbeatTimeoutFloor bounds the heartbeat client's timeout from below.
const heartbeatTimeoutFloor = 2 * time.Second

// New wires a pool to factory's informers. Each node's kubelet talks to
// the API server as cfg's identity with clients of its own (see
// nodeClients). Register nodes with AddNode and start it with Run after the
// factory has started.
func New(cfg *rest.Config, factory informers.SharedInformerFactory, profile timing.Profile, broadcaster record.EventBroadcaster) (*Pool, error) {
	// The kubelet's heartbeat client times out after its status update
	// frequency (at most the lease duration): 10 s on EKS. The fast
	// profile's 0.5 s would make a loaded machine's slow answers look like
	// a lost node, so the timeout never goes below heartbeatTimeoutFloor.
	t, err := newTransports(cfg, max(min(profile.NodeStatusUpdateFrequency, profile.NodeLeaseDuration), heartbeatTimeoutFloor))
	if err != nil {
		return nil, err
	}
	p := &Pool{
		transports:  t,
		timing:      profile,
		broadcaster: broadcaster,
		logger:      klog.Background().WithName("sim-kubelet"),
		pods:        factory.Core().V1().Pods().Lister(),
		nodeLister:  factory.Core().V1().Nodes().Lister(),
		claims:      factory.Core().V1().PersistentVolumeClaims().Lister(),
		volumes:     factory.Core().V1().PersistentVolumes().Lister(),
		csiDrivers:  factory.Storage().V1().CSIDrivers().Lister(),
		queue:       newPodQueue("sim-kubelet"),
		procQueue:   newPodQueue("sim-kubelet-processes"),
		nodes:       map[string]*node{},
		procKeys:    map[string]bool{},
		syncing:     map[string]bool{},
	}
	_, _ = factory.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.onPod,
		UpdateFunc: func(_, obj any) { p.onPod(obj) },
		DeleteFunc: p.onPod,
	})
	_, _ = factory.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.onNode,
		UpdateFunc: func(_, obj any) { p.onNode(obj) },
	})
	factory.Core().V1().PersistentVolumeClaims().Informer()
	factory.Core().V1().PersistentVolumes().Informer()
	factory.Storage().V1().CSIDrivers().Informer()
	return p, nil
}

// AddNode registers a node and starts playing its kubelet.
func (p *Pool) AddNode(ctx context.Context, spec NodeSpec) error {
	if err := spec.resolve(); err != nil {
		return err
	}
	clients, err := p.transports.clients()
	if err != nil {
		return err
	}
	p.mu.Lock()
	if _, ok := p.nodes[spec.Name]; ok {
		p.mu.Unlock()
		return fmt.Errorf("node %s is already simulated", spec.Name)
	}
	p.nextIP++
	n := &node{
		spec:     spec,
		ip:       fmt.Sprintf("10.0.%d.%d", 1+p.nextIP/250, 1+p.nextIP%250),
		client:   clients,
		powered:  poweredFromAnnotations(spec.Annotations),
		attached: map[string]bool{},
		pods:     map[string]*podState{},
		recorder: p.broadcaster.NewRecorder(schemeForEvents, corev1.EventSource{Component: "kubelet", Host: spec.Name}),
	}
	p.nodes[spec.Name] = n
	p.mu.Unlock()
	if err := p.register(ctx, n); err != nil {
		return err
	}
	p.mu.Lock()
	runCtx := p.runCtx
	start := runCtx != nil && !n.beating
	n.beating = n.beating || start
	p.mu.Unlock()
	if start {
		go p.heartbeat(runCtx, n)
	}
	return nil
}

// Nodes lists the names of the simulated nodes, sorted.
func (p *Pool) Nodes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := make([]string, 0, len(p.nodes))
	for name := range p.nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// RunProcesses makes the kubelets run containers of ps.Images as real
// processes. Call it before the informer factory starts: pods are sorted
// into their queues from its first events.
func (p *Pool) RunProcesses(ps *Processes) { p.procs = ps }

// RunsProcesses says whether pod's containers run as processes in a
// sandbox, where the API server can reach them (a webhook), or are only
// simulated.
func (p *Pool) RunsProcesses(pod *corev1.Pod) bool { return p.procs.runsProcesses(pod) }

// processWorkers sync the pods that run processes (a few: huddle's
// replicas, webhooks).
const processWorkers = 2

func newPodQueue(name string) workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: name})
}

// Run plays the kubelets with workers that sync pods (and processWorkers
// more for the pods that run processes) until ctx ends, then stops every
// process it started.
func (p *Pool) Run(ctx context.Context, workers int) {
	ctx = klog.NewContext(ctx, p.logger)
	var running sync.WaitGroup
	for range workers {
		running.Go(func() { wait.UntilWithContext(ctx, func(ctx context.Context) { p.worker(ctx, p.queue) }, time.Second) })
	}
	for range processWorkers {
		running.Go(func() {
			wait.UntilWithContext(ctx, func(ctx context.Context) { p.worker(ctx, p.procQueue) }, time.Second)
		})
	}
	// Every registered node's heartbeats; AddNode starts later nodes'.
	p.mu.Lock()
	p.runCtx = ctx
	var registered []*node
	for _, n := range p.nodes {
		if n.lease != nil && !n.beating {
			n.beating = true
			registered = append(registered, n)
		}
	}
	p.mu.Unlock()
	for _, n := range registered {
		go p.heartbeat(ctx, n)
	}
	<-ctx.Done()
	// A worker in the middle of a sync may still start a process: only
	// once every worker has returned are all of them known, and stopped.
	p.queue.ShutDown()
	p.procQueue.ShutDown()
	running.Wait()
	p.stopAllProcesses()
}

func (p *Pool) worker(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) {
	for {
		key, quit := queue.Get()
		if quit {
			return
		}
		if own := p.queueOf(key); own != queue {
			// A process pod's key that reached the shared queue before
			// onPod saw the pod (a node powered on lists its pods): its
			// own workers sync it.
			queue.Forget(key)
			queue.Done(key)
			own.Add(key)
			continue
		}
		if !p.startSync(key) {
			// The other queue's worker syncs it (its key has just moved
			// queues): never two syncs of one pod at once.
			queue.Done(key)
			queue.AddAfter(key, 100*time.Millisecond)
			continue
		}
		requeue, err := p.syncPod(ctx, key)
		p.endSync(key)
		switch {
		case err != nil:
			p.logger.V(2).Info("Pod sync failed, retrying", "pod", key, "err", err)
			queue.AddRateLimited(key)
		case requeue > 0:
			queue.Forget(key)
			queue.AddAfter(key, requeue)
		default:
			queue.Forget(key)
		}
		queue.Done(key)
	}
}

// startSync marks key as being synced, unless it is already.
func (p *Pool) startSync(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.syncing[key] {
		return false
	}
	p.syncing[key] = true
	return true
}

func (p *Pool) endSync(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.syncing, key)
}

// queueOf is the queue of a pod's key (see procQueue).
func (p *Pool) queueOf(key string) workqueue.TypedRateLimitingInterface[string] {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.procKeys[key] {
		return p.procQueue
	}
	return p.queue
}

// enqueue adds a pod's key to its queue.
func (p *Pool) enqueue(key string) {
	p.queueOf(key).Add(key)
}

// enqueuePod adds pod's key to its queue, the process pods' if its
// containers run as processes.
func (p *Pool) enqueuePod(pod *corev1.Pod) {
	key := pod.Namespace + "/" + pod.Name
	if p.procs.runsProcesses(pod) {
		p.mu.Lock()
		p.procKeys[key] = true
		p.mu.Unlock()
	}
	p.enqueue(key)
}

func (p *Pool) onPod(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok || pod.Spec.NodeName == "" {
		return
	}
	p.mu.Lock()
	_, ours := p.nodes[pod.Spec.NodeName]
	p.mu.Unlock()
	if ours {
		p.enqueuePod(pod)
	}
}

// onNode tracks the attach/detach controller's status.volumesAttached and
// the power annotations of simulated nodes.
func (p *Pool) onNode(obj any) {
	nodeObj, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	p.mu.Lock()
	n, ours := p.nodes[nodeObj.Name]
	if !ours {
		p.mu.Unlock()
		return
	}
	attached := make(map[string]bool, len(nodeObj.Status.VolumesAttached))
	for _, v := range nodeObj.Status.VolumesAttached {
		attached[string(v.Name)] = true
	}
	attachChanged := len(attached) != len(n.attached)
	for v := range attached {
		attachChanged = attachChanged || !n.attached[v]
	}
	n.attached = attached
	wasPowered := n.powered
	n.terminated = n.terminated || nodeObj.Annotations[AnnotationTerminate] == "true"
	n.powered = !n.terminated && poweredFromAnnotations(nodeObj.Annotations)
	poweredOn := n.powered && !wasPowered
	var off []*procPod
	if wasPowered && !n.powered {
		now := time.Now()
		for _, st := range n.pods {
			switch {
			case st.proc != nil:
				off = append(off, st.proc)
			case st.stage == stageRunning && st.lostAt.IsZero():
				st.lostAt = now // its containers die with the instance
			}
		}
	}
	var keys []string
	if attachChanged || poweredOn {
		for key := range n.pods {
			keys = append(keys, key)
		}
	}
	p.mu.Unlock()
	// The instance is off: its processes die now, before anything can see
	// the node on again.
	for _, pp := range off {
		pp.powerOff()
	}

	if poweredOn {
		// A rebooted kubelet reports Ready at once and then resyncs its pods,
		// including those scheduled or deleted while it was down.
		go func() {
			ctx := context.Background()
			if err := p.syncNodeStatus(ctx, n, true); err != nil {
				p.logger.Info("Node status update after power-on failed", "node", n.spec.Name, "err", err)
			}
			_ = p.renewLease(ctx, n)
		}()
		pods, _ := p.pods.List(labelsEverything)
		for _, pod := range pods {
			if pod.Spec.NodeName == n.spec.Name {
				keys = slices.DeleteFunc(keys, func(k string) bool { return k == pod.Namespace+"/"+pod.Name })
				p.enqueuePod(pod)
			}
		}
	}
	for _, k := range keys {
		p.enqueue(k)
	}
}

func (p *Pool) node(name string) *node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nodes[name]
}

// nodeOfKey finds the node whose kubelet holds state for a pod key.
func (p *Pool) nodeOfKey(key string) *node {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.nodes {
		if _, ok := n.pods[key]; ok {
			return n
		}
	}
	return nil
}
