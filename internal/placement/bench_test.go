package placement

import (
	"fmt"
	"testing"
)

// cluster builds nodes with pods' requests already summed, and huddles of
// 20 members, one of them gated. Decide sees only the huddle's members
// (the controller indexes pods by claim), so its cost must not depend on
// how many pods the cluster has.
func cluster(nodes, pods int) (nodeList, []Claim) {
	ns := make(nodeList, nodes)
	for i := range ns {
		ns[i] = node(fmt.Sprintf("ip-10-0-%d-%d", i/250, i%250))
	}
	const size = 20
	claims := make([]Claim, 0, pods/size)
	for h := 0; h < pods/size; h++ {
		home := ns[h%nodes]
		c := Claim{Key: fmt.Sprintf("ns-%d/data", h), Shared: true, Owners: map[string]Owner{}}
		owner := fmt.Sprintf("deploy/%d", h)
		c.Owners[owner] = Owner{MaxPods: size + 5, PerPod: cpu(10)}
		for m := range size {
			mem := bound(fmt.Sprintf("m-%d-%d", h, m), home.Name).ownedBy(owner).requests(10)
			if m == size-1 {
				mem = gated(mem.Name, 0).ownedBy(owner).requests(10)
			} else {
				home.Requested = home.Requested.Add(mem.Requests)
			}
			c.Members = append(c.Members, mem)
		}
		claims = append(claims, c)
	}
	return ns, claims
}

// BenchmarkDecide: a gated member of a huddle that has a home (the common
// case) and the first member of a new huddle (a scan for candidates), at
// 5,000 nodes with 5,000 and 50,000 pods.
func BenchmarkDecide(b *testing.B) {
	for _, pods := range []int{5000, 50000} {
		nodes, claims := cluster(5000, pods)
		b.Run(fmt.Sprintf("home/nodes=5000/pods=%d", pods), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c := claims[i%len(claims)]
				in := &Input{Pod: c.Members[len(c.Members)-1], Claims: []Claim{c}, Nodes: nodes}
				if d := Decide(in); d.Action != PinHome {
					b.Fatal(d)
				}
			}
		})
		b.Run(fmt.Sprintf("fresh/nodes=5000/pods=%d", pods), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				c := claims[i%len(claims)]
				fresh := Claim{Key: c.Key, Shared: true, Owners: c.Owners, Members: []Member{gated("first", 0).ownedBy("deploy/x")}}
				in := &Input{Pod: fresh.Members[0], Claims: []Claim{fresh}, Nodes: nodes}
				if d := Decide(in); d.Action != PinCandidates {
					b.Fatal(d)
				}
			}
		})
	}
}
