package placement

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// stuck is a member pinned to node and unschedulable there for d.
func stuck(name, node string, d time.Duration) Member {
	return Member{Name: name, Pinned: true, PinnedTo: node, Controlled: true, UnschedulableSince: t0.Add(-d), Requests: cpu(500)}
}

func (m Member) running() Member { m.Running = true; return m }

func TestPlanMove(t *testing.T) {
	// n1 (home) is full: 4 members of 500m run there with 1.6 CPU of others.
	members := func(extra ...Member) Claim {
		c := claim("ns/data", bound("a", "n1").controlled().running(), bound("b", "n1").controlled().running(), bound("c", "n1").controlled().running())
		c.Members = append(c.Members, extra...)
		return c
	}
	nodes := func() nodeList {
		return nodeList{node("n1").used(1500 + 1600 + 500), node("n2").used(3000), node("n3")}
	}
	moving := func(c Claim, to string) Claim { c.MoveTarget = to; return c }
	for _, tc := range []struct {
		name      string
		claim     Claim
		nodes     nodeList
		whenStuck bool
		last      time.Duration // since the last move began (0: never)
		action    MoveAction
		target    string
		inMessage string
	}{
		{"stuck long enough, another node fits: start", members(stuck("d", "n1", 10*time.Minute)), nodes(), true, 0, MoveStart, "n3", "unschedulable at home n1"},
		{"move: Never", members(stuck("d", "n1", 10*time.Minute)), nodes(), false, 0, MoveNone, "", ""},
		{"not stuck long enough", members(stuck("d", "n1", time.Minute)), nodes(), true, 0, MoveNone, "", ""},
		{"stuck, but the last move was recent", members(stuck("d", "n1", 10*time.Minute)), nodes(), true, 5 * time.Minute, MoveNone, "", "at most one per"},
		{"stuck, no node fits the whole huddle", members(stuck("d", "n1", 10*time.Minute)), nodeList{node("n1").used(3600), node("n2").used(3000)}, true, 0, MoveNone, "", "no other node fits"},
		{"moving, in progress", moving(members(bound("d", "n3").controlled()), "n3"), nodes(), true, 0, MoveNone, "n3", ""},
		{"moving, all run at the target: finish",
			moving(claim("ns/data", bound("a", "n3").running(), bound("b", "n3").running()), "n3"), nodes(), true, 0, MoveFinish, "n3", "all 2 members run at n3"},
		{"moving, target filled up: roll forward",
			moving(claim("ns/data", bound("a", "n1").running(), stuck("b", "n2", 10*time.Minute)), "n2"), nodes(), true, 0, MoveRetarget, "n3", "filled up"},
		{"moving, target filled up, nowhere else: abandon",
			moving(claim("ns/data", bound("a", "n1").running(), stuck("b", "n2", 10*time.Minute)), "n2"), nodeList{node("n1").used(3600), node("n2").used(3800)}, true, 0, MoveAbandon, "n2", "abandoned"},
		{"moving, target cordoned: roll forward",
			moving(members(gated("d", 1)), "n2"), nodeList{node("n1").used(3600), node("n2").cordoned(), node("n3")}, true, 0, MoveRetarget, "n3", "cordoned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := MoveInput{Claim: &tc.claim, Nodes: tc.nodes, Now: t0, WhenStuck: tc.whenStuck, After: 5 * time.Minute, MinInterval: 10 * time.Minute}
			if tc.last > 0 {
				in.LastStarted = t0.Add(-tc.last)
			}
			p := PlanMove(in)
			if p.Action != tc.action || p.Target != tc.target || !strings.Contains(p.Message, tc.inMessage) {
				t.Fatalf("got %q -> %q (%s); want %q -> %q (~%q)", p.Action, p.Target, p.Message, tc.action, tc.target, tc.inMessage)
			}
		})
	}
}

