package chaos

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// Kinds of fault, as the summary counts them.
const (
	fRollout    = "rollout"
	fScale      = "scale"
	fDrain      = "drain"
	fCordon     = "cordon"
	fPowerOff   = "power-off"
	fShutdown   = "shutdown"
	fDeleteNode = "delete-node"
	fNewNode    = "new-node"
	fFillHome   = "fill-home"
	fKillHuddle = "kill-huddle"
	fJob        = "job"
)

// faultWeights: how often each kind is drawn, relative to the others.
var faultWeights = []struct {
	kind   string
	weight int
}{
	{fRollout, 4}, {fScale, 4}, {fDrain, 2}, {fCordon, 2}, {fPowerOff, 2}, {fShutdown, 2},
	{fDeleteNode, 1}, {fNewNode, 1}, {fFillHome, 2}, {fKillHuddle, 2}, {fJob, 2},
}

// maxMovable is the most replicas of a moving huddle's Deployment (of
// 500m each): 2 CPU, so some node of 4 can take the whole huddle.
const maxMovable = 4

// maxDisrupted is the most pool nodes down, drained or cordoned at once,
// so the huddles always have somewhere to go.
const maxDisrupted = 2

// undo is a fault's end (power on, uncordon…), due at a time.
type undo struct {
	due  time.Time
	what string
	do   func() error
}

// chaos injects faults into one run.
type chaos struct {
	env   *simtest.Env
	rng   *rand.Rand
	w     *world
	start time.Time
	// nodes are the pool's nodes not deleted; disrupted those with a
	// fault in progress.
	nodes      []string
	disrupted  map[string]bool
	undos      []undo
	counts     map[string]int
	fills      int
	lastKill   time.Time
	restarts   int
	background sync.WaitGroup
}

