package chaos

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	huddlev1 "github.com/huddle-io/huddle/api/v1alpha1"
	"github.com/huddle-io/huddle/internal/placement"
	"github.com/huddle-io/huddle/internal/sim/cluster"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// Kinds of violation, as the summary counts them.
const (
	vMultiAttach     = "MultiAttach"         // a pod huddle pinned reported a Multi-Attach error
	vDoubleAttach    = "DoubleAttach"        // one volume attached to two nodes
	vEvictedAtHome   = "EvictedAtHome"       // huddle evicted a member at its home
	vDeleted         = "DeletedNotEvicted"   // huddle deleted a running pod instead of evicting it
	vNotRecreated    = "EvictedNotRecreated" // huddle evicted a pod no controller recreates
	vStuckGated      = "StuckGated"          // a pod gated past -gated
	vStuckUnbound    = "StuckUnbound"        // a pinned pod unbound past -unbound
	vNotHuddled      = "NotHuddled"          // a huddle not Huddled within -settle
	vLostReplica     = "LostReplica"         // a workload short of replicas within -settle
	doubleAttachHold = 2 * time.Second       // see checker.checkAttachments
	atHomeConfirm    = 3 * time.Second       // see checker.confirmAtHome
)

// violation is one broken invariant.
type violation struct {
	At   time.Duration // since the run started
	Kind string
	What string
}

// podRecord is what the checker remembers of a pod, also after it is gone.
type podRecord struct {
	last *corev1.Pod
	// livePhase is its phase before it was deleted.
	livePhase corev1.PodPhase
	// pinned: the pod carried huddle.io/pinned-by at some point.
	pinned bool
	// unboundSince: first seen released with a pin and not bound.
	unboundSince           time.Time
	gatedDone, unboundDone bool
	multiAttachDone        bool
}

// atHomeCheck is an eviction of a pod at its huddles' homes, confirmed
// (or not) once the Huddles' status has had time to catch up.
type atHomeCheck struct {
	due       time.Time
	pod, node string
	claims    []string
	how       string
}

// checker watches a run's namespace and checks the invariants that must
// hold at every moment. Its methods are safe for concurrent use.
type checker struct {
	env   *simtest.Env
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup

	mu         sync.Mutex
	pods       map[string]*podRecord // by name
	uids       map[string]bool
	events     map[string]int32                // event UID → count handled
	attached   map[string]map[string]time.Time // pv → node → attached since
	doubleDone map[string]bool
	huddles    map[string]*huddlev1.Huddle // by claim
	atHome     []atHomeCheck
	violations []violation
	unpinnedMA int // Multi-Attach reports of pods huddle did not place
	evictions  int // by huddle, accepted by the Eviction API
	// failover counts HomeFenced and HomeDeleted events (huddles whose
	// home was fenced, whose volume was released from a deleted Node).
	failover    map[string]int
	auditOffset int64
	// deletes: when each pod name was deleted or evicted (by anyone),
	// from the audit log.
	deletes map[string][]time.Time
	// terminating: the UIDs of pods seen with a deletion requested.
	terminating map[types.UID]bool
	// nodeOf: the node each pod UID was bound to; goneNodes: the nodes
	// whose Node object was deleted while NotReady, and when (failover
	// deletes their pods from then on).
	nodeOf    map[types.UID]string
	goneNodes map[string]time.Time
	auditUser string
}