// TestMoveNotStartedUnlessItCanFinish: a move evicts every member and
// needs each recreated at the target; with a member that would not be
// recreated, spec.repair: Report, or a budget that cannot allow every
// eviction before a replacement is Ready, it is refused, saying why.
func TestMoveNotStartedUnlessItCanFinish(t *testing.T) {
	nodes := func() nodeList {
		return nodeList{node("n1").used(1500 + 1600 + 500), node("n2").used(3000), node("n3")}
	}
	base := func(extra ...Member) Claim {
		c := claim("ns/data", bound("a", "n1").controlled().running(), bound("b", "n1").controlled().running(), bound("c", "n1").controlled().running(),
			stuck("d", "n1", 10*time.Minute))
		c.Members = append(c.Members, extra...)
		return c
	}
	for _, tc := range []struct {
		name      string
		claim     Claim
		report    bool
		budgets   []Budget
		blocked   bool
		inMessage string
	}{
		{"every member recreated, no budget: start", base(), false, nil, false, "moving the whole huddle"},
		{"a bare pod member", base(bound("bare", "n1").running()), false, nil, true, "member bare would not be recreated at the target: it has no controller"},
		{"a DaemonSet's pod", base(bound("ds", "n1").running().ownerKind("apps/DaemonSet")), false, nil, true, "DaemonSet"},
		{"a Job's pod", base(bound("job", "n1").running().ownerKind("batch/Job")), false, nil, true, "backoffLimit"},
		{"a done Job pod holds nothing", base(Member{Name: "job-done", Node: "n1", Done: true, OwnerKind: "batch/Job"}), false, nil, false, "moving the whole huddle"},
		{"spec.repair: Report", base(), true, nil, true, "spec.repair is Report"},
		{"a budget that keeps 3 of the 3 Ready members", base(), false, []Budget{{Name: "app", Healthy: 3, Desired: 3, Members: 3}}, true,
			"PodDisruptionBudget app keeps 3 pods healthy, but the move must evict its 3 Ready members at n1"},
		{"a budget that keeps 1 still blocks: the last eviction never comes", base(), false, []Budget{{Name: "app", Healthy: 3, Desired: 1, Members: 3}}, true,
			"leaving 0"},
		{"a budget met by other healthy pods it covers", base(), false, []Budget{{Name: "tier", Healthy: 6, Desired: 3, Members: 3}}, false, "moving the whole huddle"},
		{"a budget of minAvailable 0", base(), false, []Budget{{Name: "app", Healthy: 3, Desired: 0, Members: 3}}, false, "moving the whole huddle"},
		{"a budget over no member", base(), false, []Budget{{Name: "other", Healthy: 1, Desired: 1}}, false, "moving the whole huddle"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := MoveInput{Claim: &tc.claim, Nodes: nodes(), Now: t0, WhenStuck: true, After: 5 * time.Minute, MinInterval: 10 * time.Minute,
				Report: tc.report, Budgets: tc.budgets}
			p := PlanMove(in)
			wantAction := MoveStart
			if tc.blocked {
				wantAction = MoveNone
			}
			if p.Action != wantAction || p.Blocked != tc.blocked || !strings.Contains(p.Message, tc.inMessage) {
				t.Fatalf("got %q blocked=%v (%s); want %q blocked=%v (~%q)", p.Action, p.Blocked, p.Message, wantAction, tc.blocked, tc.inMessage)
			}
		})
	}
}

// TestMoveDeadline: an unfinished move is abandoned once its deadline
// passes, whatever stage it is at; moves can be turned off.
func TestMoveDeadline(t *testing.T) {
	nodes := nodeList{node("n1"), node("n2"), node("n3")}
	c := claim("ns/data", bound("a", "n1").controlled().running(), bound("b", "n3").controlled())
	c.MoveTarget = "n3"
	in := MoveInput{Claim: &c, Nodes: nodes, Now: t0, WhenStuck: true, After: 5 * time.Minute, Deadline: 10 * time.Minute}
	in.LastStarted = t0.Add(-9 * time.Minute)
	if p := PlanMove(in); p.Action != MoveNone || p.Target != "n3" {
		t.Fatalf("before the deadline: %q %s (%s)", p.Action, p.Target, p.Message)
	}
	in.LastStarted = t0.Add(-10 * time.Minute)
	p := PlanMove(in)
	if p.Action != MoveAbandon || p.Target != "n3" || !strings.Contains(p.Message, "did not finish within 10m0s (0 of 2 members run there)") {
		t.Fatalf("at the deadline: %q %s (%s)", p.Action, p.Target, p.Message)
	}
	// A finished move is finished, deadline or not.
	done := claim("ns/data", bound("a", "n3").running(), bound("b", "n3").running())
	done.MoveTarget = "n3"
	in.Claim = &done
	if p := PlanMove(in); p.Action != MoveFinish {
		t.Fatalf("finished move past its deadline: %q (%s)", p.Action, p.Message)
	}

	off := claim("ns/data", bound("a", "n1").controlled().running(), stuck("d", "n1", 10*time.Minute))
	if p := PlanMove(MoveInput{Claim: &off, Nodes: nodes, Now: t0, WhenStuck: true, After: 5 * time.Minute, MinInterval: -1}); p.Action != MoveNone || !strings.Contains(p.Message, "moves are off") {
		t.Fatalf("moves off: %q (%s)", p.Action, p.Message)
	}
}

