package placement

import (
	"fmt"
	"sort"
	"strings"
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
	// MinInterval below zero turns moves off (--max-moves-per-hour=0).
	LastStarted time.Time
	MinInterval time.Duration
	// Deadline bounds a whole move, from its start: an unfinished move is
	// abandoned after it (0: no deadline).
	Deadline time.Duration
	// Report is the Huddle's spec.repair: Report: members are never
	// evicted, so a move could not even begin.
	Report bool
	// Budgets are the PodDisruptionBudgets that cover members.
	Budgets []Budget
}

// Budget is a PodDisruptionBudget as a move sees it.
type Budget struct {
	Name string
	// Healthy and Desired are the budget's status.currentHealthy and
	// status.desiredHealthy; Members the Ready members it covers, which a
	// move must all evict before any replacement can become Ready (the
	// volume stays attached at the old home until they are gone).
	Healthy, Desired int32
	Members          int32
}

// MovePlan is PlanMove's answer.
type MovePlan struct {
	Action  MoveAction
	Target  string
	Message string
	// Blocked: a move is wanted but could not finish, so it is not
	// started; Message says why and what to change.
	Blocked bool
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
	if in.MinInterval < 0 {
		return MovePlan{Message: fmt.Sprintf("member %s is stuck at home %s, but moves are off (--max-moves-per-hour=0)", stuck, home)}
	}
	if !in.LastStarted.IsZero() && in.Now.Sub(in.LastStarted) < in.MinInterval {
		return MovePlan{Message: fmt.Sprintf("member %s is stuck at home %s, but the last move began %s ago; moves are at most one per %s",
			stuck, home, in.Now.Sub(in.LastStarted).Round(time.Second), in.MinInterval)}
	}
	target := fitting(c, in.Nodes, home)
	if target == "" {
		return MovePlan{Message: fmt.Sprintf("member %s is stuck at home %s and no other node fits the whole huddle (%s)", stuck, home, format(Demand([]*Claim{c})))}
	}
	if why := blockers(in, home); why != "" {
		return MovePlan{Blocked: true, Target: target, Message: fmt.Sprintf("member %s is stuck at home %s and %s would fit the whole huddle, but the move could not finish, so it is not started: %s",
			stuck, home, target, why)}
	}
	return MovePlan{Action: MoveStart, Target: target,
		Message: fmt.Sprintf("member %s has been unschedulable at home %s for over %s; moving the whole huddle (%s) to %s, where it fits", stuck, home, in.After, format(Demand([]*Claim{c})), target)}
}

// PlanRequestedMove answers a user's request to move the huddle now
// (spec.moveRequest, kubectl huddle move), to the node to or, if empty, to
// the node an automatic move would choose. The request skips the wait for
// a stuck member but keeps every rule that makes a move safe: moves on and
// not too frequent, a target that is Ready, meets every member's
// constraints and the other claims' homes, and holds the whole huddle, and
// nothing that would stop the move from finishing (blockers). Anything
// else is refused with the reason (Action MoveNone, Message set).
func PlanRequestedMove(in MoveInput, to string) MovePlan {
	c := in.Claim
	refuse := func(format string, a ...any) MovePlan {
		return MovePlan{Message: "move refused: " + fmt.Sprintf(format, a...)}
	}
	if c.MoveTarget != "" {
		return refuse("a move to %s is under way; wait for it to finish or be abandoned", c.MoveTarget)
	}
	home, _ := Home(c, in.Nodes)
	if home == "" {
		return refuse("the huddle has no home yet (no member is bound and the volume is attached nowhere); there is nothing to move")
	}
	if in.MinInterval < 0 {
		return refuse("moves are off (--max-moves-per-hour=0)")
	}
	// Every reason to refuse is told at once, so one answer says all there
	// is to change.
	var why []string
	if !in.LastStarted.IsZero() && in.Now.Sub(in.LastStarted) < in.MinInterval {
		why = append(why, fmt.Sprintf("the last move began %s ago, and moves are at most one per %s (--max-moves-per-hour); ask again in %s",
			in.Now.Sub(in.LastStarted).Round(time.Second), in.MinInterval, (in.MinInterval-in.Now.Sub(in.LastStarted)).Round(time.Second)))
	}
	target := to
	if to == "" {
		if target = fitting(c, in.Nodes, home); target == "" {
			why = append(why, fmt.Sprintf("no node other than home %s fits the whole huddle (%s)", home, format(Demand([]*Claim{c}))))
		}
	} else if why1 := fitsWhole(c, in.Nodes, to, home); why1 != "" {
		why = append(why, why1)
	}
	if b := blockers(in, home); b != "" {
		why = append(why, "the move could not finish, so it is not started: "+b)
	}
	if len(why) > 0 {
		return refuse("%s", strings.Join(why, "; "))
	}
	return MovePlan{Action: MoveStart, Target: target,
		Message: fmt.Sprintf("moving the whole huddle (%s) from %s to %s, as requested (spec.moveRequest)", format(Demand([]*Claim{c})), home, target)}
}

