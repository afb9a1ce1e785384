package cluster

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/huddle-io/huddle/internal/sim/kubelet"
)

// NodeFlags describe a homogeneous node group, as the CLI flags give it.
type NodeFlags struct {
	Count  int
	CPU    string
	Memory string
	// Zones are used round-robin; the region is the zone minus its letter.
	Zones        []string
	InstanceType string
}

// Specs expands the flags into node specs named like EKS nodes
// (ip-10-0-<zone>-<n>).
func (f NodeFlags) Specs() ([]kubelet.NodeSpec, error) {
	if f.Count < 0 {
		return nil, fmt.Errorf("--nodes must be 0 or more, got %d", f.Count)
	}
	cpu, err := resource.ParseQuantity(f.CPU)
	if err != nil || cpu.Sign() <= 0 {
		return nil, fmt.Errorf("--node-cpu %q: want a positive CPU quantity such as 4 or 3500m", f.CPU)
	}
	mem, err := resource.ParseQuantity(f.Memory)
	if err != nil || mem.Sign() <= 0 {
		return nil, fmt.Errorf("--node-memory %q: want a positive memory quantity such as 16Gi", f.Memory)
	}
	zones := f.Zones
	if len(zones) == 0 {
		zones = []string{"us-east-1a"}
	}
	for _, z := range zones {
		if len(z) < 2 || !strings.ContainsAny(z[len(z)-1:], "abcdefghijklmnopqrstuvwxyz") {
			return nil, fmt.Errorf("--zones %q: want availability zone names such as us-east-1a", z)
		}
	}
	specs := make([]kubelet.NodeSpec, 0, f.Count)
	for i := range f.Count {
		zi := i % len(zones)
		specs = append(specs, kubelet.NodeSpec{
			Name:         fmt.Sprintf("ip-10-0-%d-%d", zi+1, 10+i/len(zones)),
			Zone:         zones[zi],
			InstanceType: f.InstanceType,
			CPU:          cpu,
			Memory:       mem,
		})
	}
	return specs, nil
}
