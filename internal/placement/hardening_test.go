package placement

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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

func (m Member) alsoMounts(key, home, first string) Member {
	m.Others = append(m.Others, OtherClaim{Key: key, Home: home, FirstMember: first})
	return m
}

// released is a member released to the scheduler and not bound yet.
func released(name string) Member {
	return Member{Name: name, Pinned: true, Created: t0.Add(-time.Minute), Requests: cpu(500)}
}

// TestTwoClaimsTwoFirstMembers: a pod mounting claim A (home n1) and claim
// B (no home) is not pinned to n1 while B's first member is on its way to
// a node that may not be n1; and a new huddle's first member goes where
// its members' other claims live.
func TestTwoClaimsTwoFirstMembers(t *testing.T) {
	p := gated("p", 1)
	nodes := func() nodeList { return nodeList{node("n1"), node("n2"), node("n3")} }
	a := func(extra ...Member) Claim { return claim("ns/a", append([]Member{p, bound("x", "n1")}, extra...)...) }
	placingB := claim("ns/b", p, gated("q", 5))
	placingB.Placing = "q" // recorded, our cache still shows q gated
	for _, tc := range []struct {
		name   string
		in     *Input
		action Action
		nodes  string
		reason string
		inMsg  string
	}{
		{"B's first member released, unbound: wait for it",
			input(p, nodes(), a(), claim("ns/b", p, released("q"))), Hold, "", ReasonFollowing, "member q is placed first"},
		{"B's first member recorded as placing: wait for it",
			input(p, nodes(), a(), placingB), Hold, "", ReasonFollowing, "member q is placed first"},
		{"B's first member landed at A's home: pinned there",
			input(p, nodes(), a(), claim("ns/b", p, bound("q", "n1"))), PinHome, "n1", ReasonHome, ""},
		{"B's first member landed elsewhere: conflict, never a pin",
			input(p, nodes(), a(), claim("ns/b", p, bound("q", "n2"))), Hold, "", ReasonHomeConflict, "ns/a lives on n1 but claim ns/b lives on n2"},
		{"B has no member in flight: p sets B's home at A's",
			input(p, nodes(), a(), claim("ns/b", p, gated("older", 9))), PinHome, "n1", ReasonHome, ""},
		{"B's released member is terminating: it sets no home",
			input(p, nodes(), a(), claim("ns/b", p, released("q").terminating())), PinHome, "n1", ReasonHome, ""},
		{"fresh B: a member that also mounts A (home n3) restricts the candidates to n3",
			input(p, nodes(), claim("ns/b", p, gated("r", 0).alsoMounts("ns/a", "n3", ""))), PinCandidates, "n3", ReasonCandidates, ""},
		{"fresh B: members' other claims live on two nodes: no candidate",
			input(p, nodes(), claim("ns/b", p, gated("r", 0).alsoMounts("ns/a", "n3", ""), gated("s", 0).alsoMounts("ns/c", "n2", ""))),
			Hold, "", ReasonNoCandidates, "homes of their other claims"},
		{"fresh B: a member's other claim has a first member in flight: wait for it",
			input(p, nodes(), claim("ns/b", p, gated("r", 0).alsoMounts("ns/a", "", "a-0"))), Hold, "", ReasonFollowing, "member a-0 is placed first"},
		{"fresh B: the other claim's first member is p itself: no wait",
			input(p, nodeList{node("n1")}, claim("ns/b", p, gated("r", 0).alsoMounts("ns/a", "", "p"))), PinCandidates, "n1", ReasonCandidates, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if d.Action != tc.action || strings.Join(d.Nodes, ",") != tc.nodes || d.Reason != tc.reason || !strings.Contains(d.Message, tc.inMsg) {
				t.Fatalf("got %s %v %s (%s); want %s [%s] %s (%q)", d.Action, d.Nodes, d.Reason, d.Message, tc.action, tc.nodes, tc.reason, tc.inMsg)
			}
		})
	}
}

