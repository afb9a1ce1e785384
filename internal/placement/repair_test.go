package placement

import (
	"strings"
	"testing"
)

func (m Member) controlled() Member { m.Controlled = true; return m }

func names(a []Away) string {
	var out []string
	for _, x := range a {
		out = append(out, x.Pod)
	}
	return strings.Join(out, ",")
}

func TestPlanRepair(t *testing.T) {
	three := func() nodeList { return nodeList{node("n1"), node("n2"), node("n3")} }
	for _, tc := range []struct {
		name         string
		nodes        nodeList
		claim        Claim
		home         string
		evict, leave string
		wait         string
	}{
		{"together: nothing to do", three(), claim("ns/data", bound("a", "n1").controlled(), bound("b", "n1").controlled()), "n1", "", "", ""},
		{"split: the members away from the volume are evicted, never those at home",
			three(), claim("ns/data", bound("a", "n1").controlled(), bound("b", "n2").controlled(), bound("c", "n3").controlled()).attached("n1"),
			"n1", "b,c", "", ""},
		{"terminating, done, gated and unbound members are left out",
			three(), claim("ns/data", bound("a", "n1").controlled(), bound("b", "n2").controlled().terminating(),
				Member{Name: "c", Node: "n2", Done: true, Controlled: true}, gated("d", 1)).attached("n1"),
			"n1", "", "", ""},
		{"a member without a controller is reported, not evicted",
			three(), claim("ns/data", bound("a", "n1").controlled(), bound("bare", "n2")).attached("n1"), "n1", "", "bare", ""},
		{"a Job's pod away from home is reported, not evicted (an eviction counts against its backoffLimit)",
			three(), claim("ns/data", bound("a", "n1").controlled(), bound("job-1", "n2").ownerKind("batch/Job")).attached("n1"), "n1", "", "job-1", ""},
		{"home cordoned: wait",
			nodeList{node("n1").cordoned(), node("n2")}, claim("ns/data", bound("a", "n1").controlled(), bound("b", "n2").controlled()).attached("n1"),
			"n1", "", "b", "is cordoned"},
		{"no home: nothing", three(), claim("ns/data", gated("a", 1)), "", "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := PlanRepair(&tc.claim, tc.nodes)
			if r.Home != tc.home || names(r.Evict) != tc.evict || names(r.Leave) != tc.leave || !strings.Contains(r.Wait, tc.wait) || (tc.wait == "" && r.Wait != "") {
				t.Fatalf("home=%s evict=[%s] leave=[%s] wait=%q; want home=%s evict=[%s] leave=[%s] wait~%q",
					r.Home, names(r.Evict), names(r.Leave), r.Wait, tc.home, tc.evict, tc.leave, tc.wait)
			}
			for _, a := range r.Evict {
				if !strings.Contains(a.Why, "away from claim ns/data's home "+tc.home) {
					t.Errorf("reason %q does not name the home", a.Why)
				}
			}
		})
	}
}
