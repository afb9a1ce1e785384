package placement

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Names huddle puts on pods.
const (
	// Gate is the scheduling gate the webhook adds to pods in scope.
	Gate = "huddle.io/placement"
	// AnnotationPinnedBy says why a released pod is pinned where it is.
	AnnotationPinnedBy = "huddle.io/pinned-by"
	// AnnotationHeld says why a pod is still gated.
	AnnotationHeld = "huddle.io/held"
	// AnnotationReleased says why a pod was released without a pin.
	AnnotationReleased = "huddle.io/released"
	// AnnotationHeldFor says which node changes can end a hold (see
	// Decision.WaitsOn); the placer looks again at such pods only.
	AnnotationHeldFor = "huddle.io/held-for"
)

// HasGate reports whether pod carries huddle's scheduling gate.
func HasGate(pod *corev1.Pod) bool {
	return slices.ContainsFunc(pod.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == Gate })
}

// Apply returns a copy of pod with d applied: for pins, the required node
// affinity narrowed to d.Nodes, the pinned-by annotation set and the gate
// removed; for Release, the gate removed; for Hold, the held annotation
// set. hostname maps a node name to its kubernetes.io/hostname label.
//
// A single node is pinned with matchFields metadata.name, which the
// scheduler evaluates for that node only; several with the hostname label.
// Narrowing adds the requirement to every existing term, the only change
// the API server allows to a gated pod's affinity.
func Apply(pod *corev1.Pod, d Decision, hostname func(string) string) *corev1.Pod {
	out := pod.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	delete(out.Annotations, AnnotationHeld)
	delete(out.Annotations, AnnotationHeldFor)
	switch d.Action {
	case Hold:
		out.Annotations[AnnotationHeld] = d.Message
		if d.WaitsOn != "" {
			out.Annotations[AnnotationHeldFor] = d.WaitsOn
		}
		return out
	case Release:
		out.Annotations[AnnotationReleased] = d.Message
	case PinHome, PinCandidates:
		narrow(out, requirement(d.Nodes, hostname))
		out.Annotations[AnnotationPinnedBy] = pinnedBy(d)
	}
	out.Spec.SchedulingGates = slices.DeleteFunc(out.Spec.SchedulingGates, func(g corev1.PodSchedulingGate) bool { return g.Name == Gate })
	return out
}

func pinnedBy(d Decision) string {
	if d.Action == PinHome {
		return "claim " + d.Claim + " home " + d.Nodes[0]
	}
	return "claim " + d.Claim + " candidates " + strings.Join(d.Nodes, ",")
}

// term is one requirement, as a term: matchFields or matchExpressions.
func requirement(nodes []string, hostname func(string) string) corev1.NodeSelectorTerm {
	if len(nodes) == 1 {
		return corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{
			Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{nodes[0]},
		}}}
	}
	values := make([]string, len(nodes))
	for i, n := range nodes {
		values[i] = hostname(n)
	}
	return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{
		Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: values,
	}}}
}

func narrow(pod *corev1.Pod, req corev1.NodeSelectorTerm) {
	if pod.Spec.Affinity == nil {
		pod.Spec.Affinity = &corev1.Affinity{}
	}
	if pod.Spec.Affinity.NodeAffinity == nil {
		pod.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	na := pod.Spec.Affinity.NodeAffinity
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil || len(na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms) == 0 {
		na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{req}}
		return
	}
	terms := na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
	for i := range terms {
		terms[i].MatchExpressions = append(terms[i].MatchExpressions, req.MatchExpressions...)
		terms[i].MatchFields = append(terms[i].MatchFields, req.MatchFields...)
	}
}

// PinnedNode returns the node a pod was pinned to alone (a home or a move
// target), from its pinned-by annotation, or "".
func PinnedNode(pinnedBy string) string {
	_, node, ok := strings.Cut(pinnedBy, " home ")
	if !ok {
		return ""
	}
	node, _, _ = strings.Cut(node, " ")
	return node
}

// Unpinned returns a pod's required node affinity without the requirement
// huddle added: the constraints the pod's owner asked for, which any node
// the huddle moves to must meet. Apply adds its requirement last in every
// term, as matchFields metadata.name for one node (a home, a move target,
// or a single candidate) and as a hostname matchExpression for several, so
// only an entry of exactly that form is taken off; anything else is the
// user's and is kept.
func Unpinned(required *corev1.NodeSelector, pinnedBy string) *corev1.NodeSelector {
	if required == nil || pinnedBy == "" {
		return required
	}
	fields := pinnedOneNode(pinnedBy)
	out := &corev1.NodeSelector{}
	for _, t := range required.NodeSelectorTerms {
		t = *t.DeepCopy()
		if fields {
			if k := len(t.MatchFields); k > 0 && t.MatchFields[k-1].Key == metav1.ObjectNameField && t.MatchFields[k-1].Operator == corev1.NodeSelectorOpIn {
				t.MatchFields = t.MatchFields[:k-1]
			}
		} else if k := len(t.MatchExpressions); k > 0 && t.MatchExpressions[k-1].Key == corev1.LabelHostname && t.MatchExpressions[k-1].Operator == corev1.NodeSelectorOpIn {
			t.MatchExpressions = t.MatchExpressions[:k-1]
		}
		if len(t.MatchFields) == 0 && len(t.MatchExpressions) == 0 {
			// The term was huddle's alone: the owner asked for nothing.
			return nil
		}
		out.NodeSelectorTerms = append(out.NodeSelectorTerms, t)
	}
	return out
}

// pinnedOneNode: the pin recorded in pinnedBy went to one node, so Apply
// wrote it as matchFields (see requirement).
func pinnedOneNode(pinnedBy string) bool {
	if PinnedNode(pinnedBy) != "" {
		return true
	}
	_, nodes, ok := strings.Cut(pinnedBy, " candidates ")
	return ok && !strings.Contains(nodes, ",")
}
