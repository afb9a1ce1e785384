package placement

import (
	"strings"
	"testing"
	"time"
)

// candidatePinned is a first member released to candidate nodes and
// unschedulable there for d.
func candidatePinned(name string, d time.Duration) Member {
	return stuck(name, "", d)
}

func (m Member) ownerKind(k string) Member { m.OwnerKind = k; m.Controlled = false; return m }

func stuckNames(a []Stuck) string {
	var out []string
	for _, x := range a {
		out = append(out, x.Pod)
	}
	return strings.Join(out, ",")
}

func TestPlanStuck(t *testing.T) {
	const deadline = 5 * time.Minute
	three := func() nodeList { return nodeList{node("n1"), node("n2"), node("n3")} }
	moving := func(c Claim, to string) Claim { c.MoveTarget = to; return c }
	for _, tc := range []struct {
		name            string
		nodes           nodeList
		claim           Claim
		replace, report string
		inWhy           string
		next            time.Duration
	}{
		{"a first member stuck on its candidates past the deadline is replaced",
			three(), claim("ns/data", candidatePinned("first", 6*time.Minute), gated("b", 1).ungated()),
			"first", "", "released first", 0},
		{"before the deadline it is left, and the plan says when to look again",
			three(), claim("ns/data", candidatePinned("first", 2*time.Minute)),
			"", "", "", 3 * time.Minute},
		{"a pinned member never found unschedulable (not tried yet) is left",
			three(), claim("ns/data", Member{Name: "fresh", Pinned: true, Controlled: true}),
			"", "", "", 0},
		{"gated, bound, terminating and done members are not stuck",
			three(), claim("ns/data", bound("a", "n1").controlled(), gated("g", 10),
				stuck("t", "n1", time.Hour).terminating(), Member{Name: "d", Done: true, Pinned: true, UnschedulableSince: t0.Add(-time.Hour)}),
			"", "", "", 0},
		{"pinned to a node that is no longer home (an old home, an abandoned target) is replaced",
			three(), claim("ns/data", bound("a", "n2").controlled().running(), stuck("old", "n1", 10*time.Minute)),
			"old", "", "no longer claim ns/data's home (now n2)", 0},
		{"pinned to a node when the huddle has no home any more is replaced",
			three(), claim("ns/data", stuck("old", "n1", 10*time.Minute)),
			"old", "", "it has none now", 0},
		{"pinned to the current home, full while the volume is in use there: reported, not churned",
			three(), claim("ns/data", bound("a", "n1").controlled().running(), stuck("wait", "n1", 10*time.Minute)),
			"", "wait", "spec.move: WhenStuck", 0},
		{"pinned to a home that is cordoned: replaced, the replacement waits gated",
			nodeList{node("n1").cordoned(), node("n2")}, claim("ns/data", bound("a", "n1").controlled().running(), stuck("s", "n1", 10*time.Minute)),
			"s", "", "is cordoned", 0},
		{"pinned to a home whose node is gone: replaced",
			nodeList{node("n2")}, claim("ns/data", bound("a", "n1").controlled().terminating(), stuck("s", "n1", 10*time.Minute).ownedBy("x")).attached("n1"),
			"s", "", "no longer claim ns/data's home", 0},
		{"a bare pod is reported, never deleted",
			three(), claim("ns/data", candidatePinned("bare", 10*time.Minute).ownerKind("")),
			"", "bare", "no controller", 0},
		{"a Job's pod is reported (an eviction counts against backoffLimit)",
			three(), claim("ns/data", candidatePinned("job-x", 10*time.Minute).ownerKind("batch/Job")),
			"", "job-x", "backoffLimit", 0},
		{"an unknown owner kind is reported with the flag that allows it",
			three(), claim("ns/data", candidatePinned("wf", 10*time.Minute).ownerKind("argoproj.io/Workflow")),
			"", "wf", "--recreating-owners", 0},
		{"moving: the member stuck at the old home is replaced at once, the one pinned to the target is the move's business",
			three(), moving(claim("ns/data", bound("a", "n1").controlled().running(), stuck("old", "n1", time.Second),
				Member{Name: "new", Pinned: true, PinnedTo: "n3", Controlled: true}), "n3"),
			"old", "", "moving to n3", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanStuck(&tc.claim, tc.nodes, t0, deadline)
			if stuckNames(p.Replace) != tc.replace || stuckNames(p.Report) != tc.report || p.Next != tc.next {
				t.Fatalf("replace=[%s] report=[%s] next=%s; want replace=[%s] report=[%s] next=%s",
					stuckNames(p.Replace), stuckNames(p.Report), p.Next, tc.replace, tc.report, tc.next)
			}
			all := append(append([]Stuck{}, p.Replace...), p.Report...)
			for _, s := range all {
				if !strings.Contains(s.Why, tc.inWhy) {
					t.Errorf("why %q lacks %q", s.Why, tc.inWhy)
				}
			}
			for _, s := range p.Replace {
				if !strings.Contains(s.Why, "places the replacement afresh") {
					t.Errorf("replace why %q does not say what happens", s.Why)
				}
			}
		})
	}
}