func newChecker(env *simtest.Env) *checker {
	c := &checker{
		env: env, start: time.Now(), stop: make(chan struct{}),
		pods: map[string]*podRecord{}, uids: map[string]bool{}, events: map[string]int32{},
		attached: map[string]map[string]time.Time{}, doubleDone: map[string]bool{}, huddles: map[string]*huddlev1.Huddle{}, deletes: map[string][]time.Time{},
		terminating: map[types.UID]bool{}, nodeOf: map[types.UID]string{}, goneNodes: map[string]time.Time{}, failover: map[string]int{},
		auditUser: "system:serviceaccount:" + cluster.HuddleNamespace + ":",
	}
	if st, err := os.Stat(env.Cluster.AuditLog); err == nil {
		c.auditOffset = st.Size()
	}
	ns := informers.NewSharedInformerFactoryWithOptions(env.Client, 0, informers.WithNamespace(env.Namespace))
	all := informers.NewSharedInformerFactory(env.Client, 0)
	podFn := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			c.onPod(p)
		}
	}
	_, _ = ns.Core().V1().Pods().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: podFn, UpdateFunc: func(_, o any) { podFn(o) }, DeleteFunc: podFn})
	evFn := func(obj any) {
		if e, ok := obj.(*corev1.Event); ok {
			c.onEvent(e)
		}
	}
	_, _ = ns.Core().V1().Events().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: evFn, UpdateFunc: func(_, o any) { evFn(o) }})
	vaFn := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if va, ok := obj.(*storagev1.VolumeAttachment); ok {
			c.onAttachment(va, false)
		}
	}
	_, _ = all.Storage().V1().VolumeAttachments().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: vaFn, UpdateFunc: func(_, o any) { vaFn(o) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if va, ok := obj.(*storagev1.VolumeAttachment); ok {
				c.onAttachment(va, true)
			}
		},
	})
	_, _ = all.Core().V1().Nodes().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			// Only a node deleted while its kubelet no longer reported
			// Ready lets huddle delete its pods, and only from then on
			// (less a second: this watch and huddle's see the deletion
			// at about the same time).
			if n, ok := obj.(*corev1.Node); ok && !nodeReady(n) {
				c.mu.Lock()
				c.goneNodes[n.Name] = time.Now().Add(-time.Second)
				c.mu.Unlock()
			}
		},
	})
	ns.Start(c.stop)
	all.Start(c.stop)
	ns.WaitForCacheSync(c.stop)
	all.WaitForCacheSync(c.stop)
	c.wg.Add(1)
	go c.loop()
	return c
}

// close stops the watches after a last look at the audit log.
func (c *checker) close() {
	close(c.stop)
	c.wg.Wait()
	c.readAudit()
}

func (c *checker) addLocked(kind, format string, args ...any) {
	c.violations = append(c.violations, violation{At: time.Since(c.start), Kind: kind, What: fmt.Sprintf(format, args...)})
}

func (c *checker) add(kind, format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.addLocked(kind, format, args...)
}

func (c *checker) onPod(p *corev1.Pod) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.pods[p.Name]
	if r == nil || (r.last != nil && r.last.UID != p.UID) {
		r = &podRecord{}
		c.pods[p.Name] = r
	}
	r.last = p
	if p.DeletionTimestamp == nil {
		r.livePhase = p.Status.Phase
	}
	c.uids[string(p.UID)] = true
	if p.DeletionTimestamp != nil {
		c.terminating[p.UID] = true
	}
	if p.Spec.NodeName != "" {
		c.nodeOf[p.UID] = p.Spec.NodeName
	}
	if p.Annotations[placement.AnnotationPinnedBy] != "" {
		r.pinned = true
	}
}

