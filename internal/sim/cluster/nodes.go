package cluster

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/huddle-io/huddle/internal/instancetype"
	"github.com/huddle-io/huddle/internal/sim/kubelet"
)

// DefaultZones are where a node group's nodes go when no zones are given:
// an EKS managed node group over three subnets, one per zone, spreads its
// instances over them.
var DefaultZones = []string{"us-east-1a", "us-east-1b", "us-east-1c"}

// NodeFlags describe a homogeneous node group, as the CLI flags give it.
type NodeFlags struct {
	Count int
	// InstanceType sizes the nodes (default m5.xlarge).
	InstanceType string
	// CPU and Memory, if set, replace the instance type's capacity; the
	// allocatable is derived from them by the same EKS formulas.
	CPU    string
	Memory string
	// Zones are used round-robin (default DefaultZones); the region is the
	// zone minus its letter.
	Zones []string
}

// Specs expands the flags into node specs named like EKS nodes
// (ip-10-0-<zone>-<n>).
func (f NodeFlags) Specs() ([]kubelet.NodeSpec, error) {
	if f.Count < 0 {
		return nil, fmt.Errorf("--nodes must be 0 or more, got %d", f.Count)
	}
	if f.InstanceType == "" {
		f.InstanceType = instancetype.Default
	}
	if _, err := instancetype.Lookup(f.InstanceType); err != nil {
		return nil, fmt.Errorf("--instance-type: %v", err)
	}
	var cpu, mem resource.Quantity
	if f.CPU != "" {
		q, err := resource.ParseQuantity(f.CPU)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("--node-cpu %q: want a positive CPU quantity such as 4 or 3500m", f.CPU)
		}
		cpu = q
	}
	if f.Memory != "" {
		q, err := resource.ParseQuantity(f.Memory)
		if err != nil || q.Sign() <= 0 {
			return nil, fmt.Errorf("--node-memory %q: want a positive memory quantity such as 16Gi", f.Memory)
		}
		mem = q
	}
	zones := f.Zones
	if len(zones) == 0 {
		zones = DefaultZones
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
