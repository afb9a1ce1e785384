package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// RepairPolicy says what huddle does with a member bound away from home.
// +kubebuilder:validation:Enum=Evict;Report
type RepairPolicy string

// The repair policies.
const (
	// RepairEvict evicts a member bound away from home, through the
	// Eviction API, so its replacement is placed at home.
	RepairEvict RepairPolicy = "Evict"
	// RepairReport only reports it.
	RepairReport RepairPolicy = "Report"
)

// MovePolicy says whether a huddle that no longer fits its home may move.
// +kubebuilder:validation:Enum=Never;WhenStuck
type MovePolicy string

// The move policies.
const (
	// MoveNever keeps the huddle at home; extra members wait there.
	MoveNever MovePolicy = "Never"
	// MoveWhenStuck moves the whole huddle to a node that fits it once a
	// member has been unschedulable at home for moveAfter.
	MoveWhenStuck MovePolicy = "WhenStuck"
)

// DefaultMoveAfter is spec.moveAfter's default.
const DefaultMoveAfter = 5 * time.Minute

// HuddleSpec is the policy of one huddle. Every field is optional.
// +kubebuilder:validation:XValidation:rule="!has(self.moveAfter) || duration(self.moveAfter) >= duration('0s')",message="spec.moveAfter must not be negative"
type HuddleSpec struct {
	// Repair says what to do with a member bound away from home.
	// +kubebuilder:default=Evict
	// +optional
	Repair RepairPolicy `json:"repair,omitempty"`

	// Move says whether the huddle may move, whole, to another node when it
	// no longer fits its home.
	// +kubebuilder:default=Never
	// +optional
	Move MovePolicy `json:"move,omitempty"`

	// MoveAfter is how long a member must be unschedulable at home before
	// the huddle moves (with move: WhenStuck). Default 5m.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:Pattern=`^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`
	// +optional
	MoveAfter *metav1.Duration `json:"moveAfter,omitempty"`

	// Headroom is kept free at home beyond the members' requests, for
	// surges.
	// +optional
	Headroom *Headroom `json:"headroom,omitempty"`

	// MoveRequest asks for a move of the whole huddle now, whatever
	// spec.move says (kubectl huddle move sets it). huddle acts on each
	// request once (identified by requestedAt), with the same safety rules
	// as an automatic move, and records the outcome in status.moveRequest:
	// Started (status.lastMove follows the move) or Refused, with why.
	// +optional
	MoveRequest *MoveRequest `json:"moveRequest,omitempty"`
}

// MoveRequest is a request to move the whole huddle now.
type MoveRequest struct {
	// To is the node to move to; empty: the node an automatic move would
	// choose (one that fits the whole huddle).
	// +optional
	To string `json:"to,omitempty"`
	// RequestedAt identifies the request: a new time is a new request.
	RequestedAt metav1.Time `json:"requestedAt"`
}

// MoveRequestStatus is what huddle made of the last spec.moveRequest.
type MoveRequestStatus struct {
	// RequestedAt is the request's spec.moveRequest.requestedAt.
	RequestedAt metav1.Time `json:"requestedAt"`
	// Result is Started or Refused.
	Result string `json:"result"`
	// +optional
	Message string `json:"message,omitempty"`
}

// The results of a move request.
const (
	MoveRequestStarted = "Started"
	MoveRequestRefused = "Refused"
)

// Headroom is an amount of resources.
// +kubebuilder:validation:XValidation:rule="!has(self.cpu) || !string(self.cpu).startsWith('-')",message="spec.headroom.cpu must not be negative"
// +kubebuilder:validation:XValidation:rule="!has(self.memory) || !string(self.memory).startsWith('-')",message="spec.headroom.memory must not be negative"
type Headroom struct {
	// CPU, such as 500m.
	// +optional
	CPU *resource.Quantity `json:"cpu,omitempty"`
	// Memory, such as 1Gi.
	// +optional
	Memory *resource.Quantity `json:"memory,omitempty"`
}

