// Package instancetype describes the EC2 instance types of EKS node groups
// as a node of that type reports itself: the capacity the kubelet sees, the
// allocatable the EKS AMI's kubelet configuration leaves for pods, the max
// pods the VPC CNI allows, and the EBS CSI driver's attach limit.
//
// Where each figure comes from (see also the table in table.go):
//   - max pods: amazon-eks-ami (eni-max-pods.txt; nodeadm's
//     calculateStandardMaxPods), ENIs*(IPv4 per ENI - 1) + 2: one address
//     per ENI is the ENI's own, and two host-network pods (aws-node,
//     kube-proxy) need none;
//   - kube-reserved: amazon-eks-ami nodeadm (internal/kubelet/config.go):
//     memory 11Mi*maxPods + 255Mi; CPU 6% of the first core, 1% of the
//     second, 0.5% of the next two and 0.25% of every core above four;
//     ephemeral-storage 1Gi. No system-reserved figures are set;
//   - hard eviction thresholds of that configuration: memory.available<100Mi,
//     nodefs.available<10%;
//   - allocatable = capacity - kube-reserved - hard eviction threshold, as
//     the kubelet computes it (never below zero);
//   - EBS attach limit: aws-ebs-csi-driver (pkg/driver/node.go
//     getVolumesLimit): the type's attachments, less the root volume, and
//     on a shared (Nitro) limit less the ENIs attached beyond the primary
//     one when the driver starts.
//
// Capacity memory is the memory the kernel reports (MemTotal), which the
// kubelet reports as capacity, not the instance's nominal GiB; see MemTotal
// for how it is estimated and how close that comes to real nodes.
package instancetype

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Architectures, as the kubernetes.io/arch label spells them.
const (
	AMD64 = "amd64"
	ARM64 = "arm64"
)

const (
	// Default is the instance type of a node that names none.
	Default = "m5.xlarge"
	// DefaultMaxPods is the max pods nodeadm configures when it cannot
	// look the instance type up (the kubelet's own default).
	DefaultMaxPods = 110
	// RootVolume is the node's root EBS volume, eksctl's default size; the
	// kubelet reports it as ephemeral-storage capacity.
	RootVolume = 80 << 30

	// nitroSharedEBS is the EBS CSI driver's attachment count for Nitro
	// types with no entry in its table: 27, shared with ENIs beyond the
	// primary one.
	nitroSharedEBS = 27
	// attachedENIsAtDriverStart: the driver counts the ENIs attached when
	// it starts (and the kubelet records its limit in the CSINode then). On
	// a new EKS node that is the primary ENI alone: the VPC CNI, with its
	// default WARM_ENI_TARGET=1, attaches a second only once pods use the
	// primary's addresses. A driver that starts after that reports one less.
	attachedENIsAtDriverStart = 1
	// rootVolumeAttachments: the driver reserves the root volume plus the
	// instance's extra block device mappings (none on an EKS node group).
	rootVolumeAttachments = 1
)

// Type is one EC2 instance type.
type Type struct {
	Name string
	// VCPUs and MemoryGiB are the nominal figures AWS lists.
	VCPUs     int64
	MemoryGiB int64
	// Arch is amd64 or arm64.
	Arch string
	// ENIs and IPv4PerENI are the network interfaces the type takes and
	// the IPv4 addresses each can hold.
	ENIs       int64
	IPv4PerENI int64
	// EBSAttachments is the EBS CSI driver's attachment count for the
	// type; EBSDedicated says it is not shared with network interfaces.
	EBSAttachments int32
	EBSDedicated   bool
}

// Lookup returns the instance type called name, or an error that lists the
// types it knows.
func Lookup(name string) (Type, error) {
	for _, t := range table {
		if t.Name == name {
			return t, nil
		}
	}
	return Type{}, fmt.Errorf("unknown instance type %q: huddle-sim knows %s", name, strings.Join(Names(), ", "))
}

// Names lists the known instance types by family, smallest first.
func Names() []string {
	names := make([]string, 0, len(table))
	for _, t := range table {
		names = append(names, t.Name)
	}
	return names
}

// MaxPods is the kubelet's max-pods on an EKS node of this type: one pod
// per secondary IPv4 address, plus the two host-network pods.
func (t Type) MaxPods() int64 { return t.ENIs*(t.IPv4PerENI-1) + 2 }

// AttachLimit is the EBS volume count the EBS CSI driver reports in the
// node's CSINode (allocatable.count): what the scheduler's NodeVolumeLimits
// plugin enforces.
func (t Type) AttachLimit() int32 {
	limit := t.EBSAttachments - rootVolumeAttachments
	if !t.EBSDedicated {
		limit -= attachedENIsAtDriverStart - 1
	}
	// The driver never reports less than 1: Kubernetes reads 0 as no limit.
	return max(limit, 1)
}

// AttachLimitOf is the attach limit of the type called name; a type this
// package does not know gets the driver's default for Nitro types, as the
// driver gives every type missing from its own table.
func AttachLimitOf(name string) int32 {
	if t, err := Lookup(name); err == nil {
		return t.AttachLimit()
	}
	return Type{EBSAttachments: nitroSharedEBS}.AttachLimit()
}

