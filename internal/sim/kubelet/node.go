package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/instancetype"
)

// Annotations a user sets on a simulated node.
const (
	// AnnotationPower set to "off" powers the node off; "on" (or removing
	// it) powers it back on.
	AnnotationPower = "sim.huddle.io/power"
	// AnnotationShutdown set to "true" shuts the instance down: powered off,
	// and the cloud reports it stopped.
	AnnotationShutdown = "sim.huddle.io/shutdown"
	// AnnotationTerminate set to "true" terminates the instance: powered
	// off for good; the cloud detaches its volumes and deletes its Node.
	AnnotationTerminate = "sim.huddle.io/terminate"
	// LabelSimulated marks nodes played by huddle-sim.
	LabelSimulated = "sim.huddle.io/simulated"
	// EBSDriver is the CSI driver listed on every node's CSINode.
	EBSDriver = "ebs.csi.aws.com"
	// KubeletVersion is reported in node status.
	KubeletVersion = "v1.36.3"
)

// NodeSpec describes a node to register. Its instance type (default
// m5.xlarge; see package instancetype) sizes it as an EKS node of that type:
// capacity, allocatable (what the EKS AMI's kubelet configuration leaves for
// pods), max pods, the EBS CSI driver's attach limit and the architecture.
// The other fields override that:
//   - CPU, Memory and Pods replace the type's capacity figures, and
//     allocatable is derived from the result by the same formulas: a
//     machine of that size;
//   - Capacity and Allocatable are reported as they are, resource by
//     resource, as a Node object from a manifest says them; a resource given
//     in only one of the two has that value in both;
//   - AttachLimit replaces the type's attach limit.
//
// A type that package instancetype does not know needs cpu and memory from
// one of these; it gets 110 pods and the driver's default attach limit.
type NodeSpec struct {
	Name         string
	Zone         string
	Region       string
	InstanceType string
	CPU          resource.Quantity
	Memory       resource.Quantity
	Pods         int64
	Capacity     corev1.ResourceList
	Allocatable  corev1.ResourceList
	AttachLimit  int32
	Labels       map[string]string
	Annotations  map[string]string
	Taints       []corev1.Taint

	arch string // resolved
}

// Check says whether the node can be registered as specified (its instance
// type known, or its cpu and memory given), before a cluster boots.
func (s NodeSpec) Check() error { return s.resolve() }

// resolve fills in the defaults and works out what the node reports:
// afterwards Capacity and Allocatable are complete.
func (s *NodeSpec) resolve() error {
	if s.Name == "" {
		return fmt.Errorf("a simulated node needs a name")
	}
	if s.Zone == "" {
		s.Zone = "us-east-1a"
	}
	if s.Region == "" {
		s.Region = s.Zone[:len(s.Zone)-1]
	}
	if s.InstanceType == "" {
		s.InstanceType = instancetype.Default
	}
	typ, lookupErr := instancetype.Lookup(s.InstanceType)
	capacity := corev1.ResourceList{
		corev1.ResourcePods:             *resource.NewQuantity(instancetype.DefaultMaxPods, resource.DecimalSI),
		corev1.ResourceEphemeralStorage: *resource.NewQuantity(instancetype.RootVolume, resource.BinarySI),
	}
	s.arch = instancetype.AMD64
	if lookupErr == nil {
		capacity, s.arch = typ.Capacity(), typ.Arch
	}
	if !s.CPU.IsZero() {
		capacity[corev1.ResourceCPU] = s.CPU
	}
	if !s.Memory.IsZero() {
		capacity[corev1.ResourceMemory] = s.Memory
	}
	if s.Pods != 0 {
		capacity[corev1.ResourcePods] = *resource.NewQuantity(s.Pods, resource.DecimalSI)
	}
	allocatable := instancetype.Allocatable(capacity)
	for r, q := range s.Capacity {
		capacity[r] = q
		if _, ok := s.Allocatable[r]; !ok {
			allocatable[r] = q
		}
	}
	for r, q := range s.Allocatable {
		allocatable[r] = q
		if _, ok := s.Capacity[r]; !ok {
			capacity[r] = q
		}
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := capacity[r]; !ok {
			return fmt.Errorf("node %s: %v; or give the node's cpu and memory capacity", s.Name, lookupErr)
		}
	}
	s.Capacity, s.Allocatable = capacity, allocatable
	if s.AttachLimit == 0 {
		s.AttachLimit = instancetype.AttachLimitOf(s.InstanceType)
	}
	if a := s.Labels[corev1.LabelArchStable]; a != "" {
		s.arch = a
	}
	return nil
}