// onEvent checks Multi-Attach reports: none may be about a pod huddle
// pinned.
func (c *checker) onEvent(e *corev1.Event) {
	if e.Reason == "EvictedAwayFromHome" && e.InvolvedObject.Kind == "Pod" {
		// The event names the pod's node and the home it was away from.
		c.mu.Lock()
		seen := c.events[string(e.UID)] > 0
		c.events[string(e.UID)] = 1
		c.mu.Unlock()
		if m := evictedRe.FindStringSubmatch(e.Message); !seen && m != nil && m[1] == m[3] {
			c.add(vEvictedAtHome, "pod %s evicted at its home: %s", e.InvolvedObject.Name, e.Message)
		}
		return
	}
	if (e.Reason == "HomeFenced" || e.Reason == "HomeDeleted") && e.InvolvedObject.Kind == "Huddle" {
		// Failover's two paths, counted so the summary shows both ran.
		c.mu.Lock()
		if c.events[string(e.UID)] == 0 {
			c.failover[e.Reason]++
		}
		c.events[string(e.UID)] = 1
		c.mu.Unlock()
		return
	}
	if e.Reason != "FailedAttachVolume" || !strings.Contains(e.Message, "Multi-Attach") || e.InvolvedObject.Kind != "Pod" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.events[string(e.UID)] >= max(e.Count, 1) {
		return
	}
	c.events[string(e.UID)] = max(e.Count, 1)
	r := c.pods[e.InvolvedObject.Name]
	if r == nil || r.last == nil || string(r.last.UID) != string(e.InvolvedObject.UID) || !r.pinned {
		c.unpinnedMA++
		return
	}
	if r.multiAttachDone {
		return
	}
	r.multiAttachDone = true
	c.addLocked(vMultiAttach, "pod %s on %s, pinned by huddle (%q), reports: %s", r.last.Name, r.last.Spec.NodeName, r.last.Annotations[placement.AnnotationPinnedBy], e.Message)
}

// onAttachment tracks which nodes each volume is attached to, as the
// VolumeAttachments' status.attached says.
func (c *checker) onAttachment(va *storagev1.VolumeAttachment, deleted bool) {
	pv := ptr.Deref(va.Spec.Source.PersistentVolumeName, "")
	if pv == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	nodes := c.attached[pv]
	if nodes == nil {
		nodes = map[string]time.Time{}
		c.attached[pv] = nodes
	}
	if deleted || !va.Status.Attached {
		delete(nodes, va.Spec.NodeName)
		return
	}
	if _, ok := nodes[va.Spec.NodeName]; !ok {
		nodes[va.Spec.NodeName] = time.Now()
	}
}

// checkAttachments reports a volume attached to two nodes at once for
// longer than doubleAttachHold. The simulated attacher detaches in the
// cloud, then removes its finalizer, which deletes the VolumeAttachment:
// the hold covers that write, during
// which the cloud (which refuses a second attachment) may already have
// attached the volume to the next node.
func (c *checker) checkAttachmentsLocked(now time.Time) {
	for pv, nodes := range c.attached {
		if len(nodes) < 2 || c.doubleDone[pv] {
			continue
		}
		var names []string
		both := true
		for n, since := range nodes {
			names = append(names, n)
			both = both && now.Sub(since) > doubleAttachHold
		}
		if both {
			sort.Strings(names)
			c.doubleDone[pv] = true
			c.addLocked(vDoubleAttach, "volume %s attached to %s at once (VolumeAttachments status.attached)", pv, strings.Join(names, " and "))
		}
	}
}

// checkPodsLocked reports pods gated or pinned-but-unbound past their
// bounds.
func (c *checker) checkPodsLocked(now time.Time) {
	for _, r := range c.pods {
		p := r.last
		if p == nil || p.DeletionTimestamp != nil {
			continue
		}
		if placement.HasGate(p) {
			if !r.gatedDone && now.Sub(p.CreationTimestamp.Time) > *flagGated {
				r.gatedDone = true
				c.addLocked(vStuckGated, "pod %s gated for more than %s (held: %q)", p.Name, *flagGated, p.Annotations[placement.AnnotationHeld])
			}
			continue
		}
		if p.Spec.NodeName != "" || p.Annotations[placement.AnnotationPinnedBy] == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			r.unboundSince = time.Time{}
			continue
		}
		if r.unboundSince.IsZero() {
			r.unboundSince = now
		}
		if !r.unboundDone && now.Sub(r.unboundSince) > *flagUnbound {
			r.unboundDone = true
			c.addLocked(vStuckUnbound, "pod %s pinned (%q) and not bound for more than %s: %s", p.Name, p.Annotations[placement.AnnotationPinnedBy], *flagUnbound, scheduledMessage(p))
		}
	}
}

func scheduledMessage(p *corev1.Pod) string {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled {
			return cond.Reason + ": " + cond.Message
		}
	}
	return "no PodScheduled condition"
}

