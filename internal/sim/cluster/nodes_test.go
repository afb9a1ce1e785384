package cluster

import "testing"

// TestNodeFlagsSpread: by default a node group spreads over three zones,
// as an EKS node group over three subnets does, and the instance type and
// overrides pass through to every node.
func TestNodeFlagsSpread(t *testing.T) {
	specs, err := NodeFlags{Count: 4, InstanceType: "c5.2xlarge", CPU: "6"}.Specs()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ name, zone string }{
		{"ip-10-0-1-10", "us-east-1a"}, {"ip-10-0-2-10", "us-east-1b"}, {"ip-10-0-3-10", "us-east-1c"}, {"ip-10-0-1-11", "us-east-1a"},
	}
	for i, s := range specs {
		if s.Name != want[i].name || s.Zone != want[i].zone || s.InstanceType != "c5.2xlarge" || s.CPU.String() != "6" || !s.Memory.IsZero() {
			t.Errorf("node %d: %s in %s, %s, cpu %s memory %s; want %s in %s, c5.2xlarge, cpu 6 and the type's memory",
				i, s.Name, s.Zone, s.InstanceType, s.CPU.String(), s.Memory.String(), want[i].name, want[i].zone)
		}
		if err := s.Check(); err != nil {
			t.Error(err)
		}
	}
	if len(specs) != len(want) {
		t.Fatalf("%d specs, want %d", len(specs), len(want))
	}
	one, err := NodeFlags{Count: 1}.Specs()
	if err != nil || one[0].InstanceType != "m5.xlarge" || !one[0].CPU.IsZero() || !one[0].Memory.IsZero() || one[0].Capacity != nil {
		t.Fatalf("default node %+v (%v): want an m5.xlarge sized by its type", one, err)
	}
}