// TestMoveTargetPinsAndEvicts: during a move, new members are pinned to
// the target and every member elsewhere, running or not, is evicted.
func TestMoveTargetPinsAndEvicts(t *testing.T) {
	c := claim("ns/data", bound("a", "n1").controlled().running(), bound("b", "n1").controlled().running(), gated("p", 1))
	c.MoveTarget = "n3"
	nodes := nodeList{node("n1"), node("n2"), node("n3")}
	// While the members still hold the volume at n1, a new member waits
	// gated: bound to n3 now it would hang on Multi-Attach.
	if d := Decide(input(gated("p", 1), nodes, c)); d.Action != Hold || d.Reason != ReasonWaitDetach || !strings.Contains(d.Message, "leave n1") {
		t.Fatalf("decide while members hold the volume at n1: %s %v %s (%s)", d.Action, d.Nodes, d.Reason, d.Message)
	}
	if r := PlanRepair(&c, nodes); r.Home != "n3" || names(r.Evict) != "a,b" {
		t.Fatalf("repair: home %s evict [%s]", r.Home, names(r.Evict))
	}
	gone := claim("ns/data", gated("p", 1)).detaching("n1")
	gone.MoveTarget = "n3"
	if d := Decide(input(gated("p", 1), nodes, gone)); d.Reason != ReasonWaitDetach {
		t.Fatalf("decide while the volume detaches from n1: %s %v %s", d.Action, d.Nodes, d.Reason)
	}
	gone.Detaching = nil
	if d := Decide(input(gated("p", 1), nodes, gone)); d.Action != PinHome || d.Nodes[0] != "n3" || d.Reason != ReasonMoveTarget {
		t.Fatalf("decide once the volume left n1: %s %v %s", d.Action, d.Nodes, d.Reason)
	}
}

func TestUnpinned(t *testing.T) {
	owner := corev1.NodeSelectorRequirement{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"a"}}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Affinity: &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{owner}}}}}}}}
	pinned := Apply(pod, Decision{Action: PinHome, Nodes: []string{"n1"}, Claim: "ns/data"}, func(n string) string { return n })
	by := pinned.Annotations[AnnotationPinnedBy]
	if PinnedNode(by) != "n1" {
		t.Fatalf("PinnedNode(%q) = %q", by, PinnedNode(by))
	}
	got := Unpinned(pinned.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution, by)
	if got == nil || len(got.NodeSelectorTerms) != 1 || len(got.NodeSelectorTerms[0].MatchFields) != 0 || len(got.NodeSelectorTerms[0].MatchExpressions) != 1 {
		t.Fatalf("unpinned: %+v", got)
	}
	bare := Apply(&corev1.Pod{}, Decision{Action: PinCandidates, Nodes: []string{"n1", "n2"}, Claim: "ns/data"}, func(n string) string { return n })
	if u := Unpinned(bare.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution, bare.Annotations[AnnotationPinnedBy]); u != nil {
		t.Fatalf("a pod huddle alone pinned keeps %+v", u)
	}
}