// TestMoveTargetRespectsOtherClaims: a huddle moves only where its members'
// other claims live.
func TestMoveTargetRespectsOtherClaims(t *testing.T) {
	c := func(extra ...Member) Claim {
		c := claim("ns/data", append([]Member{bound("a", "n1").controlled().running(), stuck("d", "n1", 10*time.Minute)}, extra...)...)
		return c
	}
	nodes := nodeList{node("n1").used(3800), node("n2"), node("n3")}
	for _, tc := range []struct {
		name   string
		claim  Claim
		action MoveAction
		target string
	}{
		{"no other claims: first node that fits", c(), MoveStart, "n2"},
		{"a member also mounts a claim living on n3", c(bound("b", "n1").controlled().alsoMounts("ns/logs", "n3", "")), MoveStart, "n3"},
		{"a member also mounts a claim living at home: no move", c(bound("b", "n1").controlled().alsoMounts("ns/logs", "n1", "")), MoveNone, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := tc.claim
			plan := PlanMove(MoveInput{Claim: &cl, Nodes: nodes, Now: t0, WhenStuck: true, After: 5 * time.Minute})
			if plan.Action != tc.action || plan.Target != tc.target {
				t.Fatalf("got %s %q (%s), want %s %q", plan.Action, plan.Target, plan.Message, tc.action, tc.target)
			}
		})
	}
}

// TestDemandCountsPodsThatMountTheClaim: a claim of one pod of a
// 50-replica StatefulSet (data-web-0) demands that pod, not 50; a claim
// every replica mounts demands every replica; a member's admitted
// requests (LimitRange defaults, overhead) count over its template's.
func TestDemandCountsPodsThatMountTheClaim(t *testing.T) {
	own := gated("web-0", 0).ownedBy("StatefulSet/web")
	perClaim := claim("ns/data-web-0", own)
	perClaim.Owners = map[string]Owner{"StatefulSet/web": {MaxPods: 0, PerPod: cpu(500)}}
	if got, want := Demand([]*Claim{&perClaim}), cpu(500); !got.Equal(want) {
		t.Errorf("per-pod claim: demand %+v, want one pod %+v", got, want)
	}
	shared := claim("ns/shared", own)
	shared.Owners = map[string]Owner{"StatefulSet/web": {MaxPods: 50, PerPod: cpu(500)}}
	if got, want := Demand([]*Claim{&shared}), cpu(500).Times(50); !got.Equal(want) {
		t.Errorf("claim every replica mounts: demand %+v, want %+v", got, want)
	}
	// Both claims of one pod: the owner's largest count.
	if got, want := Demand([]*Claim{&perClaim, &shared}), cpu(500).Times(50); !got.Equal(want) {
		t.Errorf("both claims: demand %+v, want %+v", got, want)
	}
	// The template has no requests (a LimitRange fills them in): the
	// member's admitted requests count.
	admitted := claim("ns/data", gated("web-a", 0).ownedBy("Deployment/web").requests(700), gated("web-b", 0).ownedBy("Deployment/web").requests(700))
	admitted.Owners = map[string]Owner{"Deployment/web": {MaxPods: 3, PerPod: Resources{Pods: 1}}}
	if got, want := Demand([]*Claim{&admitted}), cpu(700).Times(3); !got.Equal(want) {
		t.Errorf("template without admission defaults: demand %+v, want %+v", got, want)
	}
}

const gpu = corev1.ResourceName("nvidia.com/gpu")

func (n *Node) gpus(k int64) *Node {
	n.Allocatable.Scalar = map[corev1.ResourceName]int64{gpu: k}
	return n
}

