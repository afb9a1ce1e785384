package controller

import (
	"maps"
	"slices"
	"sort"
	"sync"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	resourcehelper "k8s.io/component-helpers/resource"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/huddle-io/huddle/internal/placement"
)

// Cluster keeps, from informer events, every node with the sum of the
// requests of the pods bound to it, so a placement decision reads node
// usage in O(1) instead of summing pods. It implements placement.Nodes for
// callers that hold its read lock (see View).
type Cluster struct {
	mu    sync.RWMutex
	nodes map[string]*placement.Node
	order []*placement.Node // sorted by name; rebuilt when nodes come or go
	use   map[types.UID]podUse
	// requested per node, kept apart so node updates do not lose it.
	requested map[string]placement.Resources
	// synced are the HasSynced of the informer handlers that feed it.
	synced []func() bool
	// limits (from CSINodes) and attached (from VolumeAttachments) per
	// node and CSI driver, kept apart for the same reason; volumes
	// remembers each attachment's node and driver.
	limits   map[string]map[string]int64
	attached map[string]map[string]int64
	volumes  map[types.UID]volumeUse
	// Detached carries the node of each attachment that is gone: a slot
	// under the node's attach limit may be free, which no Node event
	// says (see freedSlot).
	Detached chan event.GenericEvent
	// changes are told of every node whose state placement reads changed
	// (see Changes).
	changes []*NodeChanges
}

// Changes returns a new collector of node changes for one controller.
// Call it before the informers start.
func (c *Cluster) Changes() *NodeChanges {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := &NodeChanges{}
	c.changes = append(c.changes, n)
	return n
}

// changed tells every collector that node changed (see NodeChanges.mark).
// The caller holds c.mu.
func (c *Cluster) changed(node string, availability bool) {
	for _, n := range c.changes {
		n.mark(node, availability)
	}
}

// detachedBuffer is how many detachments wait for the placer before
// more are dropped (the placer's recheck is the safety net).
const detachedBuffer = 1024

type volumeUse struct{ node, driver string }

type podUse struct {
	node string
	req  placement.Resources
}

// NewCluster returns an empty tracker.
func NewCluster() *Cluster {
	return &Cluster{nodes: map[string]*placement.Node{}, use: map[types.UID]podUse{}, requested: map[string]placement.Resources{},
		limits: map[string]map[string]int64{}, attached: map[string]map[string]int64{}, volumes: map[types.UID]volumeUse{},
		Detached: make(chan event.GenericEvent, detachedBuffer)}
}

// CSINodeHandler keeps each node's attach limits per CSI driver.
func (c *Cluster) CSINodeHandler() cache.ResourceEventHandler {
	set := func(o any, deleted bool) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		cn, ok := o.(*storagev1.CSINode)
		if !ok {
			return
		}
		var limits map[string]int64
		for _, d := range cn.Spec.Drivers {
			if !deleted && d.Allocatable != nil && d.Allocatable.Count != nil {
				if limits == nil {
					limits = map[string]int64{}
				}
				limits[d.Name] = int64(*d.Allocatable.Count)
			}
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if maps.Equal(c.limits[cn.Name], limits) {
			return
		}
		if limits == nil {
			delete(c.limits, cn.Name)
		} else {
			c.limits[cn.Name] = limits
		}
		c.changed(cn.Name, false)
		if n, ok := c.nodes[cn.Name]; ok {
			n.AttachLimit = limits
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { set(o, false) },
		UpdateFunc: func(_, o any) { set(o, false) },
		DeleteFunc: func(o any) { set(o, true) },
	}
}

// AttachmentHandler counts the volumes attached or attaching to each node
// per CSI driver. An attachment being deleted still holds its slot until
// it is gone.
func (c *Cluster) AttachmentHandler() cache.ResourceEventHandler {
	set := func(o any, deleted bool) {
		if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		va, ok := o.(*storagev1.VolumeAttachment)
		if !ok {
			return
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		now := volumeUse{node: va.Spec.NodeName, driver: va.Spec.Attacher}
		if was, ok := c.volumes[va.UID]; ok {
			if was == now && !deleted {
				return
			}
			c.attach(was, -1)
			delete(c.volumes, va.UID)
		}
		if !deleted {
			c.volumes[va.UID] = now
			c.attach(now, 1)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { set(o, false) },
		UpdateFunc: func(_, o any) { set(o, false) },
		DeleteFunc: func(o any) { set(o, true) },
	}
}

func (c *Cluster) attach(v volumeUse, k int64) {
	m := c.attached[v.node]
	if m == nil {
		m = map[string]int64{}
		c.attached[v.node] = m
	}
	m[v.driver] += k
	if m[v.driver] <= 0 {
		delete(m, v.driver)
	}
	if n, ok := c.nodes[v.node]; ok {
		n.Attached = m
	}
	c.changed(v.node, false)
	if k < 0 {
		c.freedSlot(v.node)
	}
}

// freedSlot tells the placer, without blocking, that node has one volume
// attachment fewer: pods held because no node was under its attach limit
// may go there now.
func (c *Cluster) freedSlot(node string) {
	select {
	case c.Detached <- event.GenericEvent{Object: &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}}:
	default:
	}
}

// NodeHandler and PodHandler feed the tracker from informers.
func (c *Cluster) NodeHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.setNode(o) },
		UpdateFunc: func(_, o any) { c.setNode(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if n, ok := o.(*corev1.Node); ok {
				c.mu.Lock()
				delete(c.nodes, n.Name)
				c.reorder()
				c.changed(n.Name, true)
				c.mu.Unlock()
			}
		},
	}
}