// TestPlanRequestedMove: a move asked for now (kubectl huddle move) skips
// the wait for a stuck member but keeps every rule that makes a move safe;
// what it refuses, it says why.
func TestPlanRequestedMove(t *testing.T) {
	// Home n1 runs three members of 500m; n2 is nearly full; n3 is empty;
	// n4 carries a taint the members do not tolerate.
	// Members carry constraints as gathered from real pods (no
	// tolerations: the taint keeps them off n4).
	healthy := func(extra ...Member) Claim {
		c := claim("ns/data", bound("a", "n1").controlled().running(), bound("b", "n1").controlled().running(), bound("c", "n1").controlled().running())
		c.Members = append(c.Members, extra...)
		for i := range c.Members {
			c.Members[i].Constraints = &Constraints{}
		}
		return c
	}
	nodes := func() nodeList {
		return nodeList{node("n1").used(1500), node("n2").used(3000), node("n3"), node("n4").taint("dedicated"), node("n5").cordoned()}
	}
	for _, tc := range []struct {
		name      string
		claim     Claim
		to        string
		last      time.Duration
		min       time.Duration
		report    bool
		action    MoveAction
		target    string
		inMessage string
	}{
		{"to a node that fits, no member stuck", healthy(), "n3", 0, 10 * time.Minute, false, MoveStart, "n3", "from n1 to n3, as requested"},
		{"anywhere: the node an automatic move would choose", healthy(), "", 0, 10 * time.Minute, false, MoveStart, "n3", "as requested"},
		{"to home", healthy(), "n1", 0, 10 * time.Minute, false, MoveNone, "", "n1 is already the huddle's home"},
		{"to a node that lacks room", healthy(), "n2", 0, 10 * time.Minute, false, MoveNone, "", "node n2 lacks 500m CPU for the whole huddle"},
		{"to a node whose taint the members do not tolerate", healthy(), "n4", 0, 10 * time.Minute, false, MoveNone, "", "does not meet what the members require"},
		{"to a cordoned node", healthy(), "n5", 0, 10 * time.Minute, false, MoveNone, "", "node n5 is cordoned"},
		{"to a node that does not exist", healthy(), "n9", 0, 10 * time.Minute, false, MoveNone, "", "node n9 is gone"},
		{"a bare pod would not be recreated", healthy(bound("bare", "n1").running()), "n3", 0, 10 * time.Minute, false, MoveNone, "", "member bare would not be recreated"},
		{"spec.repair: Report", healthy(), "n3", 0, 10 * time.Minute, true, MoveNone, "", "spec.repair is Report"},
		{"too soon after the last move", healthy(), "n3", 5 * time.Minute, 10 * time.Minute, false, MoveNone, "", "ask again in 5m0s"},
		{"moves off", healthy(), "n3", 0, -1, false, MoveNone, "", "moves are off"},
		{"every reason at once", healthy(bound("bare", "n1").running()), "n2", 5 * time.Minute, 10 * time.Minute, false, MoveNone, "",
			"ask again in 5m0s; node n2 lacks 1 CPU for the whole huddle (2 CPU, 256Mi memory, 4 pods); the move could not finish, so it is not started: member bare would not be recreated"},
		{"no home yet", claim("ns/data", gated("a", 1)), "n3", 0, 10 * time.Minute, false, MoveNone, "", "no home yet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := MoveInput{Claim: &tc.claim, Nodes: nodes(), Now: t0, After: 5 * time.Minute, MinInterval: tc.min, Report: tc.report}
			if tc.last > 0 {
				in.LastStarted = t0.Add(-tc.last)
			}
			p := PlanRequestedMove(in, tc.to)
			if p.Action != tc.action || p.Target != tc.target || !strings.Contains(p.Message, tc.inMessage) {
				t.Fatalf("got %q -> %q (%s); want %q -> %q (~%q)", p.Action, p.Target, p.Message, tc.action, tc.target, tc.inMessage)
			}
		})
	}
	moving := healthy()
	moving.MoveTarget = "n3"
	if p := PlanRequestedMove(MoveInput{Claim: &moving, Nodes: nodes(), Now: t0, MinInterval: 10 * time.Minute}, "n2"); p.Action != MoveNone || !strings.Contains(p.Message, "a move to n3 is under way") {
		t.Fatalf("while moving: %q (%s)", p.Action, p.Message)
	}
}
