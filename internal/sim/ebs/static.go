package ebs

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	csitranslation "k8s.io/csi-translation-lib"
	"k8s.io/klog/v2"
)

// DriverZoneLabel is the topology key the EBS CSI driver reports on its
// nodes and puts in the node affinity of the PVs it provisions; translated
// in-tree PVs use it too.
const DriverZoneLabel = "topology.ebs.csi.aws.com/zone"

// zoneKeys are the node affinity keys that name a volume's availability
// zone, the driver's first.
var zoneKeys = []string{DriverZoneLabel, corev1.LabelTopologyZone, corev1.LabelFailureDomainBetaZone}

// ExistingVolume is the EBS volume a static PersistentVolume names: a disk
// the user already has.
type ExistingVolume struct {
	// PV is the name of the PersistentVolume.
	PV string
	// ID is the EBS volume ID (spec.csi.volumeHandle, or the volume of the
	// legacy spec.awsElasticBlockStore.volumeID).
	ID string
	// Zone is the availability zone the PV's node affinity requires (or,
	// for a legacy PV, its zone label or the zone in aws://<zone>/<id>);
	// empty if it says none.
	Zone    string
	SizeGiB int64
}

// CSIVolume returns pv as the EBS CSI driver sees it: a legacy in-tree
// awsElasticBlockStore PV translated to ebs.csi.aws.com as CSI migration
// (the attach/detach controller, the external-attacher) translates it,
// with csi-translation-lib; other PVs as they are. pv is not modified.
func CSIVolume(pv *corev1.PersistentVolume) (*corev1.PersistentVolume, error) {
	if pv.Spec.AWSElasticBlockStore == nil {
		return pv, nil
	}
	return csitranslation.New().TranslateInTreePVToCSI(klog.Background(), pv.DeepCopy())
}

// VolumeOf returns the EBS volume pv names, and false if pv is not an EBS
// volume (another driver, NFS, a host path). A legacy PV whose volume ID
// cannot be read is an error.
func VolumeOf(pv *corev1.PersistentVolume) (ExistingVolume, bool, error) {
	csi, err := CSIVolume(pv)
	if err != nil {
		return ExistingVolume{}, false, err
	}
	if csi.Spec.CSI == nil || csi.Spec.CSI.Driver != DriverName {
		return ExistingVolume{}, false, nil
	}
	v := ExistingVolume{PV: pv.Name, ID: csi.Spec.CSI.VolumeHandle, Zone: requiredZone(csi)}
	if size, ok := pv.Spec.Capacity[corev1.ResourceStorage]; ok {
		v.SizeGiB = (size.Value() + (1<<30 - 1)) >> 30
	}
	if v.Zone == "" && pv.Spec.AWSElasticBlockStore != nil {
		// aws://us-east-1a/vol-0123…: the old form carries the zone.
		if rest, ok := strings.CutPrefix(pv.Spec.AWSElasticBlockStore.VolumeID, "aws://"); ok {
			if zone, _, ok := strings.Cut(rest, "/"); ok {
				v.Zone = zone
			}
		}
	}
	return v, true, nil
}

// requiredZone is the first zone the PV's required node affinity allows.
func requiredZone(pv *corev1.PersistentVolume) string {
	if pv.Spec.NodeAffinity == nil || pv.Spec.NodeAffinity.Required == nil {
		return ""
	}
	for _, key := range zoneKeys {
		for _, term := range pv.Spec.NodeAffinity.Required.NodeSelectorTerms {
			for _, e := range term.MatchExpressions {
				if e.Key == key && e.Operator == corev1.NodeSelectorOpIn && len(e.Values) > 0 {
					return e.Values[0]
				}
			}
		}
	}
	return ""
}
