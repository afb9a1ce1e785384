package sim

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestStaticVolumeMustExist: a static PersistentVolume whose EBS volume
// the cloud does not have fails to attach as EC2 fails it
// (InvalidVolume.NotFound); once the volume exists (as huddle-sim run adds
// the volumes its -f files name), the same pod attaches it and runs.
func TestStaticVolumeMustExist(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	node := env.AddNodes(1, simtest.NodeOptions{Zone: "us-east-1a"})[0]
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	volumeID := "vol-" + hex.EncodeToString(b)[:17]
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: env.Namespace + "-existing"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: ebs.DriverName, VolumeHandle: volumeID, FSType: "ext4",
			}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"us-east-1a"}}},
			}}}},
		},
	}
	claim := env.Claim("data")
	claim.Spec.StorageClassName = ptr.To("")
	claim.Spec.VolumeName = pv.Name
	claim.Spec.Resources.Requests[corev1.ResourceStorage] = resource.MustParse("10Gi")
	if _, err := env.Client.CoreV1().PersistentVolumes().Create(env.Ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.CoreV1().PersistentVolumes().Delete(env.Ctx, pv.Name, metav1.DeleteOptions{}) })
	env.Create(claim, env.Pod("app", "data"))

	env.Eventually("attach fails as EC2 fails it for a volume it does not have", time.Minute, func() error {
		for _, m := range env.Events("app", "FailedAttachVolume") {
			if strings.Contains(m, "InvalidVolume.NotFound") && strings.Contains(m, volumeID) {
				return nil
			}
		}
		return fmt.Errorf("no FailedAttachVolume event with InvalidVolume.NotFound yet: %q", env.Events("app", "FailedAttachVolume"))
	})
	if err := notRunning(env, "app"); err != nil {
		t.Fatal(err)
	}

	warnings, err := env.Cluster.AddExistingVolumes(env.Ctx, []*corev1.PersistentVolume{pv})
	if err != nil || len(warnings) > 0 {
		t.Fatalf("add the existing volume: %v %q", err, warnings)
	}
	if v, ok := env.Cluster.Cloud.Describe(volumeID); !ok || v.Zone != "us-east-1a" || v.SizeGiB != 10 {
		t.Fatalf("existing volume %+v, want 10 GiB in us-east-1a", v)
	}
	running(env, "app", node)
	if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{node}) {
		t.Fatalf("volume attached to %v, want [%s]", got, node)
	}
}
