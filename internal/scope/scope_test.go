package scope

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func claim(modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolumeClaim {
	return &corev1.PersistentVolumeClaim{Spec: corev1.PersistentVolumeClaimSpec{AccessModes: modes}}
}

func csiPV(modes ...corev1.PersistentVolumeAccessMode) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{AccessModes: modes,
		PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com"}}}}
}

func driver(attach bool) *storagev1.CSIDriver {
	return &storagev1.CSIDriver{Spec: storagev1.CSIDriverSpec{AttachRequired: ptr.To(attach)}}
}

func TestShared(t *testing.T) {
	rwo, rwx, rwop := corev1.ReadWriteOnce, corev1.ReadWriteMany, corev1.ReadWriteOncePod
	nfs := &corev1.PersistentVolume{Spec: corev1.PersistentVolumeSpec{AccessModes: []corev1.PersistentVolumeAccessMode{rwo},
		PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{}}}}
	class := &storagev1.StorageClass{Provisioner: "ebs.csi.aws.com"}
	for _, tc := range []struct {
		name   string
		v      Volume
		shared bool
		why    string
	}{
		{"RWO EBS", Volume{Claim: claim(rwo), PV: csiPV(rwo), Driver: driver(true)}, true, ""},
		{"no CSIDriver object: attach required", Volume{Claim: claim(rwo), PV: csiPV(rwo)}, true, ""},
		{"RWO claim bound to an RWX PV", Volume{Claim: claim(rwo), PV: csiPV(rwx), Driver: driver(true)}, false, "ReadWriteMany"},
		{"attachRequired false", Volume{Claim: claim(rwo), PV: csiPV(rwo), Driver: driver(false)}, false, "attachRequired: false"},
		{"ReadWriteOncePod", Volume{Claim: claim(rwop), PV: csiPV(rwop)}, false, "ReadWriteOncePod"},
		{"NFS", Volume{Claim: claim(rwo), PV: nfs}, false, "needs no attach"},
		{"unbound, attachable class", Volume{Claim: claim(rwo), Class: class, Driver: driver(true)}, true, ""},
		{"unbound, class of a driver without attach", Volume{Claim: claim(rwo), Class: class, Driver: driver(false)}, false, "need no attach"},
		{"unbound, no class", Volume{Claim: claim(rwo)}, false, "no StorageClass"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			shared, why := Shared(tc.v)
			if shared != tc.shared || !strings.Contains(why, tc.why) {
				t.Fatalf("Shared = %v, %q; want %v, %q", shared, why, tc.shared, tc.why)
			}
		})
	}
}

func TestOptedIn(t *testing.T) {
	enabled := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{LabelEnabled: "true"}}}
	plain := &corev1.Namespace{}
	share := func(v string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationShare: v}}}
	}
	for _, tc := range []struct {
		name  string
		s     Scope
		ns    *corev1.Namespace
		nsN   string
		claim *corev1.PersistentVolumeClaim
		want  bool
	}{
		{"namespace label", Scope{}, enabled, "app", claim(), true},
		{"plain namespace", Scope{}, plain, "app", claim(), false},
		{"claim annotation opts in", Scope{}, plain, "app", share("true"), true},
		{"claim annotation opts out", Scope{ClusterWide: true}, enabled, "app", share("false"), false},
		{"cluster-wide", Scope{ClusterWide: true}, plain, "app", claim(), true},
		{"kube-system never", Scope{ClusterWide: true}, enabled, "kube-system", share("true"), false},
		{"huddle's own namespace never", Scope{ClusterWide: true, Excluded: []string{"huddle-system"}}, plain, "huddle-system", claim(), false},
		{"claim unknown yet, namespace enabled", Scope{}, enabled, "app", nil, true},
		{"label required: annotation alone is not enough", Scope{NamespaceLabelRequired: true}, plain, "app", share("true"), false},
		{"label required: namespace unknown", Scope{NamespaceLabelRequired: true}, nil, "app", share("true"), false},
		{"label required: labelled namespace", Scope{NamespaceLabelRequired: true}, enabled, "app", claim(), true},
		{"label required: annotation still opts out", Scope{NamespaceLabelRequired: true}, enabled, "app", share("false"), false},
	} {
		if got := tc.s.OptedIn(tc.ns, tc.nsN, tc.claim); got != tc.want {
			t.Errorf("%s: OptedIn = %v, want %v", tc.name, got, tc.want)
		}
	}
}