// loop polls the Huddles (every 500ms: their status is compared with
// evictions), reads the audit log, and runs the time-based checks.
func (c *checker) loop() {
	defer c.wg.Done()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-tick.C:
		}
		list := &huddlev1.HuddleList{}
		if err := c.env.Typed.List(c.env.Ctx, list, client.InNamespace(c.env.Namespace)); err == nil {
			c.mu.Lock()
			for i := range list.Items {
				c.huddles[list.Items[i].Name] = &list.Items[i]
			}
			c.mu.Unlock()
		}
		c.readAudit()
		now := time.Now()
		c.mu.Lock()
		c.checkAttachmentsLocked(now)
		c.checkPodsLocked(now)
		c.confirmAtHomeLocked(now)
		c.mu.Unlock()
	}
}

// auditEvent is the part of an audit.k8s.io/v1 Event the soak reads.
type auditEvent struct {
	Verb string `json:"verb"`
	User struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource, Namespace, Name, Subresource string
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	// RequestObject is a delete's DeleteOptions (the audit policy logs
	// pod deletions at level Request): its UID precondition names the
	// incarnation deleted, which a StatefulSet pod's name does not.
	RequestObject *struct {
		Preconditions *struct {
			UID *types.UID `json:"uid"`
		} `json:"preconditions"`
	} `json:"requestObject"`
	Received time.Time `json:"requestReceivedTimestamp"`
}

// readAudit reads the audit log's new lines: every pod huddle deleted or
// evicted.
func (c *checker) readAudit() {
	f, err := os.Open(c.env.Cluster.AuditLog)
	if err != nil {
		return
	}
	defer f.Close()
	if _, err := f.Seek(c.auditOffset, io.SeekStart); err != nil {
		return
	}
	r := bufio.NewReaderSize(f, 1<<20)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return // a partial last line is read again next time
		}
		c.auditOffset += int64(len(line))
		var e auditEvent
		if json.Unmarshal(line, &e) != nil || e.ObjectRef == nil || e.ResponseStatus == nil {
			continue
		}
		if e.ObjectRef.Namespace != c.env.Namespace || e.ObjectRef.Resource != "pods" {
			continue
		}
		if strings.HasPrefix(e.User.Username, c.auditUser) {
			c.onHuddleRequest(e)
		}
		if e.ResponseStatus.Code < 300 {
			c.mu.Lock()
			c.deletes[e.ObjectRef.Name] = append(c.deletes[e.ObjectRef.Name], e.Received)
			c.mu.Unlock()
		}
	}
}

// deletedNodeLocked says whether node had been deleted while NotReady by
// at (failover releases the volumes of such a node: deleting its pods is
// no eviction).
func (c *checker) deletedNodeLocked(node string, at time.Time) bool {
	gone, ok := c.goneNodes[node]
	return ok && !at.Before(gone)
}

