package placement

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

// nodeList is a simple Nodes for tests.
type nodeList []*Node

func (l nodeList) Get(name string) *Node {
	for _, n := range l {
		if n.Name == name {
			return n
		}
	}
	return nil
}
func (l nodeList) Len() int       { return len(l) }
func (l nodeList) At(i int) *Node { return l[i] }
func cpu(milli int64) Resources   { return Resources{MilliCPU: milli, Memory: 64 << 20, Pods: 1} }
func gib(n int64) int64           { return n << 30 }
func node(name string) *Node {
	return &Node{Name: name, Ready: true, Labels: map[string]string{corev1.LabelHostname: name, corev1.LabelTopologyZone: "a"},
		Allocatable: Resources{MilliCPU: 4000, Memory: gib(16), Pods: 58}}
}

// node modifiers
func (n *Node) used(milli int64) *Node { n.Requested = n.Requested.Add(cpu(milli)); return n }
func (n *Node) zone(z string) *Node    { n.Labels[corev1.LabelTopologyZone] = z; return n }
func (n *Node) cordoned() *Node        { n.Cordoned = true; return n }
func (n *Node) notReady() *Node        { n.Ready = false; return n }
func (n *Node) taint(k string) *Node {
	n.Taints = append(n.Taints, corev1.Taint{Key: k, Effect: corev1.TaintEffectNoSchedule})
	return n
}

// member builders
func gated(name string, age int) Member {
	return Member{Name: name, Gated: true, Created: t0.Add(time.Duration(-age) * time.Minute), Requests: cpu(500)}
}
func bound(name, node string) Member {
	return Member{Name: name, Node: node, Pinned: true, Created: t0.Add(-time.Hour), Requests: cpu(500)}
}
func (m Member) terminating() Member         { m.Terminating = true; return m }
func (m Member) requests(milli int64) Member { m.Requests = cpu(milli); return m }
func (m Member) ownedBy(o string) Member     { m.Owner = o; return m }
func (m Member) ungated() Member             { m.Gated = false; return m }
func (m Member) selector(k, v string) Member {
	m.Constraints = &Constraints{NodeSelector: map[string]string{k: v}}
	return m
}

func claim(key string, members ...Member) Claim {
	return Claim{Key: key, Shared: true, Members: members}
}
func (c Claim) attached(nodes ...string) Claim  { c.VolumeNodes, c.Attached = nodes, nodes; return c }
func (c Claim) detaching(nodes ...string) Claim { c.Detaching = nodes; return c }
func (c Claim) stale(node string) Claim {
	c.StaleAttachment = &StaleAttachment{Node: node, Until: t0.Add(time.Minute)}
	return c
}

func input(pod Member, nodes nodeList, claims ...Claim) *Input {
	return &Input{Pod: pod, Claims: claims, Nodes: nodes, Now: t0, MissingClaimGrace: time.Minute}
}