func (c *chaos) logf(format string, args ...any) {
	c.env.T.Logf("[%6.1fs] %s", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// inject draws one fault and applies it; a fault that cannot apply now
// (no node free to disrupt) draws again, a few times.
func (c *chaos) inject() {
	total := 0
	for _, f := range faultWeights {
		total += f.weight
	}
	for range 5 {
		n := c.rng.IntN(total)
		kind := ""
		for _, f := range faultWeights {
			if n < f.weight {
				kind = f.kind
				break
			}
			n -= f.weight
		}
		ok, err := c.apply(kind)
		if err != nil {
			c.logf("%s failed: %v", kind, err)
		}
		if ok {
			c.counts[kind]++
			return
		}
	}
}

// runUndos runs the undos that are due (all of them if all).
func (c *chaos) runUndos(all bool) {
	sort.SliceStable(c.undos, func(i, j int) bool { return c.undos[i].due.Before(c.undos[j].due) })
	keep := c.undos[:0]
	for _, u := range c.undos {
		if !all && time.Now().Before(u.due) {
			keep = append(keep, u)
			continue
		}
		c.logf("end: %s", u.what)
		if err := u.do(); err != nil {
			c.logf("end of %s failed: %v", u.what, err)
		}
	}
	c.undos = keep
}

func (c *chaos) later(min, max time.Duration, what string, do func() error) {
	d := min + time.Duration(c.rng.Int64N(int64(max-min)))
	c.undos = append(c.undos, undo{due: time.Now().Add(d), what: what, do: do})
}

// freeNode draws a pool node with no fault in progress, if fewer than
// maxDisrupted are.
func (c *chaos) freeNode() (string, bool) {
	var free []string
	for _, n := range c.nodes {
		if !c.disrupted[n] {
			free = append(free, n)
		}
	}
	if len(c.nodes)-len(free) >= maxDisrupted || len(free) == 0 {
		return "", false
	}
	return free[c.rng.IntN(len(free))], true
}

func (c *chaos) apply(kind string) (bool, error) {
	ctx, client, ns := c.env.Ctx, c.env.Client, c.env.Namespace
	switch kind {
	case fRollout:
		if c.rng.IntN(4) == 0 {
			name := c.w.statefulSets[c.rng.IntN(len(c.w.statefulSets))]
			c.logf("rollout of statefulset %s", name)
			_, err := client.AppsV1().StatefulSets(ns).Patch(ctx, name, types.MergePatchType, restartPatch(), metav1.PatchOptions{})
			return true, err
		}
		name := c.w.deployments[c.rng.IntN(len(c.w.deployments))]
		c.logf("rollout of deployment %s", name)
		_, err := client.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, restartPatch(), metav1.PatchOptions{})
		return true, err
	case fScale:
		name := c.w.deployments[c.rng.IntN(len(c.w.deployments))]
		n := 1 + c.rng.IntN(6)
		if c.w.isMovable(name) {
			n = min(n, maxMovable)
		}
		c.logf("scale deployment %s to %d", name, n)
		_, err := client.AppsV1().Deployments(ns).Patch(ctx, name, types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)), metav1.PatchOptions{})
		return true, err
	case fCordon, fDrain:
		node, ok := c.freeNode()
		if !ok {
			return false, nil
		}
		c.disrupted[node] = true
		if err := cordon(c.env, node, true); err != nil {
			return true, err
		}
		if kind == fDrain {
			c.logf("drain node %s (cordon, evict its pods through the Eviction API)", node)
			c.background.Add(1)
			go func() { defer c.background.Done(); c.drain(node) }()
		} else {
			c.logf("cordon node %s", node)
		}
		c.later(10*time.Second, 40*time.Second, "uncordon "+node, func() error {
			delete(c.disrupted, node)
			return cordon(c.env, node, false)
		})
		return true, nil
	case fPowerOff, fShutdown:
		node, ok := c.freeNode()
		if !ok {
			return false, nil
		}
		c.disrupted[node] = true
		key, on, off := kubelet.AnnotationPower, "on", "off"
		if kind == fShutdown {
			key, on, off = kubelet.AnnotationShutdown, "false", "true"
		}
		c.logf("%s node %s", kind, node)
		c.later(10*time.Second, 40*time.Second, "power on "+node, func() error {
			delete(c.disrupted, node)
			return annotate(c.env, node, key, on)
		})
		return true, annotate(c.env, node, key, off)
	case fDeleteNode:
		// A terminated instance (sim.huddle.io/terminate, as an Auto
		// Scaling group or Karpenter terminates one): the kubelet is gone,
		// EC2 detaches its volumes, and the cloud node lifecycle
		// controller deletes its Node once it is NotReady; a new node
		// replaces it.
		node, ok := c.freeNode()
		if !ok || len(c.nodes) <= 3 {
			return false, nil
		}
		c.logf("terminate node %s (the cloud deletes its Node) and add a replacement", node)
		if err := annotate(c.env, node, kubelet.AnnotationTerminate, "true"); err != nil {
			return true, err
		}
		c.nodes = slices.DeleteFunc(c.nodes, func(n string) bool { return n == node })
		c.nodes = append(c.nodes, c.env.AddNodes(1, simtest.NodeOptions{})...)
		return true, nil
	case fNewNode:
		added := c.env.AddNodes(1, simtest.NodeOptions{})
		c.nodes = append(c.nodes, added...)
		c.logf("new node %s", added[0])
		return true, nil
	case fFillHome:
		return c.fillHome()
	case fKillHuddle:
		if time.Since(c.lastKill) < 10*time.Second {
			return false, nil
		}
		pods, err := client.CoreV1().Pods(cluster.HuddleNamespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=huddle"})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		victim := pods.Items[c.rng.IntN(len(pods.Items))].Name
		if c.rng.IntN(2) == 0 {
			if l, err := c.env.Cluster.HuddleLeader(ctx); err == nil {
				victim = l
			}
		}
		c.lastKill = time.Now()
		c.restarts++
		c.logf("SIGKILL huddle pod %s (deleted with grace 0)", victim)
		err = client.CoreV1().Pods(cluster.HuddleNamespace).Delete(ctx, victim, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))})
		if apierrors.IsNotFound(err) {
			err = nil
		}
		return true, err
	case fJob:
		cl := c.w.claims[c.rng.IntN(len(c.w.claims))]
		name := fmt.Sprintf("j-%d", c.w.jobs)
		c.w.jobs++
		c.logf("job %s on claim %s", name, cl)
		_, err := client.BatchV1().Jobs(ns).Create(ctx, job(c.env, name, cl), metav1.CreateOptions{})
		return true, err
	}
	return false, fmt.Errorf("unknown fault %q", kind)
}

