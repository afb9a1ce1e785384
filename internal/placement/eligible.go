package placement

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// eligibility checks a node against every member's constraints and the
// volumes' node affinity.
type eligibility struct {
	selectors   []labels.Selector
	affinities  []*nodeaffinity.LazyErrorNodeSelector
	tolerations [][]corev1.Toleration
	// only is the one node members' other claims live on ("" for any);
	// nowhere: they live on different nodes.
	only    string
	nowhere bool
	// volumes are the claims' volumes, for attach limits.
	volumes []*Claim
}

func newEligibility(claims []*Claim) *eligibility {
	e := &eligibility{}
	seen := map[string]bool{}
	mine := map[string]bool{}
	for _, c := range claims {
		mine[c.Key] = true
	}
	for _, c := range claims {
		if c.Driver != "" {
			e.volumes = append(e.volumes, c)
		}
		if c.VolumeAffinity != nil {
			e.affinities = append(e.affinities, nodeaffinity.NewLazyErrorNodeSelector(c.VolumeAffinity))
		}
		for i := range c.Members {
			m := &c.Members[i]
			if !m.live() || seen[m.Name] {
				continue
			}
			seen[m.Name] = true
			for _, o := range m.Others {
				switch {
				case mine[o.Key] || o.Home == "" || o.Home == e.only:
				case e.only == "":
					e.only = o.Home
				default:
					e.nowhere = true
				}
			}
			if m.Constraints == nil {
				continue
			}
			k := m.Constraints
			if len(k.NodeSelector) > 0 {
				e.selectors = append(e.selectors, labels.SelectorFromSet(k.NodeSelector))
			}
			if k.Affinity != nil {
				e.affinities = append(e.affinities, nodeaffinity.NewLazyErrorNodeSelector(k.Affinity))
			}
			e.tolerations = append(e.tolerations, k.Tolerations)
		}
	}
	return e
}

func (e *eligibility) allows(n *Node) bool {
	if !n.Ready || n.Cordoned || e.nowhere || (e.only != "" && n.Name != e.only) || !e.attachable(n) {
		return false
	}
	set := labels.Set(n.Labels)
	for _, s := range e.selectors {
		if !s.Matches(set) {
			return false
		}
	}
	if len(e.affinities) > 0 {
		node := &corev1.Node{}
		node.Name, node.Labels = n.Name, n.Labels
		for _, a := range e.affinities {
			if ok, _ := a.Match(node); !ok {
				return false
			}
		}
	}
	for _, tols := range e.tolerations {
		if _, untolerated := corev1helpers.FindMatchingUntoleratedTaint(klog.Background(), n.Taints, tols, func(t *corev1.Taint) bool {
			return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
		}, false); untolerated {
			return false
		}
	}
	return true
}

// attachable: the node can attach every volume of the claims that is not
// attached there already without passing its CSI drivers' limits (the
// scheduler's NodeVolumeLimits would refuse the pod for good).
func (e *eligibility) attachable(n *Node) bool {
	if len(n.AttachLimit) == 0 {
		return true
	}
	var need map[string]int64
	for _, c := range e.volumes {
		if _, limited := n.AttachLimit[c.Driver]; !limited || slices.Contains(c.VolumeNodes, n.Name) {
			continue
		}
		if need == nil {
			need = map[string]int64{}
		}
		need[c.Driver]++
	}
	for d, k := range need {
		if n.Attached[d]+k > n.AttachLimit[d] {
			return false
		}
	}
	return true
}
