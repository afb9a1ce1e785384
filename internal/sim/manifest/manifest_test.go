package manifest

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

const doc = `# a chart's output
apiVersion: v1
kind: Node
metadata:
  name: big
  labels: {topology.kubernetes.io/zone: eu-west-1b, node.kubernetes.io/instance-type: m5.4xlarge}
status:
  capacity: {cpu: "16", memory: 64Gi, pods: "110"}
---
# only a comment
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: a}
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: b}
---
{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}
`

func TestLoadAndNodeSpecs(t *testing.T) {
	objs, err := Load([]string{"-"}, strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.Source+" "+o.GetKind()+"/"+o.GetName())
	}
	want := []string{"<stdin>:1 Node/big", "<stdin>:3[0] ConfigMap/a", "<stdin>:3[1] ConfigMap/b", "<stdin>:4 Deployment/web"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("loaded %v, want %v", got, want)
	}
	specs, rest, err := NodeSpecs(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 1 || len(rest) != 3 {
		t.Fatalf("%d node specs and %d other objects, want 1 and 3", len(specs), len(rest))
	}
	s := specs[0]
	cpu, mem, pods := s.Capacity[corev1.ResourceCPU], s.Capacity[corev1.ResourceMemory], s.Capacity[corev1.ResourcePods]
	if s.Name != "big" || s.Zone != "eu-west-1b" || s.InstanceType != "m5.4xlarge" || cpu.String() != "16" || mem.String() != "64Gi" || pods.String() != "110" || s.Allocatable != nil {
		t.Fatalf("node spec %+v: want the capacity the Node gives, and no allocatable since it gives none", s)
	}
}

func TestLoadErrorsNameTheDocument(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\n: : bad\n", "<stdin>: document 2"},
		{"kind: ConfigMap\nmetadata: {name: a}\n", "<stdin>: document 1: not a Kubernetes object"},
		{"apiVersion: v1\nkind: Secret\nmetadata: {namespace: x}\n", "<stdin>:1: Secret has no metadata.name"},
	} {
		_, err := Load([]string{"-"}, strings.NewReader(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Load(%q) error %v, want it to contain %q", tc.in, err, tc.want)
		}
	}
}

func TestApplyOrder(t *testing.T) {
	for i := 1; i < len(kindOrder); i++ {
		if rank(kindOrder[i-1]) >= rank(kindOrder[i]) {
			t.Fatalf("kindOrder not strictly ordered at %s", kindOrder[i])
		}
	}
	if !(rank("Namespace") < rank("StorageClass") && rank("StorageClass") < rank("PersistentVolumeClaim") &&
		rank("PersistentVolumeClaim") < rank("Deployment") && rank("Deployment") < rank("ServiceMonitor")) {
		t.Fatal("dependencies must be applied before their users, unknown kinds last")
	}
}

func TestPersistentVolumes(t *testing.T) {
	objs, err := Decode("pv.yaml", strings.NewReader(`apiVersion: v1
kind: PersistentVolume
metadata:
  name: existing
spec:
  capacity:
    storage: 20Gi
  accessModes: [ReadWriteOnce]
  csi:
    driver: ebs.csi.aws.com
    volumeHandle: vol-0123456789abcdef0
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  volumeName: existing
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 20Gi
`))
	if err != nil {
		t.Fatal(err)
	}
	pvs, err := PersistentVolumes(objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(pvs) != 1 || pvs[0].Name != "existing" || pvs[0].Spec.CSI == nil || pvs[0].Spec.CSI.VolumeHandle != "vol-0123456789abcdef0" {
		t.Fatalf("PersistentVolumes = %+v, want the one PV with its volume handle", pvs)
	}
}

// TestHookPhases: helm install's order: pre-install hooks by weight, then
// kind, then name; the release; post-install hooks. Test hooks and hooks
// install does not run are skipped, with the reason.
func TestHookPhases(t *testing.T) {
	objs, err := Decode("chart.yaml", strings.NewReader(`apiVersion: batch/v1
kind: Job
metadata: {name: migrate, annotations: {helm.sh/hook: "pre-install,pre-upgrade", helm.sh/hook-weight: "5"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: migrate-config, annotations: {helm.sh/hook: pre-install, helm.sh/hook-weight: "5"}}
---
apiVersion: v1
kind: Secret
metadata: {name: early, annotations: {helm.sh/hook: pre-install, helm.sh/hook-weight: "-10"}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
apiVersion: batch/v1
kind: Job
metadata: {name: notify, annotations: {helm.sh/hook: post-install}}
---
apiVersion: v1
kind: Pod
metadata: {name: smoke, annotations: {helm.sh/hook: test}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: cleanup, annotations: {helm.sh/hook: pre-delete}}
`))
	if err != nil {
		t.Fatal(err)
	}
	pre, release, post, skipped := byHookPhase(objs)
	names := func(os []Object) string {
		var out []string
		for _, o := range os {
			out = append(out, o.GetName())
		}
		return strings.Join(out, ",")
	}
	if got := names(pre); got != "early,migrate,migrate-config" {
		t.Errorf("pre-install hooks %s, want early (weight -10), then weight 5 by name, as Helm orders them: the Job migrate before the ConfigMap migrate-config", got)
	}
	if got := names(release); got != "web" {
		t.Errorf("release %s, want web", got)
	}
	if got := names(post); got != "notify" {
		t.Errorf("post-install hooks %s, want notify", got)
	}
	if len(skipped) != 2 || !strings.Contains(skipped[0], "Pod smoke skipped: a Helm test hook") || !strings.Contains(skipped[1], "Job cleanup skipped: a Helm hook for pre-delete") {
		t.Errorf("skipped %q, want the test hook and the pre-delete hook with their reasons", skipped)
	}
}