// Capacity is what the kubelet of a node of this type reports as capacity.
func (t Type) Capacity() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:              *resource.NewQuantity(t.VCPUs, resource.DecimalSI),
		corev1.ResourceMemory:           MemTotal(t.MemoryGiB),
		corev1.ResourcePods:             *resource.NewQuantity(t.MaxPods(), resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(RootVolume, resource.BinarySI),
	}
}

// Allocatable is what the kubelet of a node of this type reports as
// allocatable.
func (t Type) Allocatable() corev1.ResourceList { return Allocatable(t.Capacity()) }

// Allocatable applies the EKS AMI's kubelet configuration to a capacity:
// capacity less kube-reserved less the hard eviction threshold, per
// resource, never below zero. Memory's reservation depends on the pods
// capacity (DefaultMaxPods if capacity has none). Resources other than
// cpu, memory and ephemeral-storage are passed on as they are.
func Allocatable(capacity corev1.ResourceList) corev1.ResourceList {
	maxPods := int64(DefaultMaxPods)
	if p, ok := capacity[corev1.ResourcePods]; ok {
		maxPods = p.Value()
	}
	out := corev1.ResourceList{}
	for name, q := range capacity {
		var held resource.Quantity
		switch name {
		case corev1.ResourceCPU:
			held = *resource.NewMilliQuantity(KubeReservedCPU(q.MilliValue()), resource.DecimalSI)
		case corev1.ResourceMemory:
			held = KubeReservedMemory(maxPods)
			held.Add(EvictionHardMemory)
		case corev1.ResourceEphemeralStorage:
			held = KubeReservedEphemeralStorage
			held.Add(*resource.NewQuantity(q.Value()*EvictionHardNodefsPercent/100, resource.BinarySI))
		}
		q = q.DeepCopy()
		q.Sub(held)
		if q.Sign() < 0 {
			q.Set(0)
		}
		out[name] = q
	}
	return out
}

// The EKS AMI's reservations that do not depend on the node.
var (
	// EvictionHardMemory is the kubelet's memory.available hard eviction
	// threshold.
	EvictionHardMemory = resource.MustParse("100Mi")
	// KubeReservedEphemeralStorage is kube-reserved ephemeral-storage.
	KubeReservedEphemeralStorage = resource.MustParse("1Gi")
)

// EvictionHardNodefsPercent is the nodefs.available hard eviction
// threshold, a percentage of the root volume.
const EvictionHardNodefsPercent = 10

// KubeReservedCPU is the EKS AMI's kube-reserved CPU, in millicores, for a
// node of capacityMilli: 6% of the first core, 1% of the second, 0.5% of
// the third and fourth, 0.25% of the rest, each range rounded down as
// nodeadm does.
func KubeReservedCPU(capacityMilli int64) int64 {
	ranges := []struct{ from, to, basisPoints int64 }{
		{0, 1000, 600}, {1000, 2000, 100}, {2000, 4000, 50}, {4000, capacityMilli, 25},
	}
	var reserved int64
	for _, r := range ranges {
		if capacityMilli <= r.from {
			break
		}
		reserved += (min(capacityMilli, r.to) - r.from) * r.basisPoints / 10000
	}
	return reserved
}

// KubeReservedMemory is the EKS AMI's kube-reserved memory for a node that
// runs up to maxPods pods: 11Mi per pod plus 255Mi.
func KubeReservedMemory(maxPods int64) resource.Quantity {
	return *resource.NewQuantity((11*maxPods+255)<<20, resource.BinarySI)
}

// MemTotal estimates the memory the kernel of an EKS node with nominalGiB
// of RAM reports (MemTotal in /proc/meminfo), which the kubelet reports as
// its memory capacity: the nominal memory less what firmware and kernel
// keep, modelled as 275Mi plus 2.64% (page structures grow with memory).
//
// The model is fitted to capacities real EKS nodes reported: r5.xlarge
// 32387540Ki, r5.2xlarge 65023384Ki, r5.4xlarge 130393604Ki (within 0.05%)
// and m5.xlarge 16069020Ki (0.1%); other m5.xlarge nodes, on another AMI,
// reported 15896988Ki (the model is 1% above). The kernel and AMI version
// move MemTotal by that much, so no single figure is exact for a type. The
// 4 and 8 GiB types are extrapolated: no real report of theirs was checked.
func MemTotal(nominalGiB int64) resource.Quantity {
	ki := nominalGiB << 20
	ki -= 275<<10 + ki*264/10000
	return *resource.NewQuantity(ki<<10, resource.BinarySI)
}

// EKSAddOns is what the EKS add-ons' DaemonSets request on every node
// (aws-node 50m, kube-proxy 100m, ebs-csi-node 30m and 104Mi,
// eks-pod-identity-agent nothing; one pod each): room no workload gets.
// huddle-sim runs those pods (internal/sim/cluster/system.go names the
// sources, and a test there keeps the two equal); kubectl huddle plan
// subtracts them from a node of an instance type.
func EKSAddOns() corev1.ResourceList {
	return corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("180m"),
		corev1.ResourceMemory: resource.MustParse("104Mi"),
		corev1.ResourcePods:   resource.MustParse("4"),
	}
}