// List returns the headroom as a resource list.
func (h *Headroom) List() corev1.ResourceList {
	l := corev1.ResourceList{}
	if h == nil {
		return l
	}
	if h.CPU != nil {
		l[corev1.ResourceCPU] = *h.CPU
	}
	if h.Memory != nil {
		l[corev1.ResourceMemory] = *h.Memory
	}
	return l
}

// Phase is where a huddle stands.
// +kubebuilder:validation:Enum=Placing;Huddled;Pending;Split;Moving;Degraded
type Phase string

// The phases of a huddle.
const (
	// PhasePlacing: no home yet; members are being placed.
	PhasePlacing Phase = "Placing"
	// PhaseHuddled: every member runs at home.
	PhaseHuddled Phase = "Huddled"
	// PhasePending: some members wait at home (gated or unschedulable).
	PhasePending Phase = "Pending"
	// PhaseSplit: members are bound to more than one node.
	PhaseSplit Phase = "Split"
	// PhaseMoving: the huddle is moving to status.lastMove.to.
	PhaseMoving Phase = "Moving"
	// PhaseDegraded: home is not Ready, or a member cannot be placed.
	PhaseDegraded Phase = "Degraded"
)

// Condition types of a Huddle.
const (
	// ConditionHuddled is True when every member runs at home.
	ConditionHuddled = "Huddled"
	// ConditionFits is False when home (or, without one, any node) cannot
	// hold the huddle's whole demand.
	ConditionFits = "Fits"
	// ConditionMoving is True while the huddle moves.
	ConditionMoving = "Moving"
)

// Member is one pod that mounts the claim.
type Member struct {
	// Pod is the pod's name (same namespace as the Huddle).
	Pod string `json:"pod"`
	// Node is where it is bound; empty while gated or pending.
	// +optional
	Node string `json:"node,omitempty"`
	// Phase is the pod's phase.
	Phase corev1.PodPhase `json:"phase"`
	// Ready is the pod's Ready condition.
	Ready bool `json:"ready"`
	// Reason says why it is not running at home, when it is not.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// Move records the huddle's most recent move.
type Move struct {
	From string `json:"from,omitempty"`
	To   string `json:"to"`
	// Started is when the move began; Finished when all members ran at To.
	Started  metav1.Time  `json:"started"`
	Finished *metav1.Time `json:"finished,omitempty"`
	// Result is Succeeded, Abandoned or empty while in progress.
	// +optional
	Result string `json:"result,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// HuddleStatus is what huddle observed and decided.
type HuddleStatus struct {
	// ObservedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Home is the node the claim's volume lives on.
	// +optional
	Home string `json:"home,omitempty"`
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// Members are the pods that mount the claim, by name.
	// +listType=map
	// +listMapKey=pod
	// +optional
	Members []Member `json:"members,omitempty"`
	// MemberCount and ReadyCount summarise Members.
	// +optional
	MemberCount int32 `json:"memberCount"`
	// +optional
	ReadyCount int32 `json:"readyCount"`
	// Demand is what the whole huddle needs on one node: the requests of
	// its members, those their owners will still create (replicas and
	// surge), and spec.headroom.
	// +optional
	Demand corev1.ResourceList `json:"demand,omitempty"`
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	LastMove *Move `json:"lastMove,omitempty"`
	// MoveRequest is the outcome of the last spec.moveRequest.
	// +optional
	MoveRequest *MoveRequestStatus `json:"moveRequest,omitempty"`
}

// Huddle is the set of pods that mount one shared ReadWriteOnce claim; it
// has the claim's name and is owned by it. huddle creates it; create one
// first to set policy.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=hud
// +kubebuilder:printcolumn:name="Claim",type=string,JSONPath=`.metadata.name`
// +kubebuilder:printcolumn:name="Home",type=string,JSONPath=`.status.home`
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.memberCount`
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyCount`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Huddle struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   HuddleSpec   `json:"spec,omitempty"`
	Status HuddleStatus `json:"status,omitempty"`
}

// HuddleList is a list of Huddles.
//
// +kubebuilder:object:root=true
type HuddleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Huddle `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Huddle{}, &HuddleList{})
}
