package placement

import (
	"strings"
	"testing"
)

// TestMissingSecondClaim: past the grace, a claim that still does not exist
// no longer holds the pod, but the pod's other claim still decides where
// it goes: home if it has one, the usual first-member rule if not.
func TestMissingSecondClaim(t *testing.T) {
	p := gated("p", 5) // older than the one-minute grace
	nodes := func() nodeList { return nodeList{node("n1"), node("n2"), node("n3")} }
	missing := Claim{Key: "ns/gone", Missing: true}
	for _, tc := range []struct {
		name   string
		in     *Input
		action Action
		nodes  string
		reason string
	}{
		{"other claim has a home: pinned there",
			input(p, nodes(), claim("ns/data", p, bound("a", "n2")), missing), PinHome, "n2", ReasonHome},
		{"missing claim first, then the claim with a home",
			input(p, nodes(), missing, claim("ns/data", p, bound("a", "n3"))), PinHome, "n3", ReasonHome},
		{"other claim has no home: p is its first member",
			input(p, nodeList{node("n1")}, missing, claim("ns/data", p)), PinCandidates, "n1", ReasonCandidates},
		{"other claim has no home and an older member: follow it",
			input(p, nodes(), missing, claim("ns/data", p, gated("elder", 9))), Hold, "", ReasonFollowing},
		{"no other claim: released", input(p, nodes(), missing), Release, "", ReasonClaimMissing},
		{"other claim not shared: released", input(p, nodes(), missing, Claim{Key: "ns/rwx", NotShared: "RWX"}), Release, "", ReasonClaimMissing},
		{"within the grace: held", input(gated("young", 0), nodes(), claim("ns/data", bound("a", "n2")), missing), Hold, "", ReasonWaitClaim},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if d.Action != tc.action || strings.Join(d.Nodes, ",") != tc.nodes || d.Reason != tc.reason {
				t.Fatalf("got %s %v %s (%s); want %s [%s] %s", d.Action, d.Nodes, d.Reason, d.Message, tc.action, tc.nodes, tc.reason)
			}
			if d.Action == PinHome && !strings.Contains(d.Message, "ns/gone still does not exist") {
				t.Errorf("message %q does not mention the missing claim", d.Message)
			}
		})
	}
}