func TestDecide(t *testing.T) {
	p := gated("p", 1)
	three := func() nodeList { return nodeList{node("n1"), node("n2"), node("n3")} }
	for _, tc := range []struct {
		name      string
		in        *Input
		action    Action
		nodes     string // comma-separated
		reason    string
		fits      bool
		inMessage string
	}{
		{"no claim", input(p, three()), Release, "", ReasonNotShared, true, "mounts no claim"},
		{"claim not shared", input(p, three(), Claim{Key: "ns/rwx", NotShared: "its volume is ReadWriteMany", Members: []Member{p}}),
			Release, "", ReasonNotShared, true, "ReadWriteMany"},
		{"claim missing, within grace", input(gated("new", 0), three(), Claim{Key: "ns/x", Missing: true}), Hold, "", ReasonWaitClaim, false, "does not exist yet"},
		{"claim missing, after grace", input(gated("old", 5), three(), Claim{Key: "ns/x", Missing: true}), Release, "", ReasonClaimMissing, true, "still does not exist"},
		{"member bound: pin home", input(p, three(), claim("ns/data", p, bound("a", "n2"))), PinHome, "n2", ReasonHome, true, "home n2 (member bound there)"},
		{"terminating member does not set home; its attachment does",
			input(p, three(), claim("ns/data", p, bound("a", "n2").terminating()).attached("n2")), PinHome, "n2", ReasonHome, true, "volume attached there"},
		// An attachment on a node that cannot take pods is not a home, and
		// a pod released before the detach would hang on Multi-Attach.
		{"attachment on a cordoned node is not a home: wait for the detach",
			input(p, nodeList{node("n1"), node("n2").cordoned()}, claim("ns/data", p).attached("n2")), Hold, "", ReasonWaitDetach, false, "waiting for its volume to leave n2"},
		{"attachment on a NotReady node is not a home: wait for the detach",
			input(p, nodeList{node("n1"), node("n2").notReady()}, claim("ns/data", p).attached("n2")), Hold, "", ReasonWaitDetach, false, "leave n2"},
		{"volume still detaching from a cordoned node: wait",
			input(p, nodeList{node("n1"), node("n2").cordoned()}, claim("ns/data", p).detaching("n2")), Hold, "", ReasonWaitDetach, false, "leave n2"},
		// Failover released the volume from a deleted node; the
		// attach/detach controller still counts it there until its sync.
		{"volume released from a deleted node: wait for the attach/detach controller's sync",
			input(p, nodeList{node("n1")}, claim("ns/data", p).stale("gone")), Hold, "", ReasonWaitDetach, false, "deleted node gone"},
		{"home cordoned with members still there: hold, never pin to it",
			input(p, nodeList{node("n1"), node("n2").cordoned()}, claim("ns/data", p, bound("a", "n2"))), Hold, "", ReasonHomeLeaving, false, "home n2 is cordoned"},
		{"home NotReady: hold", input(p, nodeList{node("n1"), node("n2").notReady()}, claim("ns/data", p, bound("a", "n2"))), Hold, "", ReasonHomeLeaving, false, "not Ready"},
		{"home Node object gone: hold", input(p, nodeList{node("n1")}, claim("ns/data", p, bound("a", "n2"))), Hold, "", ReasonHomeLeaving, false, "is gone"},
		{"drained home, members all terminating: wait for them and the detach",
			input(p, nodeList{node("n1"), node("n2").cordoned()}, claim("ns/data", p, bound("a", "n2").terminating()).attached("n2")), Hold, "", ReasonWaitDetach, false, "leave n2"},
		{"drained home, members gone, volume detached: placed afresh",
			input(p, nodeList{node("n1"), node("n2").cordoned()}, claim("ns/data", p)), PinCandidates, "n1", ReasonCandidates, true, "no home"},
		{"split: the volume's node wins",
			input(p, three(), claim("ns/data", p, bound("a", "n1"), bound("b", "n2"), bound("c", "n1")).attached("n2")), PinHome, "n2", ReasonHome, true, "split; volume attached there"},
		{"split without attachment: most members",
			input(p, three(), claim("ns/data", p, bound("a", "n1"), bound("b", "n2"), bound("c", "n2"))), PinHome, "n2", ReasonHome, true, "most members"},
		{"two claims, two homes: hold",
			input(p, three(), claim("ns/a", p, bound("x", "n1")), claim("ns/b", p, bound("y", "n2"))), Hold, "", ReasonHomeConflict, false, "ns/a lives on n1 but claim ns/b lives on n2"},
		{"two claims, one home",
			input(p, three(), claim("ns/a", p, bound("x", "n3")), claim("ns/b", p)), PinHome, "n3", ReasonHome, true, ""},
		{"home lacks room: pinned anyway, Fits=False",
			input(p, nodeList{node("n1").used(3800), node("n2")}, claim("ns/data", p, bound("a", "n1").requests(300))), PinHome, "n1", ReasonHome, false, ""},
		{"fresh: only nodes where the whole huddle fits",
			input(p, nodeList{node("n1").used(3000), node("n2"), node("n3").used(1000)},
				claim("ns/data", p, gated("q", 0), gated("r", 0), gated("s", 0), gated("u", 0), gated("v", 0))), // 6 x 500m = 3 CPU
			PinCandidates, "n2,n3", ReasonCandidates, true, "3 CPU"},
		{"fresh: not the oldest member waits", input(gated("young", 0), three(), claim("ns/data", gated("young", 0), gated("elder", 9))),
			Hold, "", ReasonFollowing, false, "member elder is placed first"},
		{"fresh: a member being scheduled sets the home", input(p, three(), claim("ns/data", p, gated("q", 5).ungated())),
			Hold, "", ReasonFollowing, false, "member q is placed first"},
		{"fresh: no node fits: where most fits, Fits=False",
			input(p, nodeList{node("n1").used(1000), node("n2").used(2000), node("n3").used(1000)},
				claim("ns/data", p, gated("q", 0).requests(3500))), // 4 CPU
			PinCandidates, "n1,n3", ReasonNoFit, false, "no node fits the whole huddle"},
		{"fresh: members' selectors and taints limit candidates",
			input(p, nodeList{node("n1").zone("b"), node("n2"), node("n3").zone("b").taint("dedicated")},
				claim("ns/data", p, gated("q", 0).selector(corev1.LabelTopologyZone, "b"))),
			PinCandidates, "n1", ReasonCandidates, true, ""},
		{"fresh: no eligible node: hold",
			input(p, nodeList{node("n1").notReady(), node("n2").cordoned()}, claim("ns/data", p)), Hold, "", ReasonNoCandidates, false, "no node can take every member"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if d.Action != tc.action || strings.Join(d.Nodes, ",") != tc.nodes || d.Reason != tc.reason || d.Fits != tc.fits {
				t.Fatalf("got %s %v reason=%s fits=%v (%s); want %s [%s] reason=%s fits=%v",
					d.Action, d.Nodes, d.Reason, d.Fits, d.Message, tc.action, tc.nodes, tc.reason, tc.fits)
			}
			if !strings.Contains(d.Message, tc.inMessage) {
				t.Errorf("message %q lacks %q", d.Message, tc.inMessage)
			}
			if !d.Fits && d.Action != Hold && d.Shortfall == "" {
				t.Error("Fits=false without a shortfall")
			}
		})
	}
}

