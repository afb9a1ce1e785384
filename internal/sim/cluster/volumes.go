package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/huddle-io/huddle/internal/sim/ebs"
)

// AddExistingVolumes puts into the simulated cloud the EBS volumes that
// static PersistentVolumes name (spec.csi.volumeHandle of the
// ebs.csi.aws.com driver, or the legacy spec.awsElasticBlockStore.volumeID):
// they are the user's existing disks, available, in the zone the PV's node
// affinity requires. Call it before the PVs are applied. A volume ID that
// no PV names stays unknown to the cloud, and attaching it fails with
// InvalidVolume.NotFound, as on EC2.
//
// It returns a warning for each volume it could not add as the PV says:
// a PV without a zone gets its volume in the zone of the first node (pods
// on nodes of other zones then fail to attach it with
// InvalidVolume.ZoneMismatch, as they would on EKS), and an ID that is not
// an EBS volume ID is not added (its attach fails with
// InvalidVolumeID.Malformed).
func (c *Cluster) AddExistingVolumes(ctx context.Context, pvs []*corev1.PersistentVolume) ([]string, error) {
	var warnings []string
	defaultZone := ""
	for _, pv := range pvs {
		v, ok, err := ebs.VolumeOf(pv)
		if err != nil {
			warnings = append(warnings, fmt.Sprintf("PersistentVolume %s: %v; its volume is not in the simulated cloud, so attaching it will fail", pv.Name, err))
			continue
		}
		if !ok {
			continue
		}
		if !ebs.ValidVolumeID(v.ID) {
			warnings = append(warnings, fmt.Sprintf("PersistentVolume %s names volume %q, which is not an EBS volume ID (vol- and 17 hex digits): attaching it will fail with InvalidVolumeID.Malformed, as on EKS", pv.Name, v.ID))
			continue
		}
		if v.Zone == "" {
			if defaultZone == "" {
				if defaultZone, err = c.firstNodeZone(ctx); err != nil {
					return warnings, err
				}
			}
			v.Zone = defaultZone
			warnings = append(warnings, fmt.Sprintf("PersistentVolume %s names EBS volume %s but no zone (no %s in its required node affinity): huddle-sim puts the volume in %s, the first node's zone; pods on nodes in other zones will fail to attach it with InvalidVolume.ZoneMismatch, as on EKS. Add the volume's zone to the PV's nodeAffinity", pv.Name, v.ID, corev1.LabelTopologyZone, v.Zone))
		}
		if err := c.Cloud.AddExistingVolume(v.ID, v.Zone, v.SizeGiB); err != nil {
			warnings = append(warnings, fmt.Sprintf("PersistentVolume %s: %v", pv.Name, err))
		}
	}
	return warnings, nil
}

// firstNodeZone is the zone of the first node, by name.
func (c *Cluster) firstNodeZone(ctx context.Context) (string, error) {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	slices.SortFunc(nodes.Items, func(a, b corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	for _, n := range nodes.Items {
		if z := n.Labels[corev1.LabelTopologyZone]; z != "" {
			return z, nil
		}
	}
	return "", fmt.Errorf("no node has a %s label to put an existing volume in", corev1.LabelTopologyZone)
}
