// Package scope decides which claims huddle manages: whether a claim is
// opted in (namespace label, claim annotation, cluster-wide mode) and
// whether its volume is shared in huddle's sense — attachable to one node
// at a time. Both the webhook and the controller use it, on objects from
// their informer caches.
package scope

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
)

// Opt-in labels and annotations.
const (
	// LabelEnabled on a namespace ("true") opts every claim in it in.
	LabelEnabled = "huddle.io/enabled"
	// AnnotationShare on a claim opts it in ("true") or out ("false").
	AnnotationShare = "huddle.io/share"
)

// Scope is the cluster's opt-in configuration.
type Scope struct {
	// ClusterWide opts in every claim outside the excluded namespaces.
	ClusterWide bool
	// Excluded namespaces are never touched: kube-system and huddle's own.
	Excluded []string
	// NamespaceLabelRequired: the webhook is called only for namespaces
	// labelled huddle.io/enabled=true (the chart's namespaces mode), so a
	// claim elsewhere is out of scope whatever its annotation says —
	// otherwise repair would evict members whose replacements are never
	// gated.
	NamespaceLabelRequired bool
}

// Excludes reports whether huddle must leave namespace ns alone.
func (s Scope) Excludes(ns string) bool {
	return ns == "kube-system" || slices.Contains(s.Excluded, ns)
}

// OptedIn reports whether a claim is in scope. ns may be nil if unknown;
// claim may be nil if it does not exist yet (then only the namespace and
// cluster-wide mode count).
func (s Scope) OptedIn(ns *corev1.Namespace, namespace string, claim *corev1.PersistentVolumeClaim) bool {
	if s.Excludes(namespace) {
		return false
	}
	labelled := ns != nil && ns.Labels[LabelEnabled] == "true"
	if s.NamespaceLabelRequired && !labelled {
		return false
	}
	if claim != nil {
		switch claim.Annotations[AnnotationShare] {
		case "true":
			return true
		case "false":
			return false
		}
	}
	return labelled || s.ClusterWide
}

// Volume is what decides whether a claim's volume is shared.
type Volume struct {
	Claim *corev1.PersistentVolumeClaim
	// PV is the bound volume (nil while unbound).
	PV *corev1.PersistentVolume
	// Class is the claim's StorageClass (nil if none or unknown).
	Class *storagev1.StorageClass
	// Driver is the CSIDriver of the PV's driver, or of the class's
	// provisioner while unbound (nil if there is no such object).
	Driver *storagev1.CSIDriver
}

// Shared reports whether a claim's volume attaches to one node at a time,
// and if not, why not.
func Shared(v Volume) (bool, string) {
	if slices.Contains(v.Claim.Spec.AccessModes, corev1.ReadWriteOncePod) {
		return false, "ReadWriteOncePod claims are exclusive to one pod; the scheduler owns them"
	}
	if v.PV != nil {
		for _, m := range v.PV.Spec.AccessModes {
			if m == corev1.ReadWriteMany || m == corev1.ReadOnlyMany {
				return false, "its volume is " + string(m) + ": several nodes may attach it"
			}
		}
		switch {
		case v.PV.Spec.CSI != nil:
			if v.Driver != nil && v.Driver.Spec.AttachRequired != nil && !*v.Driver.Spec.AttachRequired {
				return false, "CSI driver " + v.PV.Spec.CSI.Driver + " needs no attach (attachRequired: false)"
			}
			return true, ""
		case v.PV.Spec.AWSElasticBlockStore != nil, v.PV.Spec.GCEPersistentDisk != nil, v.PV.Spec.AzureDisk != nil,
			v.PV.Spec.Cinder != nil, v.PV.Spec.VsphereVolume != nil, v.PV.Spec.RBD != nil, v.PV.Spec.ISCSI != nil, v.PV.Spec.FC != nil:
			return true, ""
		}
		return false, "its volume type needs no attach"
	}
	// Unbound (WaitForFirstConsumer): the class decides.
	if v.Class == nil {
		return false, "it is not bound and has no StorageClass to tell"
	}
	if slices.Contains(v.Claim.Spec.AccessModes, corev1.ReadWriteMany) || slices.Contains(v.Claim.Spec.AccessModes, corev1.ReadOnlyMany) {
		return false, "it asks for a volume several nodes may attach"
	}
	if v.Driver != nil && v.Driver.Spec.AttachRequired != nil && !*v.Driver.Spec.AttachRequired {
		return false, "provisioner " + v.Class.Provisioner + " makes volumes that need no attach"
	}
	return true, ""
}