func TestShortfallNamesWhatIsMissing(t *testing.T) {
	in := input(gated("p", 1), nodeList{node("n1").used(3800)}, claim("ns/data", gated("p", 1), bound("a", "n1").requests(300)))
	d := Decide(in)
	if want := "node n1 lacks 300m CPU"; !strings.Contains(d.Shortfall, want) {
		t.Fatalf("shortfall %q lacks %q", d.Shortfall, want)
	}
}

func TestDemand(t *testing.T) {
	c := claim("ns/data",
		bound("web-1", "n1").ownedBy("deploy/web"), // owner may run 3 (2 replicas + 1 surge)
		gated("web-2", 0).ownedBy("deploy/web"),
		gated("lone", 0).requests(100),
		Member{Name: "done", Done: true, Requests: cpu(9000)},
	)
	c.Owners = map[string]Owner{"deploy/web": {MaxPods: 3, PerPod: cpu(500)}}
	c.Headroom = Resources{MilliCPU: 200}
	other := claim("ns/logs", gated("lone", 0).requests(100)) // shared member counted once
	got := Demand([]*Claim{&c, &other})
	want := Resources{MilliCPU: 3*500 + 100 + 200, Memory: 4 * (64 << 20), Pods: 4}
	if !got.Equal(want) {
		t.Fatalf("demand %+v, want %+v", got, want)
	}
}

func TestMaxCandidates(t *testing.T) {
	var nodes nodeList
	for i := range 100 {
		nodes = append(nodes, node(fmt.Sprintf("n%03d", i)))
	}
	in := input(gated("p", 1), nodes, claim("ns/data", gated("p", 1)))
	in.MaxCandidates = 5
	if d := Decide(in); d.Action != PinCandidates || len(d.Nodes) != 5 {
		t.Fatalf("got %s with %d nodes, want 5 candidates", d.Action, len(d.Nodes))
	}
}