// PodHandler keeps node usage.
func (c *Cluster) PodHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { c.setPod(o, false) },
		UpdateFunc: func(_, o any) { c.setPod(o, false) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			c.setPod(o, true)
		},
	}
}

func (c *Cluster) setNode(o any) {
	n, ok := o.(*corev1.Node)
	if !ok {
		return
	}
	pn := &placement.Node{
		Name:        n.Name,
		Labels:      n.Labels,
		Taints:      n.Spec.Taints,
		Ready:       nodeReady(n),
		Cordoned:    n.Spec.Unschedulable || markedForRemoval(n),
		Allocatable: placement.FromList(n.Status.Allocatable),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	pn.Requested = c.requested[n.Name]
	pn.AttachLimit, pn.Attached = c.limits[n.Name], c.attached[n.Name]
	old, existed := c.nodes[n.Name]
	switch {
	case !existed || old.Ready != pn.Ready || old.Cordoned != pn.Cordoned ||
		!equality.Semantic.DeepEqual(old.Taints, pn.Taints) || !maps.Equal(old.Labels, pn.Labels):
		c.changed(n.Name, true)
	case !old.Allocatable.Equal(pn.Allocatable):
		c.changed(n.Name, false)
	}
	c.nodes[n.Name] = pn
	if existed {
		for i, old := range c.order {
			if old.Name == n.Name {
				c.order[i] = pn
			}
		}
		return
	}
	c.reorder()
}

func (c *Cluster) reorder() {
	c.order = c.order[:0]
	for _, n := range c.nodes {
		c.order = append(c.order, n)
	}
	sort.Slice(c.order, func(i, j int) bool { return c.order[i].Name < c.order[j].Name })
}

func (c *Cluster) setPod(o any, deleted bool) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	var now podUse
	counts := !deleted && p.Spec.NodeName != "" && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed
	if counts {
		now = podUse{node: p.Spec.NodeName, req: Requests(p)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if was, ok := c.use[p.UID]; ok {
		if was.node == now.node && was.req.Equal(now.req) {
			return
		}
		c.add(was.node, placement.Resources{}.Sub(was.req))
		delete(c.use, p.UID)
	}
	if counts {
		c.use[p.UID] = now
		c.add(now.node, now.req)
	}
}

func (c *Cluster) add(node string, r placement.Resources) {
	total := c.requested[node].Add(r)
	c.requested[node] = total
	if n, ok := c.nodes[node]; ok {
		n.Requested = total
	}
	c.changed(node, false)
}

// TrackSync adds the HasSynced of an informer handler registration that
// feeds the tracker. Call it before the informers start.
func (c *Cluster) TrackSync(synced func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.synced = append(c.synced, synced)
}

// HasSynced reports whether every tracked handler has been given every
// object its informer listed at start: only then are nodes and their usage
// complete. An informer's own HasSynced comes earlier, when its store is
// filled but its handlers may not have run.
func (c *Cluster) HasSynced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, s := range c.synced {
		if !s() {
			return false
		}
	}
	return true
}

// View runs f with the tracker read-locked, as placement.Nodes.
func (c *Cluster) View(f func(placement.Nodes)) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	f(locked{c})
}

type locked struct{ c *Cluster }

func (l locked) Get(name string) *placement.Node { return l.c.nodes[name] }
func (l locked) Len() int                        { return len(l.c.order) }
func (l locked) At(i int) *placement.Node        { return l.c.order[i] }

// Requests are a pod's requests as placement counts them, one pod slot
// included.
func Requests(p *corev1.Pod) placement.Resources {
	r := placement.FromList(resourcehelper.PodRequests(p, resourcehelper.PodResourcesOptions{}))
	r.Pods = 1
	return r
}

// removalTaints are the taints autoscalers put on a node they are about
// to drain and remove, in place of a cordon: Karpenter's (v1:
// karpenter.sh/disrupted; before v1: karpenter.sh/disruption) and
// Cluster Autoscaler's. Placement takes such a node as cordoned: its pods
// are being evicted and it takes no new ones.
var removalTaints = []string{"karpenter.sh/disrupted", "karpenter.sh/disruption", "ToBeDeletedByClusterAutoscaler"}

// markedForRemoval says whether an autoscaler is removing n.
func markedForRemoval(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule && slices.Contains(removalTaints, t.Key)
	})
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
