package sim

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/huddle-io/huddle/internal/sim/ebs"
	"github.com/huddle-io/huddle/internal/sim/simtest"
)

// TestVolumeAttachDetach: a volume attaches to the node of its pod, a second
// node cannot attach it while it is attached (EBS refuses; the attach/detach
// controller reports Multi-Attach), and it detaches after its last pod
// leaves, after which the second node gets it.
func TestVolumeAttachDetach(t *testing.T) {
	t.Parallel()
	env := simtest.New(t)
	nodes := env.AddNodes(2, simtest.NodeOptions{})
	first, second := nodes[0], nodes[1]

	env.Create(env.Claim("data"))
	a := env.Pod("a", "data")
	a.Spec.NodeSelector[corev1.LabelHostname] = first
	env.Create(a)
	running(env, "a", first)
	pv, err := env.Volume("data")
	if err != nil {
		t.Fatal(err)
	}
	if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{first}) {
		t.Fatalf("volume attached to %v, want [%s]", got, first)
	}
	uniqueName := "kubernetes.io/csi/" + ebs.DriverName + "^" + pv.Spec.CSI.VolumeHandle
	env.Eventually("volume in use on "+first, 10*time.Second, func() error {
		n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, first, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !slices.Contains(n.Status.VolumesInUse, corev1.UniqueVolumeName(uniqueName)) {
			return fmt.Errorf("volumesInUse %v lacks %s", n.Status.VolumesInUse, uniqueName)
		}
		return nil
	})

	// EBS itself refuses a second attachment, as the external-attacher
	// reports it on the VolumeAttachment.
	manual := &storagev1.VolumeAttachment{
		ObjectMeta: metav1.ObjectMeta{Name: "manual-" + env.Namespace},
		Spec: storagev1.VolumeAttachmentSpec{
			Attacher: ebs.DriverName, NodeName: second,
			Source: storagev1.VolumeAttachmentSource{PersistentVolumeName: ptr.To(pv.Name)},
		},
	}
	env.Create(manual)
	env.Eventually("EBS refuses the second attach", 10*time.Second, func() error {
		va, err := env.Client.StorageV1().VolumeAttachments().Get(env.Ctx, manual.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if va.Status.Attached || va.Status.AttachError == nil || !strings.Contains(va.Status.AttachError.Message, "VolumeInUse") {
			return fmt.Errorf("attached=%v attachError=%v", va.Status.Attached, va.Status.AttachError)
		}
		return nil
	})
	if err := env.Client.StorageV1().VolumeAttachments().Delete(env.Ctx, manual.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually("manual attachment gone", 10*time.Second, func() error {
		_, err := env.Client.StorageV1().VolumeAttachments().Get(env.Ctx, manual.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})

	// A pod on the second node: the real attach/detach controller refuses
	// to attach an RWO volume that is attached elsewhere.
	b := env.Pod("b", "data")
	b.Spec.NodeSelector[corev1.LabelHostname] = second
	env.Create(b)
	env.Eventually("Multi-Attach error for b", 20*time.Second, func() error {
		for _, m := range env.Events("b", "FailedAttachVolume") {
			if strings.Contains(m, "Multi-Attach error for volume") {
				return nil
			}
		}
		return fmt.Errorf("no Multi-Attach event yet")
	})
	env.Never("b must stay ContainerCreating while a holds the volume", 2*time.Second, func() error {
		return notRunning(env, "b")
	})

	// The last pod leaves the first node: the volume detaches and b starts.
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	running(env, "b", second)
	if got := env.AttachedTo(pv.Name); !slices.Equal(got, []string{second}) {
		t.Fatalf("volume attached to %v, want [%s]", got, second)
	}
	env.Eventually("volume no longer in use on "+first, 10*time.Second, func() error {
		n, err := env.Client.CoreV1().Nodes().Get(env.Ctx, first, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(n.Status.VolumesInUse)+len(n.Status.VolumesAttached) > 0 {
			return fmt.Errorf("in use %v, attached %v", n.Status.VolumesInUse, n.Status.VolumesAttached)
		}
		return nil
	})

	// Delete b too: the volume ends detached from every instance.
	if err := env.Client.CoreV1().Pods(env.Namespace).Delete(env.Ctx, "b", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	env.Eventually("volume detached everywhere", 20*time.Second, func() error {
		if got := env.AttachedTo(pv.Name); len(got) > 0 {
			return fmt.Errorf("still attached to %v", got)
		}
		if v, ok := env.Cluster.Cloud.Describe(pv.Spec.CSI.VolumeHandle); !ok || v.State != ebs.Available {
			return fmt.Errorf("EBS volume state %q", v.State)
		}
		return nil
	})
}

// running waits until the named pod is Running and Ready on node.
func running(env *simtest.Env, name, node string) {
	env.T.Helper()
	env.Eventually("pod "+name+" running on "+node, 30*time.Second, func() error {
		p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != node || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod %s on %q is %s", name, p.Spec.NodeName, p.Status.Phase)
		}
		return nil
	})
}

func notRunning(env *simtest.Env, name string) error {
	p, err := env.Client.CoreV1().Pods(env.Namespace).Get(env.Ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if p.Status.Phase == corev1.PodRunning {
		return fmt.Errorf("pod %s is Running on %s", name, p.Spec.NodeName)
	}
	return nil
}