// TestExtendedResources: a huddle whose members ask for GPUs is sent only
// to nodes with the GPUs free for all of them; none: where most fits, and
// the shortfall names the GPUs.
func TestExtendedResources(t *testing.T) {
	withGPU := func(m Member, k int64) Member {
		m.Requests.Scalar = map[corev1.ResourceName]int64{gpu: k}
		return m
	}
	p := withGPU(gated("p", 1), 1)
	c := claim("ns/data", p, withGPU(gated("q", 0), 1))
	in := input(p, nodeList{node("n1"), node("n2").gpus(1), node("n3").gpus(2), node("n4").gpus(4)}, c)
	if d := Decide(in); d.Action != PinCandidates || strings.Join(d.Nodes, ",") != "n3,n4" || !d.Fits {
		t.Fatalf("got %s %v fits=%v (%s), want n3,n4 where 2 GPUs are free", d.Action, d.Nodes, d.Fits, d.Message)
	}
	used := node("n4").gpus(4)
	used.Requested.Scalar = map[corev1.ResourceName]int64{gpu: 3}
	in = input(p, nodeList{node("n1"), node("n2").gpus(1), used}, c)
	d := Decide(in)
	if d.Action != PinCandidates || d.Fits || strings.Join(d.Nodes, ",") != "n2,n4" || !strings.Contains(d.Shortfall, "1 nvidia.com/gpu") {
		t.Fatalf("got %s %v fits=%v shortfall %q, want n2,n4 (one GPU free each) with Fits=false naming the GPU", d.Action, d.Nodes, d.Fits, d.Shortfall)
	}
}

func TestResourcesArithmetic(t *testing.T) {
	a := Resources{MilliCPU: 100, Scalar: map[corev1.ResourceName]int64{gpu: 1}}
	b := Resources{MilliCPU: 50}
	if got := a.Add(b).Sub(b); !got.Equal(a) {
		t.Errorf("a+b-b = %+v, want %+v", got, a)
	}
	if got := a.Sub(a); !got.Equal(Resources{}) {
		t.Errorf("a-a = %+v, want zero", got)
	}
	if got := a.Times(3).Scalar[gpu]; got != 3 {
		t.Errorf("3a has %d GPUs", got)
	}
	if b.Covers(a) || !a.Covers(b) || !a.Covers(Resources{Scalar: map[corev1.ResourceName]int64{gpu: 0}}) {
		t.Error("Covers ignores scalars")
	}
	if (Resources{}).Add(Resources{}).Scalar != nil {
		t.Error("arithmetic without scalars allocates a map")
	}
}

// TestAttachLimits: a node whose CSI driver has no attach slot left cannot
// take a huddle whose volume is not attached there already; a node where
// the volume is attached can.
func TestAttachLimits(t *testing.T) {
	const ebs = "ebs.csi.aws.com"
	full := func(name string) *Node {
		n := node(name)
		n.AttachLimit, n.Attached = map[string]int64{ebs: 2}, map[string]int64{ebs: 2}
		return n
	}
	p := gated("p", 1)
	c := claim("ns/data", p)
	c.Driver = ebs
	if d := Decide(input(p, nodeList{full("n1"), node("n2"), full("n3")}, c)); d.Action != PinCandidates || strings.Join(d.Nodes, ",") != "n2" {
		t.Fatalf("got %s %v (%s), want n2, the only node with an attach slot", d.Action, d.Nodes, d.Message)
	}
	if d := Decide(input(p, nodeList{full("n1"), full("n3")}, c)); d.Action != Hold || d.Reason != ReasonNoCandidates || !strings.Contains(d.Message, "attach limits") {
		t.Fatalf("every node full: got %s %s (%s), want a NoCandidateNodes hold naming attach limits", d.Action, d.Reason, d.Message)
	}
	// Detach pending on n3, which is full: the volume needs no new slot there.
	detaching := c.attached("n3")
	if d := Decide(input(p, nodeList{full("n1"), full("n3")}, detaching)); d.Action != PinHome || d.Nodes[0] != "n3" {
		t.Fatalf("volume attached at full n3: got %s %v (%s), want home n3", d.Action, d.Nodes, d.Message)
	}
	other := claim("ns/data", p)
	other.Driver = "other.csi.io"
	if d := Decide(input(p, nodeList{full("n1")}, other)); d.Action != PinCandidates {
		t.Fatalf("another driver's limit: got %s (%s), want candidates", d.Action, d.Message)
	}
}

