package placement

import (
	"fmt"
	"sort"
	"time"
)

// MoveAction is what PlanMove asks for.
type MoveAction string

// The move actions.
const (
	MoveNone MoveAction = ""
	// MoveStart records a move to Target; repair then evicts every member
	// and the placer pins the replacements to Target.
	MoveStart MoveAction = "Start"
	// MoveRetarget rolls an unfinished move forward to a new Target: the
	// old one filled up meanwhile.
	MoveRetarget MoveAction = "Retarget"
	// MoveFinish: every member runs at the target.
	MoveFinish MoveAction = "Finish"
	// MoveAbandon gives up an unfinished move; Message says why.
	MoveAbandon MoveAction = "Abandon"
)

// MoveInput is what PlanMove decides on.
type MoveInput struct {
	Claim *Claim
	Nodes Nodes
	Now   time.Time
	// WhenStuck is the Huddle's spec.move; After its moveAfter.
	WhenStuck bool
	After     time.Duration
	// LastStarted is when the last move began (zero if never);
	// MinInterval the least time between two moves (the per-hour cap).
	LastStarted time.Time
	MinInterval time.Duration
}

// MovePlan is PlanMove's answer.
type MovePlan struct {
	Action  MoveAction
	Target  string
	Message string
}

// PlanMove decides whether a huddle moves, whole, to another node. A move
// starts when a member has waited Unschedulable at home for longer than
// After and another node fits the whole huddle's demand; one move at a
// time (the claim's MoveTarget), at most one per MinInterval. A move
// finishes when every member runs at the target; one whose target cannot
// take a member for After is rolled forward to another node that fits, or
// abandoned if none does.
func PlanMove(in MoveInput) MovePlan {
	c := in.Claim
	if c.MoveTarget != "" {
		return planMoving(in)
	}
	if !in.WhenStuck {
		return MovePlan{}
	}
	home, _ := Home(c, in.Nodes)
	if home == "" {
		return MovePlan{}
	}
	stuck := stuckAt(c, home, in.Now, in.After)
	if stuck == "" {
		return MovePlan{}
	}
	if !in.LastStarted.IsZero() && in.Now.Sub(in.LastStarted) < in.MinInterval {
		return MovePlan{Message: fmt.Sprintf("member %s is stuck at home %s, but the last move began %s ago; moves are at most one per %s",
			stuck, home, in.Now.Sub(in.LastStarted).Round(time.Second), in.MinInterval)}
	}
	target := fitting(c, in.Nodes, home)
	if target == "" {
		return MovePlan{Message: fmt.Sprintf("member %s is stuck at home %s and no other node fits the whole huddle (%s)", stuck, home, format(Demand([]*Claim{c})))}
	}
	return MovePlan{Action: MoveStart, Target: target,
		Message: fmt.Sprintf("member %s has been unschedulable at home %s for over %s; moving the whole huddle (%s) to %s, where it fits", stuck, home, in.After, format(Demand([]*Claim{c})), target)}
}

func planMoving(in MoveInput) MovePlan {
	c, to := in.Claim, in.Claim.MoveTarget
	live, there := 0, 0
	for i := range c.Members {
		m := &c.Members[i]
		if !m.live() {
			continue
		}
		live++
		if m.Node == to && m.Running && !m.Terminating {
			there++
		}
	}
	if live > 0 && there == live {
		return MovePlan{Action: MoveFinish, Target: to, Message: fmt.Sprintf("all %d members run at %s", live, to)}
	}
	if why := unavailable(in.Nodes.Get(to)); why != "" {
		return retarget(c, in.Nodes, to, fmt.Sprintf("target %s %s", to, why))
	}
	if stuck := stuckAt(c, to, in.Now, in.After); stuck != "" {
		return retarget(c, in.Nodes, to, fmt.Sprintf("member %s has been unschedulable at target %s for over %s (it filled up meanwhile)", stuck, to, in.After))
	}
	return MovePlan{Target: to}
}

func retarget(c *Claim, nodes Nodes, from, why string) MovePlan {
	if next := fitting(c, nodes, from); next != "" {
		return MovePlan{Action: MoveRetarget, Target: next, Message: why + "; moving on to " + next + ", where the whole huddle fits"}
	}
	return MovePlan{Action: MoveAbandon, Target: from, Message: why + "; no other node fits the whole huddle, so the move is abandoned and the members stay where they are pinned"}
}

// stuckAt names a member pinned to node that has been unschedulable for
// at least after, or "".
func stuckAt(c *Claim, node string, now time.Time, after time.Duration) string {
	for i := range c.Members {
		m := &c.Members[i]
		if m.live() && !m.Terminating && m.Node == "" && m.PinnedTo == node &&
			!m.UnschedulableSince.IsZero() && now.Sub(m.UnschedulableSince) >= after {
			return m.Name
		}
	}
	return ""
}

// fitting returns the first node by name, other than except, that every
// member may use and where the whole huddle's demand fits, or "".
func fitting(c *Claim, nodes Nodes, except string) string {
	claims := []*Claim{c}
	demand := Demand(claims)
	check := newEligibility(claims)
	var fits []string
	for i := range nodes.Len() {
		n := nodes.At(i)
		if n.Name == except || !check.allows(n) {
			continue
		}
		if n.Free().Add(alreadyThere(claims, n.Name)).Covers(demand) {
			fits = append(fits, n.Name)
		}
	}
	if len(fits) == 0 {
		return ""
	}
	sort.Strings(fits)
	return fits[0]
}