func restartPatch() []byte {
	return []byte(fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{"chaos.huddle.io/restart":%q}}}}}`, time.Now().Format(time.RFC3339Nano)))
}

// fillHome fills the home of a huddle allowed to move with a pod bound
// there directly, then scales the huddle's Deployment up by two: the new
// members do not fit at home, so the huddle must move (spec.move:
// WhenStuck).
func (c *chaos) fillHome() (bool, error) {
	ctx, client, ns := c.env.Ctx, c.env.Client, c.env.Namespace
	i := c.rng.IntN(len(c.w.movable))
	claim := c.w.movable[i]
	h, err := c.env.Huddle(claim)
	if err != nil || h.Status.Home == "" || c.disrupted[h.Status.Home] {
		return false, err
	}
	home := h.Status.Home
	dep := fmt.Sprintf("a%s", claim[1:]) // d<g>-4 is a<g>-4's claim
	d, err := client.AppsV1().Deployments(ns).Get(ctx, dep, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	// Two more members, as long as the huddle stays small enough to fit
	// a node: larger, it might fit no node at all, and its pods would wait
	// however huddle behaved.
	n := ptr.Deref(d.Spec.Replicas, 1) + 2
	if n > maxMovable {
		return false, nil
	}
	node, err := client.CoreV1().Nodes().Get(ctx, home, metav1.GetOptions{})
	if err != nil {
		return false, err
	}
	pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + home})
	if err != nil {
		return false, err
	}
	free := node.Status.Allocatable.Cpu().MilliValue()
	for _, p := range pods.Items {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		for _, ct := range p.Spec.Containers {
			free -= ct.Resources.Requests.Cpu().MilliValue()
		}
	}
	if free < 300 {
		return false, nil
	}
	c.disrupted[home] = true
	c.fills++
	name := fmt.Sprintf("filler-%d", c.fills)
	filler := c.env.Pod(name)
	filler.Spec.NodeName = home
	filler.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = *resource.NewMilliQuantity(free-200, resource.DecimalSI)
	if _, err := client.CoreV1().Pods(ns).Create(ctx, filler, metav1.CreateOptions{}); err != nil {
		delete(c.disrupted, home)
		return true, err
	}
	c.logf("fill home %s of huddle %s (pod %s, %dm CPU) and scale deployment %s to %d: it must move", home, claim, name, free-200, dep, n)
	if _, err := client.AppsV1().Deployments(ns).Patch(ctx, dep, types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)), metav1.PatchOptions{}); err != nil {
		return true, err
	}
	c.later(30*time.Second, 60*time.Second, "delete "+name+" from "+home, func() error {
		delete(c.disrupted, home)
		err := client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
	return true, nil
}

// drain evicts, through the Eviction API, every pod on node that a
// controller recreates (kubectl drain refuses bare pods without --force),
// retrying refusals (429) for up to a minute.
func (c *chaos) drain(node string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for ctx.Err() == nil {
		pods, err := c.env.Client.CoreV1().Pods(c.env.Namespace).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
		if err != nil {
			return
		}
		left := 0
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || metav1.GetControllerOf(&p) == nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			left++
			ev := &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}, DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}}}
			_ = c.env.Client.PolicyV1().Evictions(p.Namespace).Evict(ctx, ev)
		}
		if left == 0 {
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func cordon(env *simtest.Env, node string, on bool) error {
	_, err := env.Client.CoreV1().Nodes().Patch(env.Ctx, node, types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"unschedulable":%v}}`, on)), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func annotate(env *simtest.Env, node, key, value string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, key, value)
	_, err := env.Client.CoreV1().Nodes().Patch(env.Ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