// fitsWhole says why the whole huddle cannot move to node to ("" if it
// can): home already, unavailable, outside what the members require, or
// too small.
func fitsWhole(c *Claim, nodes Nodes, to, home string) string {
	if to == home {
		return fmt.Sprintf("%s is already the huddle's home", to)
	}
	n := nodes.Get(to)
	if why := unavailable(n); why != "" {
		return fmt.Sprintf("node %s %s", to, why)
	}
	claims := []*Claim{c}
	if !newEligibility(claims).allows(n) {
		return fmt.Sprintf("node %s does not meet what the members require (node selector, required node affinity, tolerated taints, the volume's zone and attach limit, the homes of their other claims)", to)
	}
	demand := Demand(claims)
	if free := n.Free().Add(alreadyThere(claims, to)); !free.Covers(demand) {
		return shortfall(to, free, demand)
	}
	return ""
}

// blockers says why a move from home could not finish ("" if it can):
// a move evicts every member and needs each one recreated at the target.
func blockers(in MoveInput, home string) string {
	var why []string
	if in.Report {
		why = append(why, "spec.repair is Report, so huddle evicts no member; set it to Evict to allow the move")
	}
	for i := range in.Claim.Members {
		m := &in.Claim.Members[i]
		if m.live() && !m.Terminating && !m.Gated && !m.Controlled {
			why = append(why, fmt.Sprintf("member %s would not be recreated at the target: %s", m.Name, notRecreated(m)))
		}
	}
	for _, b := range in.Budgets {
		if b.Members == 0 || b.Healthy-b.Members >= b.Desired {
			continue
		}
		why = append(why, fmt.Sprintf("PodDisruptionBudget %s keeps %d pods healthy, but the move must evict its %d Ready members at %s before any replacement can become Ready (the volume stays at %s until they are gone), leaving %d; lower its minAvailable or raise its maxUnavailable to allow the move",
			b.Name, b.Desired, b.Members, home, home, max(b.Healthy-b.Members, 0)))
	}
	return strings.Join(why, "; ")
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
	if took := in.Now.Sub(in.LastStarted); in.Deadline > 0 && !in.LastStarted.IsZero() && took >= in.Deadline {
		// Abandoned, the huddle's home is again where its members are
		// bound (the volume's node if they are on both): members away
		// from it are evicted by repair and pinned there, and members
		// still waiting for the target are replaced (PlanStuck).
		return MovePlan{Action: MoveAbandon, Target: to, Message: fmt.Sprintf(
			"the move to %s did not finish within %s (%d of %d members run there); abandoned: the huddle's home is again the node its members are bound to (the volume's node if they are on both), members bound elsewhere are evicted and pinned there, and members pinned to %s that never bound are replaced once unschedulable past the deadline unless %s is that home",
			to, in.Deadline, there, live, to, to)}
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
