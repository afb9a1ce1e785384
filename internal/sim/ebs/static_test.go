package ebs

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func staticPV(src corev1.PersistentVolumeSource, zoneKey, zone string) *corev1.PersistentVolume {
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "existing"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:               corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Gi")},
			PersistentVolumeSource: src,
		},
	}
	if zoneKey != "" {
		pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
			MatchExpressions: []corev1.NodeSelectorRequirement{{Key: zoneKey, Operator: corev1.NodeSelectorOpIn, Values: []string{zone}}},
		}}}}
	}
	return pv
}

func TestVolumeOf(t *testing.T) {
	csi := func(driver, handle string) corev1.PersistentVolumeSource {
		return corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: driver, VolumeHandle: handle}}
	}
	legacy := func(id string) corev1.PersistentVolumeSource {
		return corev1.PersistentVolumeSource{AWSElasticBlockStore: &corev1.AWSElasticBlockStoreVolumeSource{VolumeID: id}}
	}
	labelled := staticPV(legacy("vol-0123456789abcdef0"), "", "")
	labelled.Labels = map[string]string{corev1.LabelFailureDomainBetaZone: "us-west-2c"}
	for _, tc := range []struct {
		name     string
		pv       *corev1.PersistentVolume
		ebs      bool
		id, zone string
	}{
		{"CSI, GA zone key", staticPV(csi(DriverName, "vol-0123456789abcdef0"), corev1.LabelTopologyZone, "us-east-1b"), true, "vol-0123456789abcdef0", "us-east-1b"},
		{"CSI, driver zone key", staticPV(csi(DriverName, "vol-0123456789abcdef0"), DriverZoneLabel, "us-east-1c"), true, "vol-0123456789abcdef0", "us-east-1c"},
		{"CSI, no zone", staticPV(csi(DriverName, "vol-0123456789abcdef0"), "", ""), true, "vol-0123456789abcdef0", ""},
		{"CSI, a malformed handle is still the driver's", staticPV(csi(DriverName, "my-disk"), "", ""), true, "my-disk", ""},
		{"legacy, bare ID, beta zone key", staticPV(legacy("vol-0123456789abcdef0"), corev1.LabelFailureDomainBetaZone, "eu-west-1a"), true, "vol-0123456789abcdef0", "eu-west-1a"},
		{"legacy, aws:// URL", staticPV(legacy("aws://us-east-1d/vol-0123456789abcdef0"), "", ""), true, "vol-0123456789abcdef0", "us-east-1d"},
		{"legacy, zone label", labelled, true, "vol-0123456789abcdef0", "us-west-2c"},
		{"another driver", staticPV(csi("efs.csi.aws.com", "fs-1"), corev1.LabelTopologyZone, "us-east-1a"), false, "", ""},
		{"NFS", staticPV(corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "nfs", Path: "/"}}, "", ""), false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.pv.DeepCopy()
			v, ok, err := VolumeOf(tc.pv)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.ebs || v.ID != tc.id || v.Zone != tc.zone {
				t.Fatalf("VolumeOf = %+v, %v; want EBS %v, %s in %q", v, ok, tc.ebs, tc.id, tc.zone)
			}
			if ok && v.SizeGiB != 100 {
				t.Errorf("size %d GiB, want 100", v.SizeGiB)
			}
			if tc.pv.Spec.AWSElasticBlockStore == nil && before.Spec.AWSElasticBlockStore != nil {
				t.Error("VolumeOf modified the PV")
			}
		})
	}
}
