package placement

// Assessment is where a huddle stands, for its status.
type Assessment struct {
	Home, How string
	// Split: live members are bound to more than one node.
	Split  bool
	Demand Resources
	// Fits: home (or, without one, some node) can hold the whole demand.
	Fits      bool
	Shortfall string
	// FitsAtHome: Fits was judged on home alone, as
	// home's free resources plus Bound covering Demand, so a change of
	// home's free resources alone can be checked against it without
	// assessing again (see the status controller's node changes).
	FitsAtHome bool
	// Bound are the requests of live members bound to home, which home's
	// requested resources already count.
	Bound Resources
}

// Assess judges one claim's huddle with the same rules Decide uses.
func Assess(c *Claim, nodes Nodes, maxCandidates int) Assessment {
	home, how := Home(c, nodes)
	claims := []*Claim{c}
	a := Assessment{Home: home, How: how, Demand: Demand(claims), Fits: true}
	bound := map[string]bool{}
	live := 0
	for i := range c.Members {
		m := &c.Members[i]
		if !m.live() {
			continue
		}
		live++
		if m.Node != "" && !m.Terminating {
			bound[m.Node] = true
		}
	}
	a.Split = len(bound) > 1
	switch {
	case live == 0:
	case home != "":
		if n := nodes.Get(home); n != nil {
			a.FitsAtHome, a.Bound = true, alreadyThere(claims, home)
			if free := n.Free().Add(a.Bound); !free.Covers(a.Demand) {
				a.Fits, a.Shortfall = false, shortfall(home, free, a.Demand)
			}
		}
	default:
		d := candidates(&Input{Nodes: nodes, MaxCandidates: maxCandidates}, claims)
		a.Fits, a.Shortfall = d.Fits, d.Shortfall
	}
	return a
}
