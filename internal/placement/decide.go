package placement

import (
	"fmt"
	"hash/fnv"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Action is what to do with a gated pod.
type Action string

// The actions.
const (
	// Release removes the gate and leaves the pod's spec alone.
	Release Action = "Release"
	// PinHome narrows the pod to its huddle's home and releases it.
	PinHome Action = "PinHome"
	// PinCandidates narrows the pod to the nodes that fit its whole huddle
	// and releases it; the scheduler picks one.
	PinCandidates Action = "PinCandidates"
	// Hold keeps the gate: the pod cannot be placed yet (or at all).
	Hold Action = "Hold"
)

// Decision is Decide's answer.
type Decision struct {
	Action Action
	// Nodes are the nodes to pin to: [home] for PinHome, the candidates
	// for PinCandidates.
	Nodes []string
	// Claim is the key of the claim that decided it.
	Claim string
	// Reason is a CamelCase reason, Message a sentence for the pod's
	// annotation and events.
	Reason, Message string
	// Fits is false when the chosen nodes cannot hold the whole huddle;
	// Shortfall then says what is missing.
	Fits      bool
	Shortfall string
	// WaitsOn says, for a Hold, which node changes can end it:
	// WaitsOnNode(name) for one node, WaitsOnAnyNode for any; "" if no
	// node change can.
	WaitsOn string
	// Until, for a Hold that time ends, is when to look again.
	Until time.Time
}

// WaitsOnAnyNode: any node change can end the hold.
const WaitsOnAnyNode = "nodes"

// WaitsOnNode: a change of the named node can end the hold.
func WaitsOnNode(name string) string { return "node/" + name }

// Reasons of decisions.
const (
	ReasonNotShared     = "NotShared"
	ReasonClaimMissing  = "ClaimMissing"
	ReasonWaitClaim     = "WaitingForClaim"
	ReasonHome          = "PinnedHome"
	ReasonCandidates    = "PinnedCandidates"
	ReasonNoFit         = "NoNodeFitsHuddle"
	ReasonFollowing     = "WaitingForFirstMember"
	ReasonHomeConflict  = "ClaimsOnDifferentNodes"
	ReasonNoCandidates  = "NoCandidateNodes"
	ReasonHomeLeaving   = "HomeUnavailable"
	ReasonMoveTarget    = "PinnedMoveTarget"
	ReasonWaitDetach    = "WaitingForDetach"
	defaultMaxCandidate = 16
)

// Decide places one gated pod.
func Decide(in *Input) Decision {
	var shared []*Claim
	missing := ""
	for i := range in.Claims {
		c := &in.Claims[i]
		if c.Missing {
			if in.Now.Sub(in.Pod.Created) < in.MissingClaimGrace {
				return Decision{Action: Hold, Claim: c.Key, Reason: ReasonWaitClaim,
					Message: fmt.Sprintf("claim %s does not exist yet; waiting up to %s for it", c.Key, in.MissingClaimGrace)}
			}
			// Past the grace the pod is placed by its other claims: the
			// scheduler reports the missing one, and a pin to the home of
			// another claim still keeps that huddle together.
			if missing == "" {
				missing = c.Key
			}
			continue
		}
		if c.Shared {
			shared = append(shared, c)
		}
	}
	if len(shared) == 0 && missing != "" {
		return Decision{Action: Release, Claim: missing, Reason: ReasonClaimMissing, Fits: true,
			Message: fmt.Sprintf("claim %s still does not exist after %s; released to the scheduler, which will report it", missing, in.MissingClaimGrace)}
	}
	if len(shared) == 0 {
		why := "the pod mounts no claim"
		if len(in.Claims) > 0 {
			why = in.Claims[0].Key + ": " + in.Claims[0].NotShared
		}
		return Decision{Action: Release, Reason: ReasonNotShared, Message: "no shared claim (" + why + ")", Fits: true}
	}
	d := decideShared(in, shared)
	if missing != "" && d.Action != Hold {
		d.Message += fmt.Sprintf("; claim %s still does not exist after %s, which the scheduler will report", missing, in.MissingClaimGrace)
	}
	return d
}

// decideShared places a pod by its shared claims.
func decideShared(in *Input, shared []*Claim) Decision {

	// A huddle that is moving goes to its target, wherever its members
	// still are.
	for _, c := range shared {
		if c.MoveTarget == "" {
			continue
		}
		if why := unavailable(in.Nodes.Get(c.MoveTarget)); why != "" {
			return Decision{Action: Hold, Claim: c.Key, Reason: ReasonHomeLeaving, WaitsOn: WaitsOnNode(c.MoveTarget),
				Message: fmt.Sprintf("claim %s is moving to %s, which %s; waiting for the move to pick another node", c.Key, c.MoveTarget, why)}
		}
		// Every claim of the pod, not only the moving one, must have left
		// the other nodes: the pod will mount them all at the target.
		for _, o := range shared {
			if d, wait := waitForDetach(o, c.MoveTarget, true, "is moving to "+c.MoveTarget); wait {
				return d
			}
		}
		return Decision{Action: PinHome, Nodes: []string{c.MoveTarget}, Claim: c.Key, Reason: ReasonMoveTarget, Fits: true,
			Message: fmt.Sprintf("claim %s home %s (the huddle is moving there)", c.Key, c.MoveTarget)}
	}

	// Homes of the pod's huddles; all must agree.
	var home, homeClaim, homeHow string
	var homeless []*Claim
	for _, c := range shared {
		h, how := Home(c, in.Nodes)
		if h == "" {
			homeless = append(homeless, c)
			continue
		}
		if home != "" && h != home {
			return Decision{Action: Hold, Claim: c.Key, Reason: ReasonHomeConflict,
				Message: fmt.Sprintf("claim %s lives on %s but claim %s lives on %s; a pod cannot use both until one of them moves", homeClaim, home, c.Key, h)}
		}
		home, homeClaim, homeHow = h, c.Key, how
	}
	if home != "" {
		// A claim with no home whose first member is on its way to a node
		// will live wherever that member lands, which need not be home:
		// wait for it, then the homes agree or conflict.
		for _, c := range homeless {
			if first := FirstInFlight(c, in.Pod.Name); first != "" {
				return following(c.Key, first)
			}
		}
		if why := unavailable(in.Nodes.Get(home)); why != "" {
			// A pin is final once the gate is gone: pinned to a cordoned or
			// dead home the pod could never run. Keep it gated; once the
			// members there are gone the huddle is placed afresh.
			return Decision{Action: Hold, Claim: homeClaim, Reason: ReasonHomeLeaving, WaitsOn: WaitsOnNode(home),
				Message: fmt.Sprintf("claim %s home %s %s; waiting for the members there to leave, then placing the huddle where it fits", homeClaim, home, why)}
		}
		// Another claim of the pod whose volume is still attached or
		// detaching elsewhere (its members there terminating) would hang
		// the pod at home on Multi-Attach: wait for it to leave.
		for _, c := range shared {
			if d, wait := waitForDetach(c, home, false, "is needed on "+home); wait {
				return d
			}
		}
		d := Decision{Action: PinHome, Nodes: []string{home}, Claim: homeClaim, Reason: ReasonHome,
			Message: fmt.Sprintf("claim %s home %s (%s)", homeClaim, home, homeHow), Fits: true}
		demand := Demand(shared)
		if n := in.Nodes.Get(home); n != nil {
			if free := n.Free().Add(alreadyThere(shared, home)); !free.Covers(demand) {
				d.Fits, d.Shortfall = false, shortfall(home, free, demand)
			}
		}
		return d
	}

	// No home, but the volume is still on a node that cannot take pods
	// (a drained, fenced or lost home): a pod released now would hang on
	// a Multi-Attach error until the detach. Wait for it.
	for _, c := range shared {
		if d, wait := waitForDetach(c, "", true, "has no home to go back to"); wait {
			return d
		}
	}

	// No home: one member at a time; the first placed sets the home. The
	// rest wait for its bind, not for the node the scheduler chose before
	// it (the claim's selected node, the pod's nominated node): a bind
	// that fails sends the first member back to the scheduler, which may
	// bind it elsewhere, and a pin is final (see docs/huddle.md).
	for _, c := range shared {
		if first := FirstInFlight(c, in.Pod.Name); first != "" {
			return following(c.Key, first)
		}
	}
	// Members that also mount a claim whose first member is on its way
	// restrict this huddle to wherever it lands: wait for it.
	mine := map[string]bool{}
	for _, c := range shared {
		mine[c.Key] = true
	}
	for _, c := range shared {
		for i := range c.Members {
			m := &c.Members[i]
			if !m.live() {
				continue
			}
			for _, o := range m.Others {
				if !mine[o.Key] && o.Home == "" && o.FirstMember != "" && o.FirstMember != in.Pod.Name {
					return following(o.Key, o.FirstMember)
				}
			}
		}
	}
	if first := oldestGated(shared); first != in.Pod.Name {
		return following(shared[0].Key, first)
	}
	return candidates(in, shared)
}

// waitForDetach holds a pod whose volume is still on a node other than to
// (any node, if to is ""): attached or detaching there, or, with members,
// used by a live member bound there. Released now, the pod would be bound
// and report a Multi-Attach error until the volume leaves. The hold ends
// when the last member there is gone and the VolumeAttachment is deleted,
// both of which the placer watches. That happens as soon as the node's
// pods are gone, which for a node that is unreachable can be never: its
// pods stay Terminating until it returns or someone force-deletes them
// (failover does, for a node the cloud reports shut down); the message
// says so.
func waitForDetach(c *Claim, to string, members bool, why string) (Decision, bool) {
	var at string
	for i := range c.Members {
		if m := &c.Members[i]; members && m.live() && m.Node != "" && m.Node != to {
			at = m.Node
			break
		}
	}
	if at == "" {
		for _, n := range slices.Concat(c.VolumeNodes, c.Detaching) {
			if n != to {
				at = n
				break
			}
		}
	}
	if s := c.StaleAttachment; at == "" && s != nil && s.Node != to {
		return Decision{Action: Hold, Claim: c.Key, Reason: ReasonWaitDetach, Until: s.Until,
			Message: fmt.Sprintf("claim %s %s; its volume was released from deleted node %s, which the attach/detach controller counts as attached until its next state sync (by %s); "+
				"waiting so the pod does not hang on a Multi-Attach error", c.Key, why, s.Node, s.Until.UTC().Format(time.RFC3339))}, true
	}
	if at == "" {
		return Decision{}, false
	}
	return Decision{Action: Hold, Claim: c.Key, Reason: ReasonWaitDetach, WaitsOn: WaitsOnNode(at),
		Message: fmt.Sprintf("claim %s %s; waiting for its volume to leave %s before releasing the pod, so it does not hang on a Multi-Attach error "+
			"(the volume detaches once no pod on %s uses it; if %s is down for good, confirm it and delete its pods, or enable failover)", c.Key, why, at, at, at)}, true
}

// FirstInFlight names the member of a claim with no home that was released
// first and may yet set the home: the member recorded as placing (see
// Claim.Placing), or any live member released and not yet bound. except
// (the pod being decided) is never its own first member. "" if none.
func FirstInFlight(c *Claim, except string) string {
	if c.Placing != "" && c.Placing != except && c.placingInFlight() {
		return c.Placing
	}
	for i := range c.Members {
		m := &c.Members[i]
		if m.Name == except || !m.live() || m.Terminating || m.Node != "" || m.Gated {
			continue
		}
		return m.Name
	}
	return ""
}

// following holds a member of a huddle with no home behind the member
// placed first. The message is the same whatever stage the first member is
// at, so a waiting pod is annotated once, not once per stage.
func following(claim, first string) Decision {
	return Decision{Action: Hold, Claim: claim, Reason: ReasonFollowing,
		Message: fmt.Sprintf("claim %s has no home yet; member %s is placed first and the rest follow it to its node", claim, first)}
}

// placingInFlight: the member recorded as placed first still exists and
// may yet set the home (RecordedInFlight).
func (c *Claim) placingInFlight() bool {
	for i := range c.Members {
		if m := &c.Members[i]; m.Name == c.Placing {
			return RecordedInFlight(m, c.PlacingSince)
		}
	}
	return false
}

// RecordedInFlight says whether m, the pod of the name recorded since as
// its claim's first member, may yet set the home. A recorded member that
// is done or terminating (a drain, a rollout), or replaced by a gated pod
// of its name created after the record, no longer holds the others.
func RecordedInFlight(m *Member, since time.Time) bool {
	// Recorded to the second, so a pod created in the same second is
	// taken as the one recorded.
	replaced := m.Gated && !since.IsZero() && m.Created.Truncate(time.Second).After(since)
	return m.live() && !m.Terminating && !replaced
}

// unavailable says why a home node cannot take new pods, or "" if it can.
func unavailable(n *Node) string {
	switch {
	case n == nil:
		return "is gone"
	case n.Cordoned:
		return "is cordoned or being removed by an autoscaler (being drained?)"
	case !n.Ready:
		return "is not Ready"
	}
	return ""
}

// Home returns the node a claim's huddle lives on and how it was found, or
// "" if it has none.
func Home(c *Claim, nodes Nodes) (string, string) {
	count := map[string]int{}
	for i := range c.Members {
		m := &c.Members[i]
		if m.Node != "" && m.live() && !m.Terminating {
			count[m.Node]++
		}
	}
	switch len(count) {
	case 1:
		for n := range count {
			return n, "member bound there"
		}
	case 0:
		// A volume attached with no member left: prefer its node, saving a
		// detach and an attach, if it can take pods.
		for _, n := range c.VolumeNodes {
			if node := nodes.Get(n); node != nil && node.Ready && !node.Cordoned {
				return n, "volume attached there"
			}
		}
		return "", ""
	}
	// Split: the node holding the volume wins; else the most members.
	for _, n := range c.Attached {
		if count[n] > 0 {
			return n, "split; volume attached there"
		}
	}
	best := ""
	for n, k := range count {
		if best == "" || k > count[best] || (k == count[best] && n < best) {
			best = n
		}
	}
	return best, "split; most members there"
}

// Demand is what the huddles of claims need on one node: each owner's
// largest pod count times its pod's requests, the requests of members
// without an owner, and the claims' headroom. A member of several claims
// counts once. An owner's pod count is what it may run at once if every
// pod it makes mounts the claim (Owner.MaxPods), else its members; its
// pod's requests are the largest of its template's and its members' (the
// members carry what admission added: LimitRange defaults, RuntimeClass
// overhead).
func Demand(claims []*Claim) Resources {
	var total Resources
	seen := map[string]bool{}
	count := map[string]int64{}   // members per owner
	maxPods := map[string]int64{} // pods the owner may run at once
	perPod := map[string]Resources{}
	for _, c := range claims {
		total = total.Add(c.Headroom)
		for i := range c.Members {
			m := &c.Members[i]
			if !m.live() || seen[m.Name] {
				continue
			}
			seen[m.Name] = true
			if m.Owner == "" {
				total = total.Add(m.Requests)
				continue
			}
			count[m.Owner]++
			perPod[m.Owner] = perPod[m.Owner].Max(m.Requests)
		}
		for key, o := range c.Owners {
			if _, ok := count[key]; ok {
				perPod[key], maxPods[key] = perPod[key].Max(o.PerPod), max(maxPods[key], o.MaxPods)
			}
		}
	}
	for key, n := range count {
		total = total.Add(perPod[key].Times(max(n, maxPods[key])))
	}
	return total
}

// alreadyThere sums the requests of live members bound to node, which
// Node.Requested already counts but Demand counts too.
func alreadyThere(claims []*Claim, node string) Resources {
	var r Resources
	seen := map[string]bool{}
	for _, c := range claims {
		for i := range c.Members {
			m := &c.Members[i]
			if m.Node == node && m.live() && !seen[m.Name] {
				seen[m.Name] = true
				r = r.Add(m.Requests)
			}
		}
	}
	return r
}

func oldestGated(claims []*Claim) string {
	var first *Member
	for _, c := range claims {
		for i := range c.Members {
			m := &c.Members[i]
			if !m.Gated || !m.live() {
				continue
			}
			if first == nil || m.Created.Before(first.Created) || (m.Created.Equal(first.Created) && m.Name < first.Name) {
				first = m
			}
		}
	}
	if first == nil {
		return ""
	}
	return first.Name
}

// candidates finds nodes where the whole huddle fits and that every
// member may use, scanning from an offset that spreads huddles over the
// cluster and stopping after MaxCandidates fits.
func candidates(in *Input, claims []*Claim) Decision {
	demand := Demand(claims)
	limit := in.MaxCandidates
	if limit <= 0 {
		limit = defaultMaxCandidate
	}
	check := newEligibility(claims)
	n := in.Nodes.Len()
	start := 0
	if n > 0 {
		h := fnv.New32a()
		h.Write([]byte(claims[0].Key))
		start = int(h.Sum32() % uint32(n))
	}
	var fits []string
	bestScore, eligible := -1.0, 0
	var best []string
	var bestFree Resources
	for i := 0; i < n && len(fits) < limit; i++ {
		node := in.Nodes.At((start + i) % n)
		if !check.allows(node) {
			continue
		}
		eligible++
		free := node.Free()
		if free.Covers(demand) {
			fits = append(fits, node.Name)
			continue
		}
		switch s := score(free, demand); {
		case s > bestScore:
			bestScore, best, bestFree = s, []string{node.Name}, free
		case s == bestScore && len(best) < limit:
			best = append(best, node.Name)
		}
	}
	key := claims[0].Key
	if len(fits) > 0 {
		sort.Strings(fits)
		return Decision{Action: PinCandidates, Nodes: fits, Claim: key, Reason: ReasonCandidates, Fits: true,
			Message: fmt.Sprintf("claim %s has no home; candidates where the whole huddle fits (%s): %s", key, format(demand), strings.Join(fits, ","))}
	}
	if eligible == 0 {
		return Decision{Action: Hold, Claim: key, Reason: ReasonNoCandidates, Fits: false, WaitsOn: WaitsOnAnyNode,
			Shortfall: "no Ready, schedulable node satisfies every member's node selector, affinity and tolerations, the volume's zone, the homes of the members' other claims and the volume attach limits",
			Message:   fmt.Sprintf("claim %s: no node can take every member (selectors, tolerations, volume zone, homes of their other claims, volume attach limits); waiting for one", key)}
	}
	sort.Strings(best)
	return Decision{Action: PinCandidates, Nodes: best, Claim: key, Reason: ReasonNoFit, Fits: false,
		Shortfall: shortfall(best[0], bestFree, demand),
		Message:   fmt.Sprintf("claim %s: no node fits the whole huddle (%s); placed where most of it fits: %s", key, format(demand), strings.Join(best, ","))}
}

// score is the share of the demand that fits, by the scarcest resource.
func score(free, demand Resources) float64 {
	s := 1.0
	pairs := [][2]int64{{free.MilliCPU, demand.MilliCPU}, {free.Memory, demand.Memory}, {free.Pods, demand.Pods}}
	for k, v := range demand.Scalar {
		pairs = append(pairs, [2]int64{free.Scalar[k], v})
	}
	for _, p := range pairs {
		if p[1] > 0 {
			s = min(s, float64(max(p[0], 0))/float64(p[1]))
		}
	}
	return s
}

func shortfall(node string, free, demand Resources) string {
	var parts []string
	if d := demand.MilliCPU - free.MilliCPU; d > 0 {
		parts = append(parts, resource.NewMilliQuantity(d, resource.DecimalSI).String()+" CPU")
	}
	if d := demand.Memory - free.Memory; d > 0 {
		parts = append(parts, resource.NewQuantity(d, resource.BinarySI).String()+" memory")
	}
	if d := demand.Pods - free.Pods; d > 0 {
		parts = append(parts, fmt.Sprintf("%d pod slots", d))
	}
	for _, k := range scalarNames(demand) {
		if d := demand.Scalar[k] - free.Scalar[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %s", resource.NewQuantity(d, resource.DecimalSI), k))
		}
	}
	return fmt.Sprintf("node %s lacks %s for the whole huddle (%s)", node, strings.Join(parts, " and "), format(demand))
}

func format(r Resources) string {
	out := fmt.Sprintf("%s CPU, %s memory, %d pods",
		resource.NewMilliQuantity(r.MilliCPU, resource.DecimalSI), resource.NewQuantity(r.Memory, resource.BinarySI), r.Pods)
	for _, k := range scalarNames(r) {
		out += fmt.Sprintf(", %s %s", resource.NewQuantity(r.Scalar[k], resource.DecimalSI), k)
	}
	return out
}

// scalarNames are the scalar resources r has, sorted.
func scalarNames(r Resources) []corev1.ResourceName {
	var names []corev1.ResourceName
	for k, v := range r.Scalar {
		if v != 0 {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	return names
}