// onHuddleRequest checks one deletion or eviction huddle made.
func (c *checker) onHuddleRequest(e auditEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	name, code := e.ObjectRef.Name, e.ResponseStatus.Code
	r := c.pods[name]
	var p *corev1.Pod
	if r != nil {
		p = r.last
	}
	switch {
	case e.Verb == "delete" && e.ObjectRef.Subresource == "" && code < 300:
		// A delete of an earlier incarnation of the name (a StatefulSet
		// pod recreated meanwhile) is judged by that incarnation.
		if ro := e.RequestObject; ro != nil && ro.Preconditions != nil && ro.Preconditions.UID != nil && (p == nil || *ro.Preconditions.UID != p.UID) {
			if uid := *ro.Preconditions.UID; !c.terminating[uid] && !c.deletedNodeLocked(c.nodeOf[uid], e.Received) {
				c.addLocked(vDeleted, "huddle deleted an earlier pod %s (uid %s) that was not terminating, instead of evicting it through the Eviction API", name, *ro.Preconditions.UID)
			}
			return
		}
		// Deleting a pod that is already terminating (a fenced node's: an
		// earlier deletion or eviction of this pod is in the audit log),
		// was never bound (a pin that cannot bind) or is bound to a Node
		// that was deleted (failover releases its volume) is no eviction.
		if p == nil || p.Spec.NodeName == "" || c.deletedNodeLocked(p.Spec.NodeName, e.Received) || r.livePhase == corev1.PodSucceeded || r.livePhase == corev1.PodFailed {
			return
		}
		created := p.CreationTimestamp.Add(-time.Second) // second precision
		for _, at := range c.deletes[name] {
			if at.Before(e.Received) && at.After(created) {
				return
			}
		}
		c.addLocked(vDeleted, "huddle deleted pod %s, %s on %s, instead of evicting it through the Eviction API", name, r.livePhase, p.Spec.NodeName)
	case e.Verb == "create" && e.ObjectRef.Subresource == "eviction" && code < 300:
		c.evictions++
		if p == nil {
			return
		}
		if owner := metav1.GetControllerOf(p); owner == nil || (owner.Kind != "ReplicaSet" && owner.Kind != "StatefulSet") {
			what := "no controller"
			if owner != nil {
				what = "controller " + owner.Kind + " " + owner.Name
			}
			c.addLocked(vNotRecreated, "huddle evicted pod %s (%s), which nothing recreates", name, what)
		}
		claims := podClaims(p)
		if p.Spec.NodeName != "" && len(claims) > 0 && c.atHomeLocked(p.Spec.NodeName, claims) {
			c.atHome = append(c.atHome, atHomeCheck{due: time.Now().Add(atHomeConfirm), pod: name, node: p.Spec.NodeName, claims: claims, how: c.homesLocked(claims)})
		}
	}
}

// effectiveHome is where repair brings a huddle's members: a move's
// target while it moves, else home.
func effectiveHome(h *huddlev1.Huddle) string {
	if mv := h.Status.LastMove; mv != nil && mv.Finished == nil && mv.To != "" {
		return mv.To
	}
	return h.Status.Home
}

// atHomeLocked reports whether node is the effective home of every one
// of claims, as the Huddles last said.
func (c *checker) atHomeLocked(node string, claims []string) bool {
	for _, cl := range claims {
		h := c.huddles[cl]
		if h == nil || effectiveHome(h) != node {
			return false
		}
	}
	return true
}

func (c *checker) homesLocked(claims []string) string {
	var out []string
	for _, cl := range claims {
		if h := c.huddles[cl]; h != nil {
			out = append(out, fmt.Sprintf("Huddle %s: home %s, phase %s", cl, h.Status.Home, h.Status.Phase))
		}
	}
	return strings.Join(out, "; ")
}

// confirmAtHomeLocked reports the evictions at home whose Huddles still
// say, atHomeConfirm later, that the pod's node is home: not a status
// that had not caught up with a home change.
func (c *checker) confirmAtHomeLocked(now time.Time) {
	keep := c.atHome[:0]
	for _, a := range c.atHome {
		if now.Before(a.due) {
			keep = append(keep, a)
			continue
		}
		if c.atHomeLocked(a.node, a.claims) {
			c.addLocked(vEvictedAtHome, "huddle evicted pod %s on %s, its home (%s)", a.pod, a.node, a.how)
		}
	}
	c.atHome = keep
}

var evictedRe = regexp.MustCompile(`bound to (\S+), away from claim (\S+)'s home (\S+?) \(`)

// podClaims lists the claims a pod mounts.
func podClaims(p *corev1.Pod) []string {
	var out []string
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			out = append(out, v.PersistentVolumeClaim.ClaimName)
		}
	}
	return out
}

// snapshot returns the violations so far and the run's counts.
// failoverCounts are the HomeFenced and HomeDeleted events seen.
func (c *checker) failoverCounts() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.failover)
}

func (c *checker) snapshot() (vs []violation, pods, unpinnedMA, evictions int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]violation(nil), c.violations...), len(c.uids), c.unpinnedMA, c.evictions
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