// TestWaitForDetachOfEveryClaim: a pod is released only once the volumes
// of all its claims can be on the node it is pinned to; a claim whose
// volume is still attached or detaching elsewhere (its last member
// terminating on a drained node) holds it, whichever claim sets the home
// or is moving.
func TestWaitForDetachOfEveryClaim(t *testing.T) {
	p := gated("p", 1)
	nodes := nodeList{node("n1"), node("n2").cordoned(), node("n3")}
	a := claim("ns/a", p, bound("a1", "n1")).attached("n1")
	b := claim("ns/b", p, bound("b1", "n2").terminating()).attached("n2")
	if d := Decide(input(p, nodes, a, b)); d.Reason != ReasonWaitDetach || !strings.Contains(d.Message, "claim ns/b") || !strings.Contains(d.Message, "leave n2") {
		t.Fatalf("claim b still on n2: %s %v %s (%s)", d.Action, d.Nodes, d.Reason, d.Message)
	}
	b = claim("ns/b", p).detaching("n2")
	if d := Decide(input(p, nodes, a, b)); d.Reason != ReasonWaitDetach {
		t.Fatalf("claim b detaching from n2: %s %v %s (%s)", d.Action, d.Nodes, d.Reason, d.Message)
	}
	b = claim("ns/b", p)
	if d := Decide(input(p, nodes, a, b)); d.Action != PinHome || d.Nodes[0] != "n1" {
		t.Fatalf("claim b's volume gone from n2: %s %v %s (%s)", d.Action, d.Nodes, d.Reason, d.Message)
	}

	// Moving: the other claim's volume must have left too.
	a = claim("ns/a", p)
	a.MoveTarget = "n3"
	b = claim("ns/b", p).attached("n1")
	if d := Decide(input(p, nodes, a, b)); d.Reason != ReasonWaitDetach || !strings.Contains(d.Message, "claim ns/b") {
		t.Fatalf("a moving to n3, b still on n1: %s %v %s (%s)", d.Action, d.Nodes, d.Reason, d.Message)
	}

	// A split huddle's volume is at home: new members go there at once.
	split := claim("ns/a", p, bound("a1", "n1"), bound("a2", "n3")).attached("n1")
	if d := Decide(input(p, nodes, split)); d.Action != PinHome || d.Nodes[0] != "n1" {
		t.Fatalf("split, volume at home: %s %v %s (%s)", d.Action, d.Nodes, d.Reason, d.Message)
	}
}

// TestRecordOfAReplacedFirstMember: the first member recorded as placing
// is deleted and a new pod of its name (a StatefulSet's) is created,
// gated, within the record's minute. That pod is not the one released:
// it does not hold the others (who would wait for it while it waits for
// them, the older, until the record expired), and the oldest gated member
// goes first.
func TestRecordOfAReplacedFirstMember(t *testing.T) {
	web1 := gated("web-1", 2) // created 2 min ago
	web0 := gated("web-0", 0) // the recreated web-0, created now
	c := claim("ns/data", web1, web0)
	c.Placing, c.PlacingSince = "web-0", t0.Add(-30*time.Second)
	if first := FirstInFlight(&c, "web-1"); first != "" {
		t.Fatalf("web-1 follows %q, the new pod of a recorded name", first)
	}
	d := Decide(input(web1, nodeList{node("n1"), node("n2")}, c))
	if d.Action != PinCandidates {
		t.Fatalf("web-1, the oldest gated member: %s %s (%s), want it placed first", d.Action, d.Reason, d.Message)
	}
	// The recorded pod itself, created before its record: it holds.
	c.PlacingSince = t0.Add(time.Second)
	if first := FirstInFlight(&c, "web-1"); first != "web-0" {
		t.Fatalf("web-1 follows %q, want web-0, recorded after it was created", first)
	}
}
