// Package placement decides where a gated pod that mounts shared
// ReadWriteOnce claims may run. Decide is a pure function over an Input the
// controller gathers from its informer caches; nothing here talks to the
// API server, so the rules are tested with plain tables.
//
// The rules are the design brief's:
//   - a pod with no shared claim is released untouched;
//   - a huddle's home is the node of a bound, live member; else the node
//     its volume is attached (or attaching) to, if that node is Ready and
//     schedulable; a split huddle's home is the node holding the volume;
//   - home known: pin to home, and wait there if home is full; if home is
//     cordoned, NotReady or gone, keep the pod gated (a pin cannot be
//     undone once the gate is removed) until the members there leave;
//   - two shared claims with different homes: hold the pod, say why;
//   - no home: release only the oldest member, pinned to the nodes where
//     the whole huddle's demand fits (or, if none, where most of it fits,
//     with Fits=False); the others wait until it is bound and follow it.
package placement

import (
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Resources is the part of a resource list placement reasons about: CPU,
// memory and pod slots, and the other resources the scheduler's fit check
// counts (extended resources such as nvidia.com/gpu, hugepages,
// ephemeral storage) in Scalar, which is nil when there are none so the
// common case allocates nothing. A missing scalar is zero.
type Resources struct {
	MilliCPU int64
	Memory   int64
	Pods     int64
	Scalar   map[corev1.ResourceName]int64
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{r.MilliCPU + o.MilliCPU, r.Memory + o.Memory, r.Pods + o.Pods, scalars(r.Scalar, o.Scalar, func(a, b int64) int64 { return a + b })}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{r.MilliCPU - o.MilliCPU, r.Memory - o.Memory, r.Pods - o.Pods, scalars(r.Scalar, o.Scalar, func(a, b int64) int64 { return a - b })}
}

// Times returns r * n.
func (r Resources) Times(n int64) Resources {
	return Resources{r.MilliCPU * n, r.Memory * n, r.Pods * n, scalars(r.Scalar, nil, func(a, _ int64) int64 { return a * n })}
}

// Max returns the larger of r and o in every resource.
func (r Resources) Max(o Resources) Resources {
	return Resources{max(r.MilliCPU, o.MilliCPU), max(r.Memory, o.Memory), max(r.Pods, o.Pods), scalars(r.Scalar, o.Scalar, func(a, b int64) int64 { return max(a, b) })}
}

// scalars combines two scalar maps by f over the union of their names
// (a missing one is zero); nil if both are empty.
func scalars(a, b map[corev1.ResourceName]int64, f func(a, b int64) int64) map[corev1.ResourceName]int64 {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := make(map[corev1.ResourceName]int64, max(len(a), len(b)))
	for k, v := range a {
		out[k] = f(v, b[k])
	}
	for k, v := range b {
		if _, ok := a[k]; !ok {
			out[k] = f(0, v)
		}
	}
	return out
}

// Covers reports whether r is at least o in every resource.
func (r Resources) Covers(o Resources) bool {
	if r.MilliCPU < o.MilliCPU || r.Memory < o.Memory || r.Pods < o.Pods {
		return false
	}
	for k, v := range o.Scalar {
		if v > 0 && r.Scalar[k] < v {
			return false
		}
	}
	return true
}

// Equal reports whether r and o are the same amounts (a missing scalar
// equals zero).
func (r Resources) Equal(o Resources) bool {
	if r.MilliCPU != o.MilliCPU || r.Memory != o.Memory || r.Pods != o.Pods {
		return false
	}
	for k, v := range r.Scalar {
		if o.Scalar[k] != v {
			return false
		}
	}
	for k, v := range o.Scalar {
		if r.Scalar[k] != v {
			return false
		}
	}
	return true
}

// FromList converts a resource list.
func FromList(l corev1.ResourceList) Resources {
	r := Resources{}
	for name, q := range l {
		switch name {
		case corev1.ResourceCPU:
			r.MilliCPU = q.MilliValue()
		case corev1.ResourceMemory:
			r.Memory = q.Value()
		case corev1.ResourcePods:
			r.Pods = q.Value()
		default:
			if q.IsZero() {
				continue
			}
			if r.Scalar == nil {
				r.Scalar = map[corev1.ResourceName]int64{}
			}
			r.Scalar[name] = q.Value()
		}
	}
	return r
}

// Member is a pod that mounts a claim.
type Member struct {
	Name    string
	Created time.Time
	// Node is the node the pod is bound to ("" if not bound).
	Node string
	// Gated: the pod still carries huddle's scheduling gate.
	Gated bool
	// Pinned: huddle released it with a pin (it carries huddle.io/pinned-by);
	// PinnedTo is the node of a one-node pin (home or move target).
	Pinned   bool
	PinnedTo string
	// Running: the pod runs (phase Running).
	Running bool
	// UnschedulableSince is when the scheduler last found no node for the
	// pod (zero if it has not, or the pod is bound).
	UnschedulableSince time.Time
	// Done: Succeeded or Failed; holds nothing.
	Done bool
	// Terminating: deletion requested; still holds its node and volume.
	Terminating bool
	Requests    Resources
	// Controlled: the pod's controller is of a kind known to recreate an
	// evicted or deleted pod (a ReplicaSet, a StatefulSet, or a kind the
	// operator listed), so huddle may evict it and its replacement is
	// gated and placed again. Not a DaemonSet (its pods belong to their
	// node), not a Job (an eviction counts against its backoffLimit).
	Controlled bool
	// OwnerKind is the group/kind of the pod's controller ("apps/ReplicaSet",
	// "batch/Job"; "" for a bare pod), to say why a member is not evicted.
	OwnerKind string
	// Owner is the key of the workload that creates this pod (a
	// Deployment, StatefulSet, Job or bare ReplicaSet), "" for none.
	Owner string
	// Constraints are the pod's node selector, required node affinity and
	// tolerations; candidate nodes must satisfy every member's.
	Constraints *Constraints
	// Others are the other shared claims the pod mounts: a huddle placed
	// fresh, or moved, must go where they live, or the member could never
	// run with both.
	Others []OtherClaim
}

// OtherClaim is another shared claim a member mounts, as far as the
// placement of this claim's huddle cares.
type OtherClaim struct {
	// Key is namespace/name.
	Key string
	// Home is where that claim's huddle lives (or is moving to), "" if
	// it has no home yet.
	Home string
	// FirstMember, when it has no home, names its member released first
	// and not yet bound (see FirstInFlight): the home it will set is not
	// known yet.
	FirstMember string
}

// live: the member counts toward the huddle's home and demand.
func (m *Member) live() bool { return !m.Done }

// Constraints are the scheduling constraints of a pod that decide which
// nodes it may use.
type Constraints struct {
	NodeSelector map[string]string
	Affinity     *corev1.NodeSelector // required during scheduling
	Tolerations  []corev1.Toleration
}

// Owner is a workload that creates members.
type Owner struct {
	// MaxPods is how many pods that mount the claim it may run at once:
	// Deployment replicas plus maxSurge (RollingUpdate), StatefulSet
	// replicas, Job parallelism, ReplicaSet replicas; 0 when its pods do
	// not all mount the claim (a StatefulSet's volumeClaimTemplates, a
	// generic ephemeral volume), so only its members count.
	MaxPods int64
	// PerPod is the requests of one of its pods, from its template.
	PerPod Resources
}

// Claim is one claim the pod mounts, with its huddle.
type Claim struct {
	// Key is namespace/name.
	Key string
	// Shared: the claim is in scope and its volume attaches to one node at
	// a time. NotShared says why not, for the pod's annotation.
	Shared    bool
	NotShared string
	// Missing: the claim does not exist (yet).
	Missing bool
	// VolumeNodes are the nodes a VolumeAttachment says the volume is
	// attached or attaching to; Attached those with status.attached.
	VolumeNodes []string
	Attached    []string
	// Detaching are the nodes of VolumeAttachments being deleted: the
	// volume is still on them until the detach finishes.
	Detaching []string
	// StaleAttachment, if set, is a deleted node the volume was released
	// from (failover deleted its VolumeAttachment) that the attach/detach
	// controller may still count as attached: until its next state sync
	// it refuses to attach the volume anywhere else.
	StaleAttachment *StaleAttachment
	// VolumeAffinity is the bound PV's node affinity (its zone), or for a
	// claim not bound yet its StorageClass's allowedTopologies.
	VolumeAffinity *corev1.NodeSelector
	// Driver is the CSI driver of the volume (the class's provisioner
	// while unbound): a node at its attach limit for it cannot take the
	// huddle unless the volume is already attached there.
	Driver   string
	Headroom Resources
	// Members are all pods that mount the claim, including the one being
	// decided.
	Members []Member
	// Owners are the workloads of the members, by key.
	Owners map[string]Owner
	// MoveTarget is the node an unfinished move of the huddle goes to
	// (the Huddle's status.lastMove), "" if none: members are pinned there
	// and the ones elsewhere are evicted.
	MoveTarget string
	// Placing names the member released first into a huddle with no home,
	// as recorded on the Huddle (empty if none or expired). Until it is
	// bound no other member is released: the record is written with
	// optimistic concurrency, so two placers with different cache views
	// cannot both release a first member.
	Placing string
	// PlacingSince is when Placing was recorded: a gated member of that
	// name created later is a new pod of a reused name (a StatefulSet's),
	// not the one released, and does not hold the others.
	PlacingSince time.Time
}

// StaleAttachment is a volume's attachment to a deleted node that the
// attach/detach controller may remember until Until.
type StaleAttachment struct {
	Node  string
	Until time.Time
}

// Node is a node as placement sees it.
type Node struct {
	Name     string
	Labels   map[string]string
	Taints   []corev1.Taint
	Ready    bool
	Cordoned bool
	// Allocatable and Requested (sum of requests of pods bound there that
	// are not done).
	Allocatable Resources
	Requested   Resources
	// AttachLimit is, per CSI driver, how many of its volumes the node
	// can have attached (its CSINode); a driver not listed has no limit.
	// Attached counts, per driver, the volumes attached or attaching
	// there (its VolumeAttachments).
	AttachLimit map[string]int64
	Attached    map[string]int64
}

// Free is what is left on the node.
func (n *Node) Free() Resources { return n.Allocatable.Sub(n.Requested) }

// Nodes gives placement access to the cluster's nodes.
type Nodes interface {
	// Get returns the node called name, or nil.
	Get(name string) *Node
	// Len is the number of nodes; At returns the i-th, for scans that
	// start at any offset.
	Len() int
	At(i int) *Node
}

// Input is everything Decide needs for one gated pod.
type Input struct {
	// Pod is the pod being decided; it is also among its claims' members.
	Pod Member
	// Claims are the claims the pod mounts, in the order of its volumes.
	Claims []Claim
	Nodes  Nodes
	Now    time.Time
	// MissingClaimGrace is how long a pod may wait for a claim that does
	// not exist before it is released anyway.
	MissingClaimGrace time.Duration
	// MaxCandidates caps the nodes of a fresh placement's pin.
	MaxCandidates int
}
