package placement

import "fmt"

// Repair is what keeping a huddle together asks for: the members to evict
// so that their replacements come back home, and the members that are
// away but must be left alone, with why.
type Repair struct {
	// Home is the huddle's home ("" if it has none: nothing to repair).
	Home string
	// Evict are members bound away from home whose controller will
	// recreate them; the replacements are gated and pinned home.
	Evict []Away
	// Leave are members away from home that repair does not evict.
	Leave []Away
	// Wait says why nothing is evicted now although members are away
	// ("" if there is no such reason).
	Wait string
}

// Away is a member bound to a node other than its huddle's home.
type Away struct {
	Pod, Node string
	// Why is a sentence for the event and the pod's annotation.
	Why string
}

// PlanRepair finds the members of a claim's huddle that are bound away
// from home (during a move, from the move's target: that is how a huddle
// moves). It never picks a member at home, nor one that is terminating
// or done; a member that would not be recreated is left (a bare pod, a
// DaemonSet's or a Job's: evicting it would delete it for good, or count
// against the Job's backoffLimit). While home cannot take pods (cordoned, NotReady, gone)
// nothing is evicted: the replacements would have nowhere to go.
func PlanRepair(c *Claim, nodes Nodes) Repair {
	home, how := Home(c, nodes)
	if c.MoveTarget != "" {
		home, how = c.MoveTarget, "the huddle is moving there"
	}
	r := Repair{Home: home}
	if home == "" {
		return r
	}
	var away []Away
	var uncontrolled []*Member
	for i := range c.Members {
		m := &c.Members[i]
		if m.Node == "" || m.Node == home || !m.live() || m.Terminating {
			continue
		}
		away = append(away, Away{Pod: m.Name, Node: m.Node,
			Why: fmt.Sprintf("bound to %s, away from claim %s's home %s (%s)", m.Node, c.Key, home, how)})
		if m.Controlled {
			m = nil
		}
		uncontrolled = append(uncontrolled, m)
	}
	if len(away) == 0 {
		return r
	}
	if why := unavailable(nodes.Get(home)); why != "" {
		r.Wait = fmt.Sprintf("home %s %s; members away from it are not evicted until it can take them", home, why)
		r.Leave = away
		return r
	}
	for i, a := range away {
		if uncontrolled[i] != nil {
			a.Why += "; not evicted: " + notRecreated(uncontrolled[i])
			r.Leave = append(r.Leave, a)
			continue
		}
		r.Evict = append(r.Evict, a)
	}
	return r
}