// TestPlacingMarkerHolds: with another member recorded as placing, a
// fresh huddle's member waits even if its own cache shows nothing in
// flight; the recorded member itself proceeds; a record of a member that
// left holds nobody.
func TestPlacingMarkerHolds(t *testing.T) {
	c := claim("ns/data", gated("p", 9), gated("q", 1))
	c.Placing = "q"
	if d := Decide(input(gated("p", 9), nodeList{node("n1")}, c)); d.Action != Hold || !strings.Contains(d.Message, "member q is placed first") {
		t.Fatalf("p: %s %s", d.Action, d.Message)
	}
	c.Placing = "p"
	if d := Decide(input(gated("p", 9), nodeList{node("n1")}, c)); d.Action != PinCandidates {
		t.Fatalf("p recorded as placing: %s %s", d.Action, d.Message)
	}
	// A recorded member that is gone or terminating (its node was
	// drained) holds nobody; while it terminates, the volume it holds
	// does (WaitingForDetach), and once it is gone the pod is placed.
	gone := claim("ns/data", gated("p", 9))
	gone.Placing = "old"
	if d := Decide(input(gated("p", 9), nodeList{node("n1"), node("n2").cordoned()}, gone)); d.Action != PinCandidates {
		t.Fatalf("recorded member gone: %s %s", d.Action, d.Message)
	}
	// A recorded member deleted before it was bound holds nobody.
	unbound := claim("ns/data", gated("p", 9), Member{Name: "old", Terminating: true})
	unbound.Placing = "old"
	if d := Decide(input(gated("p", 9), nodeList{node("n1")}, unbound)); d.Action != PinCandidates {
		t.Fatalf("recorded member terminating, unbound: %s %s", d.Action, d.Message)
	}
	leaving := claim("ns/data", gated("p", 9), bound("old", "n2").terminating())
	leaving.Placing = "old"
	if d := Decide(input(gated("p", 9), nodeList{node("n1"), node("n2").cordoned()}, leaving)); d.Reason != ReasonWaitDetach {
		t.Fatalf("recorded member terminating: %s %s %s, want %s (not following it)", d.Action, d.Reason, d.Message, ReasonWaitDetach)
	}
}

// TestWaitsOn: a hold says which node changes can end it, so the placer
// looks again at that pod on those changes only.
func TestWaitsOn(t *testing.T) {
	p := gated("p", 1)
	for _, tc := range []struct {
		name string
		in   *Input
		want string
	}{
		{"home cordoned", input(p, nodeList{node("n1"), node("n2").cordoned()}, claim("ns/data", p, bound("a", "n2"))), WaitsOnNode("n2")},
		{"no eligible node", input(p, nodeList{node("n1").notReady()}, claim("ns/data", p)), WaitsOnAnyNode},
		{"following the first member", input(gated("young", 0), nodeList{node("n1")}, claim("ns/data", gated("young", 0), gated("elder", 9))), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Decide(tc.in)
			if d.Action != Hold || d.WaitsOn != tc.want {
				t.Fatalf("%s waits on %q, want Hold waiting on %q", d.Action, d.WaitsOn, tc.want)
			}
			held := Apply(&corev1.Pod{}, d, func(n string) string { return n })
			if held.Annotations[AnnotationHeldFor] != tc.want {
				t.Errorf("annotation %q, want %q", held.Annotations[AnnotationHeldFor], tc.want)
			}
		})
	}
}

// TestStaleAttachmentHoldEnds: the hold for a volume released from a
// deleted node says when to look again, and a pod pinned to that node's
// name (a move's target) is not held by it.
func TestStaleAttachmentHoldEnds(t *testing.T) {
	c := claim("ns/data", gated("p", 1)).stale("gone")
	d := Decide(input(gated("p", 1), nodeList{node("n1")}, c))
	if d.Action != Hold || !d.Until.Equal(t0.Add(time.Minute)) {
		t.Fatalf("decision %+v, want a hold until the sync", d)
	}
	if _, wait := waitForDetach(&c, "gone", false, "x"); wait {
		t.Error("held a pod going to the node the volume is counted on")
	}
}
