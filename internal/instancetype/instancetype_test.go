package instancetype

import (
	"math"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// TestM5XlargeEKSFigures: an m5.xlarge reports what an EKS node of that
// type reports.
//   - pods 58: amazon-eks-ami eni-max-pods.txt "m5.xlarge 58" (4 ENIs x 14 + 2);
//   - cpu 3920m: 4000m less kube-reserved 60m+10m+10m; real m5.xlarge EKS
//     nodes report allocatable cpu 3920m;
//   - memory: capacity (MemTotal, estimated; see TestMemTotalNearRealNodes)
//     less 993Mi: kube-reserved 11Mi*58+255Mi = 893Mi and the 100Mi hard
//     eviction threshold. Real m5.xlarge nodes differ by exactly that:
//     15896988Ki capacity, 14880156Ki allocatable (see TestAllocatableOfRealNodes);
//   - EBS attach limit 26: 27 shared Nitro attachments less the root volume,
//     with only the primary ENI attached when the driver starts.
func TestM5XlargeEKSFigures(t *testing.T) {
	m5, err := Lookup("m5.xlarge")
	if err != nil {
		t.Fatal(err)
	}
	capacity, alloc := m5.Capacity(), m5.Allocatable()
	for _, c := range []struct {
		what      string
		got, want resource.Quantity
	}{
		{"capacity cpu", capacity[corev1.ResourceCPU], resource.MustParse("4")},
		{"capacity memory", capacity[corev1.ResourceMemory], resource.MustParse("16052698Ki")},
		{"capacity pods", capacity[corev1.ResourcePods], resource.MustParse("58")},
		{"allocatable cpu", alloc[corev1.ResourceCPU], resource.MustParse("3920m")},
		{"allocatable memory", alloc[corev1.ResourceMemory], resource.MustParse("16052698Ki")},
		{"allocatable pods", alloc[corev1.ResourcePods], resource.MustParse("58")},
		{"allocatable ephemeral-storage", alloc[corev1.ResourceEphemeralStorage], resource.MustParse("71Gi")},
	} {
		if c.what == "allocatable memory" {
			c.want.Sub(resource.MustParse("993Mi"))
		}
		if c.got.Cmp(c.want) != 0 {
			t.Errorf("%s = %s, want %s", c.what, c.got.String(), c.want.String())
		}
	}
	if got := alloc[corev1.ResourceMemory]; got.String() != "15035866Ki" {
		t.Errorf("allocatable memory prints %s, want 15035866Ki", got.String())
	}
	if m5.MaxPods() != 58 || m5.AttachLimit() != 26 {
		t.Errorf("max pods %d, attach limit %d; want 58 and 26", m5.MaxPods(), m5.AttachLimit())
	}
}

// TestAllocatableOfRealNodes: fed the capacity real EKS nodes reported, the
// formulas give the allocatable those nodes reported. Sources: a public
// cluster report of m5.xlarge and r5.2xlarge nodes (us-east-1, AL2), and
// 2i2c-org/infrastructure's node-capacity-info.json (r5.xlarge, r5.4xlarge).
func TestAllocatableOfRealNodes(t *testing.T) {
	for _, n := range []struct {
		typ              string
		capMem, allocMem string
		allocCPU         string
	}{
		{"m5.xlarge", "15896988Ki", "14880156Ki", "3920m"},
		{"m5.xlarge", "16069020Ki", "15052188Ki", "3920m"},
		{"r5.2xlarge", "65023384Ki", "64006552Ki", "7910m"},
		{"r5.xlarge", "33164840960", "32123604992", "3920m"},
		{"r5.4xlarge", "133523050496", "130451771392", "15890m"},
	} {
		typ, err := Lookup(n.typ)
		if err != nil {
			t.Fatal(err)
		}
		capacity := typ.Capacity()
		capacity[corev1.ResourceMemory] = resource.MustParse(n.capMem)
		alloc := Allocatable(capacity)
		if got, want := alloc[corev1.ResourceMemory], resource.MustParse(n.allocMem); got.Cmp(want) != 0 {
			t.Errorf("%s with capacity %s: allocatable memory %s, the node reported %s", n.typ, n.capMem, got.String(), want.String())
		}
		if got, want := alloc[corev1.ResourceCPU], resource.MustParse(n.allocCPU); got.Cmp(want) != 0 {
			t.Errorf("%s: allocatable cpu %s, the node reported %s", n.typ, got.String(), want.String())
		}
	}
}

// TestMemTotalNearRealNodes: the MemTotal estimate is within 1% of the
// capacity real EKS nodes reported (sources as above).
func TestMemTotalNearRealNodes(t *testing.T) {
	for _, n := range []struct {
		typ, capMem string
	}{
		{"m5.xlarge", "15896988Ki"},
		{"m5.xlarge", "16069020Ki"},
		{"r5.xlarge", "33164840960"},
		{"r5.2xlarge", "65023384Ki"},
		{"r5.4xlarge", "133523050496"},
	} {
		typ, _ := Lookup(n.typ)
		got, real := MemTotal(typ.MemoryGiB), resource.MustParse(n.capMem)
		off := float64(got.Value()-real.Value()) / float64(real.Value())
		if math.Abs(off) > 0.01 {
			t.Errorf("%s: MemTotal estimate %s is %.2f%% off the %s a real node reported", n.typ, got.String(), 100*off, n.capMem)
		}
	}
}

func TestKubeReservedCPU(t *testing.T) {
	for _, c := range []struct{ capacity, want int64 }{
		{500, 30}, {1000, 60}, {2000, 70}, {3500, 77}, {4000, 80}, {8000, 90}, {16000, 110}, {64000, 230},
	} {
		if got := KubeReservedCPU(c.capacity); got != c.want {
			t.Errorf("KubeReservedCPU(%dm) = %dm, want %dm", c.capacity, got, c.want)
		}
	}
}

// TestTableConsistent checks every row against the rules the sources
// follow, so a typo in the table shows.
func TestTableConsistent(t *testing.T) {
	sizes := map[string]int64{"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}
	gibPerVCPU := map[string]int64{"m5": 4, "m6i": 4, "m7g": 4, "t3": 4, "c5": 2, "c6i": 2, "r5": 8, "r6i": 8}
	// eni-max-pods.txt's figures for these sizes.
	maxPods := map[string]int64{"large": 29, "xlarge": 58, "2xlarge": 58, "4xlarge": 234}
	seen := map[string]bool{}
	for _, typ := range table {
		t.Run(typ.Name, func(t *testing.T) {
			family, size, ok := strings.Cut(typ.Name, ".")
			if !ok || seen[typ.Name] {
				t.Fatalf("name %q is not family.size or is listed twice", typ.Name)
			}
			seen[typ.Name] = true
			if typ.VCPUs != sizes[size] {
				t.Errorf("%d vCPUs, want %d for a %s", typ.VCPUs, sizes[size], size)
			}
			if typ.MemoryGiB != gibPerVCPU[family]*typ.VCPUs {
				t.Errorf("%d GiB, want %d per vCPU", typ.MemoryGiB, gibPerVCPU[family])
			}
			if wantArch := map[bool]string{true: ARM64, false: AMD64}[strings.HasSuffix(family, "g")]; typ.Arch != wantArch {
				t.Errorf("arch %s, want %s (Graviton families end in g)", typ.Arch, wantArch)
			}
			want := maxPods[size]
			if typ.Name == "t3.large" {
				want = 35 // 3 ENIs x 12 addresses
			}
			if typ.MaxPods() != want {
				t.Errorf("max pods %d, want %d", typ.MaxPods(), want)
			}
			if typ.EBSDedicated || typ.EBSAttachments != nitroSharedEBS || typ.AttachLimit() != 26 {
				t.Errorf("EBS %d (dedicated %v), limit %d; want the driver's shared Nitro default, limit 26", typ.EBSAttachments, typ.EBSDedicated, typ.AttachLimit())
			}
			capacity, alloc := typ.Capacity(), typ.Allocatable()
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory, corev1.ResourcePods, corev1.ResourceEphemeralStorage} {
				c, a := capacity[r], alloc[r]
				if a.Sign() <= 0 || a.Cmp(c) > 0 {
					t.Errorf("%s: allocatable %s, capacity %s: want 0 < allocatable <= capacity", r, a.String(), c.String())
				}
			}
			nominal := resource.NewQuantity(typ.MemoryGiB<<30, resource.BinarySI)
			if m := capacity[corev1.ResourceMemory]; m.Cmp(*nominal) >= 0 || m.Value() < nominal.Value()*90/100 {
				t.Errorf("capacity memory %s: want a little under the nominal %s", m.String(), nominal.String())
			}
		})
	}
	if len(table) != 31 {
		t.Errorf("%d types, want 31 (7 families x 4 sizes, t3 x 3)", len(table))
	}
}

func TestLookupUnknownListsKnown(t *testing.T) {
	_, err := Lookup("m5.24xlarge")
	if err == nil || !strings.Contains(err.Error(), `unknown instance type "m5.24xlarge"`) || !strings.Contains(err.Error(), "m5.xlarge") || !strings.Contains(err.Error(), "t3.2xlarge") {
		t.Fatalf("error %v: want it to name the type and list the known ones", err)
	}
	if AttachLimitOf("m5.24xlarge") != 26 {
		t.Errorf("an unknown type gets attach limit %d, want the driver's Nitro default 26", AttachLimitOf("m5.24xlarge"))
	}
}

// TestAllocatableOfOverrides: a capacity given by hand gets the same
// reservations, and none goes below zero.
func TestAllocatableOfOverrides(t *testing.T) {
	alloc := Allocatable(corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("8Gi"),
		corev1.ResourcePods:   resource.MustParse("20"),
	})
	// 11*20+255+100 = 575Mi.
	if cpu, mem := alloc[corev1.ResourceCPU], alloc[corev1.ResourceMemory]; cpu.String() != "1930m" || mem.String() != "7617Mi" {
		t.Errorf("allocatable cpu %s memory %s, want 1930m and 7617Mi", cpu.String(), mem.String())
	}
	tiny := Allocatable(corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")})
	if m := tiny[corev1.ResourceMemory]; m.Sign() != 0 {
		t.Errorf("256Mi less 11*110+255+100Mi reserved = %s, want 0", m.String())
	}
}
