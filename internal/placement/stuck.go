package placement

import (
	"fmt"
	"time"
)

// Stuck is a member huddle released with a pin that has not bound.
type Stuck struct {
	Pod string
	// Why is a sentence for the events and the pod's annotation.
	Why string
}

// StuckPlan is what PlanStuck asks for.
type StuckPlan struct {
	// Replace are members to delete (through the Eviction API) so that
	// their controller recreates them: the replacement is gated and
	// placed again with what the cluster looks like now.
	Replace []Stuck
	// Report are members stuck past the deadline that are not replaced;
	// Why says why and what a user can do.
	Report []Stuck
	// Next is how long until the next member reaches its deadline (0 if
	// none is waiting for one).
	Next time.Duration
}

// PlanStuck bounds the wait of pinned members. A pin is final once the
// gate is removed, so a member the scheduler cannot bind where it is
// pinned (its candidates filled up, its node was deleted, a constraint
// huddle does not model refuses it) would wait, and hold its huddle,
// forever. A member Unschedulable for longer than deadline is replaced
// when its pin is wrong:
//   - pinned to candidates (the first member of a huddle with no home): the
//     others wait for it, so replacing it is the only way on;
//   - pinned to a node that is not the huddle's home (an old home, the
//     target of a finished or abandoned move), or to a home that cannot
//     take pods (cordoned, NotReady, gone).
//
// A member pinned to the current home, which is full while the volume is
// in use there, is reported, never replaced: its replacement would be
// pinned to the same node again. Ending that wait is the move's job
// (spec.move: WhenStuck).
//
// While the huddle moves, every unbound member pinned anywhere but the
// move's target is replaced at once, without waiting for the deadline:
// the member stuck at the old home that set the move off would otherwise
// bind there as soon as the evictions free room, and the move could not
// finish while the volume stays in use at the old home.
//
// Only members whose controller recreates them are replaced; the others
// are reported.
func PlanStuck(c *Claim, nodes Nodes, now time.Time, deadline time.Duration) StuckPlan {
	var p StuckPlan
	home, _ := Home(c, nodes)
	for i := range c.Members {
		m := &c.Members[i]
		if !m.live() || m.Terminating || m.Node != "" || m.Gated || !m.Pinned {
			continue
		}
		var why string
		switch {
		case c.MoveTarget != "":
			if m.PinnedTo == c.MoveTarget {
				continue // the move rolls forward or is abandoned (PlanMove)
			}
			why = fmt.Sprintf("member %s is pinned to %s but claim %s's huddle is moving to %s", m.Name, pinDesc(m), c.Key, c.MoveTarget)
		case m.UnschedulableSince.IsZero():
			continue
		case now.Sub(m.UnschedulableSince) < deadline:
			p.Next = Sooner(p.Next, deadline-now.Sub(m.UnschedulableSince))
			continue
		default:
			waited := fmt.Sprintf("has been unschedulable for over %s", deadline)
			switch {
			case m.PinnedTo == "":
				why = fmt.Sprintf("member %s, released first into claim %s's huddle pinned to candidate nodes, %s and holds the other members", m.Name, c.Key, waited)
			case m.PinnedTo != home:
				why = fmt.Sprintf("member %s is pinned to %s, which is no longer claim %s's home (%s), and %s", m.Name, m.PinnedTo, c.Key, orNone(home), waited)
			default:
				if bad := unavailable(nodes.Get(home)); bad != "" {
					why = fmt.Sprintf("member %s is pinned to claim %s's home %s, which %s, and %s", m.Name, c.Key, home, bad, waited)
					break
				}
				p.Report = append(p.Report, Stuck{Pod: m.Name, Why: fmt.Sprintf(
					"member %s is pinned to claim %s's home %s and %s; it waits there because the volume is in use on %s (a replacement would be pinned there again): free resources on %s, or set spec.move: WhenStuck to let the whole huddle move",
					m.Name, c.Key, home, waited, home, home)})
				continue
			}
		}
		if !m.Controlled {
			p.Report = append(p.Report, Stuck{Pod: m.Name, Why: why + "; not replaced: " + notRecreated(m)})
			continue
		}
		p.Replace = append(p.Replace, Stuck{Pod: m.Name, Why: why + "; deleting it so that its controller recreates it and huddle places the replacement afresh"})
	}
	return p
}

// pinDesc says where a member is pinned.
func pinDesc(m *Member) string {
	if m.PinnedTo == "" {
		return "candidate nodes"
	}
	return m.PinnedTo
}

// notRecreated says why a member would be gone for good if huddle evicted
// or deleted it.
func notRecreated(m *Member) string {
	switch m.OwnerKind {
	case "":
		return "it has no controller that would recreate it (a bare pod); move or delete it yourself"
	case "apps/DaemonSet":
		return "it belongs to a DaemonSet, whose pods belong to their node; move or delete it yourself"
	case "batch/Job":
		return "it belongs to a Job, which counts an evicted pod against its backoffLimit; move or delete it yourself"
	}
	return fmt.Sprintf("its controller (%s) is not known to recreate evicted pods; if it does, add %s to huddle's --recreating-owners", m.OwnerKind, m.OwnerKind)
}

func orNone(home string) string {
	if home == "" {
		return "it has none now"
	}
	return "now " + home
}

// Sooner is the sooner of two waits, where zero (or less) is no wait at
// all: what a reconciler that must look again at several times asks for.
func Sooner(a, b time.Duration) time.Duration {
	switch {
	case a <= 0:
		return b
	case b <= 0:
		return a
	}
	return min(a, b)
}