// InstanceID is the simulated EC2 instance id of a node, stable per name.
func InstanceID(nodeName string) string {
	h := sha256.Sum256([]byte(nodeName))
	return "i-0" + hex.EncodeToString(h[:])[:16]
}

// nodeObject is the Node a kubelet registers for spec.
func nodeObject(s NodeSpec, now metav1.Time, ip string) *corev1.Node {
	labels := map[string]string{
		corev1.LabelHostname:            s.Name,
		corev1.LabelOSStable:            "linux",
		corev1.LabelArchStable:          s.arch,
		corev1.LabelTopologyZone:        s.Zone,
		corev1.LabelTopologyRegion:      s.Region,
		corev1.LabelInstanceTypeStable:  s.InstanceType,
		"topology.ebs.csi.aws.com/zone": s.Zone,
		LabelSimulated:                  "true",
	}
	for k, v := range s.Labels {
		labels[k] = v
	}
	annotations := map[string]string{
		"volumes.kubernetes.io/controller-managed-attach-detach": "true",
		"node.alpha.kubernetes.io/ttl":                           "0",
	}
	for k, v := range s.Annotations {
		annotations[k] = v
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: s.Name, Labels: labels, Annotations: annotations},
		Spec: corev1.NodeSpec{
			ProviderID: fmt.Sprintf("aws:///%s/%s", s.Zone, InstanceID(s.Name)),
			Taints:     s.Taints,
		},
		Status: corev1.NodeStatus{
			Capacity:    s.Capacity.DeepCopy(),
			Allocatable: s.Allocatable.DeepCopy(),
			Phase:       corev1.NodeRunning,
			Conditions:  conditions(now),
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: ip},
				{Type: corev1.NodeHostName, Address: s.Name},
			},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: 10250}},
			NodeInfo: corev1.NodeSystemInfo{
				MachineID:               InstanceID(s.Name),
				SystemUUID:              InstanceID(s.Name),
				BootID:                  InstanceID(s.Name + now.String()),
				KernelVersion:           "6.1.0-huddle-sim",
				OSImage:                 "Amazon Linux 2023 (simulated by huddle-sim)",
				ContainerRuntimeVersion: "containerd://2.1.0",
				KubeletVersion:          KubeletVersion,
				OperatingSystem:         "linux",
				Architecture:            s.arch,
			},
		},
	}
}

func conditions(now metav1.Time) []corev1.NodeCondition {
	c := func(t corev1.NodeConditionType, s corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return []corev1.NodeCondition{
		c(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
		c(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
		c(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		c(corev1.NodeReady, corev1.ConditionTrue, "KubeletReady", "kubelet is posting ready status"),
	}
}

// register creates or refreshes the Node, its CSINode and its Lease.
func (p *Pool) register(ctx context.Context, n *node) error {
	now := metav1.Now()
	obj := nodeObject(n.spec, now, n.ip)
	_, err := n.client.core.Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		err = p.syncNodeStatus(ctx, n, true)
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", n.spec.Name, err)
	}
	created, err := n.client.core.Nodes().Get(ctx, n.spec.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: created.Name, UID: created.UID}
	csiNode := &storagev1.CSINode{
		ObjectMeta: metav1.ObjectMeta{Name: n.spec.Name, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: storagev1.CSINodeSpec{Drivers: []storagev1.CSINodeDriver{{
			Name:         EBSDriver,
			NodeID:       InstanceID(n.spec.Name),
			TopologyKeys: []string{corev1.LabelTopologyZone},
			Allocatable:  &storagev1.VolumeNodeResources{Count: ptr.To(n.spec.AttachLimit)},
		}}},
	}
	if _, err := n.client.storage.CSINodes().Create(ctx, csiNode, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("register CSINode %s: %w", n.spec.Name, err)
	}
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: n.spec.Name, Namespace: corev1.NamespaceNodeLease, OwnerReferences: []metav1.OwnerReference{owner}},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(n.spec.Name),
			LeaseDurationSeconds: ptr.To(int32(p.timing.NodeLeaseDuration.Seconds())),
			RenewTime:            &metav1.MicroTime{Time: now.Time},
		},
	}
	l, err := n.client.leases.Leases(corev1.NamespaceNodeLease).Create(ctx, lease, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		l, err = n.client.leases.Leases(corev1.NamespaceNodeLease).Get(ctx, n.spec.Name, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("register lease %s: %w", n.spec.Name, err)
	}
	p.mu.Lock()
	n.lease = l
	p.mu.Unlock()
	return nil
}

// poweredFromAnnotations reads the power state a user asked for.
func poweredFromAnnotations(a map[string]string) bool {
	return a[AnnotationPower] != "off" && a[AnnotationShutdown] != "true" && a[AnnotationTerminate] != "true"
}
