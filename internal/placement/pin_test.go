package placement

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func gatedPod() *corev1.Pod {
	p := &corev1.Pod{}
	p.Name = "p"
	p.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "other.io/gate"}, {Name: Gate}}
	return p
}

func hostname(n string) string { return "host-" + n }

func TestApplyPinHome(t *testing.T) {
	out := Apply(gatedPod(), Decision{Action: PinHome, Nodes: []string{"n1"}, Claim: "ns/data"}, hostname)
	want := []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"n1"}}}}}
	if got := out.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms; !reflect.DeepEqual(got, want) {
		t.Fatalf("terms %+v, want %+v", got, want)
	}
	if HasGate(out) || len(out.Spec.SchedulingGates) != 1 {
		t.Fatalf("gates %v: want only other.io/gate left", out.Spec.SchedulingGates)
	}
	if got := out.Annotations[AnnotationPinnedBy]; got != "claim ns/data home n1" {
		t.Fatalf("pinned-by %q", got)
	}
}

// TestApplyNarrowsEveryTerm: existing terms are ORed; the pin must hold in
// each, so it is added to every one.
func TestApplyNarrowsEveryTerm(t *testing.T) {
	p := gatedPod()
	zone := func(z string) corev1.NodeSelectorTerm {
		return corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{z}}}}
	}
	p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{zone("a"), zone("b")},
	}}}
	out := Apply(p, Decision{Action: PinCandidates, Nodes: []string{"n1", "n2"}, Claim: "ns/data"}, hostname)
	for i, term := range out.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if len(term.MatchExpressions) != 2 {
			t.Fatalf("term %d: %+v", i, term)
		}
		pin := term.MatchExpressions[1]
		if pin.Key != corev1.LabelHostname || !reflect.DeepEqual(pin.Values, []string{"host-n1", "host-n2"}) {
			t.Fatalf("term %d pin %+v", i, pin)
		}
	}
	if len(p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions) != 1 {
		t.Fatal("Apply changed its input")
	}
}

func TestApplyHoldKeepsGate(t *testing.T) {
	out := Apply(gatedPod(), Decision{Action: Hold, Message: "why"}, hostname)
	if !HasGate(out) || out.Annotations[AnnotationHeld] != "why" || out.Spec.Affinity != nil {
		t.Fatalf("hold changed the pod: %+v", out)
	}
	rel := Apply(out, Decision{Action: Release, Message: "not shared"}, hostname)
	if HasGate(rel) || rel.Spec.Affinity != nil || rel.Annotations[AnnotationHeld] != "" || rel.Annotations[AnnotationReleased] != "not shared" {
		t.Fatalf("release: %+v", rel)
	}
}

// TestUnpinnedRoundTrip: whatever huddle pinned (a home, one candidate,
// several), Unpinned gives back exactly the affinity the pod's owner wrote,
// every term and every requirement of it.
func TestUnpinnedRoundTrip(t *testing.T) {
	expr := func(k string, v ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: k, Operator: corev1.NodeSelectorOpIn, Values: v}
	}
	field := func(v string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{v}}
	}
	users := map[string]*corev1.NodeSelector{
		"none":                     nil,
		"one term, one expression": {NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{expr(corev1.LabelTopologyZone, "a")}}}},
		"several terms": {NodeSelectorTerms: []corev1.NodeSelectorTerm{
			{MatchExpressions: []corev1.NodeSelectorRequirement{expr(corev1.LabelTopologyZone, "a"), expr("pool", "gpu")}},
			{MatchExpressions: []corev1.NodeSelectorRequirement{expr(corev1.LabelHostname, "host-n1", "host-n2")}},
			{MatchFields: []corev1.NodeSelectorRequirement{field("n3")}},
			{MatchExpressions: []corev1.NodeSelectorRequirement{expr("disk", "ssd")}, MatchFields: []corev1.NodeSelectorRequirement{field("n4")}},
		}},
	}
	pins := map[string]Decision{
		"home":            {Action: PinHome, Nodes: []string{"n1"}, Claim: "ns/data"},
		"move target":     {Action: PinHome, Nodes: []string{"n2"}, Claim: "ns/data", Reason: ReasonMoveTarget},
		"one candidate":   {Action: PinCandidates, Nodes: []string{"n1"}, Claim: "ns/data"},
		"many candidates": {Action: PinCandidates, Nodes: []string{"n1", "n2", "n3"}, Claim: "ns/data"},
	}
	for uname, user := range users {
		for pname, d := range pins {
			t.Run(uname+"/"+pname, func(t *testing.T) {
				p := gatedPod()
				if user != nil {
					p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: user.DeepCopy()}}
				}
				out := Apply(p, d, hostname)
				got := Unpinned(out.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution, out.Annotations[AnnotationPinnedBy])
				if !reflect.DeepEqual(tidy(got), tidy(user)) {
					t.Fatalf("pinned-by %q: Unpinned gave %+v, want the owner's %+v", out.Annotations[AnnotationPinnedBy], got, user)
				}
			})
		}
	}
}

// tidy drops empty requirement lists, which mean the same as none.
func tidy(s *corev1.NodeSelector) *corev1.NodeSelector {
	if s == nil {
		return nil
	}
	s = s.DeepCopy()
	for i := range s.NodeSelectorTerms {
		t := &s.NodeSelectorTerms[i]
		if len(t.MatchExpressions) == 0 {
			t.MatchExpressions = nil
		}
		if len(t.MatchFields) == 0 {
			t.MatchFields = nil
		}
	}
	return s
}
