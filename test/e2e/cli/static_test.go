package cli

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/huddle-io/huddle/internal/sim/report"
)

// staticVolumes are two existing disks in us-east-1b, one named by an EBS
// CSI PersistentVolume, one by a legacy in-tree awsElasticBlockStore PV
// (whose zone is in its aws:// ID), each bound to a claim and mounted by a
// pod, with a node in each of two zones.
const staticVolumes = `apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {topology.kubernetes.io/zone: us-east-1a}
status:
  capacity: {cpu: "4", memory: 16Gi, pods: "58"}
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {topology.kubernetes.io/zone: us-east-1b}
status:
  capacity: {cpu: "4", memory: 16Gi, pods: "58"}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: existing-csi}
spec:
  capacity: {storage: 50Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  csi:
    driver: ebs.csi.aws.com
    volumeHandle: vol-0a1b2c3d4e5f60718
    fsType: ext4
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: topology.ebs.csi.aws.com/zone, operator: In, values: [us-east-1b]}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: existing-legacy}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  awsElasticBlockStore:
    volumeID: aws://us-east-1b/vol-0fedcba9876543210
    fsType: ext4
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: topology.kubernetes.io/zone, operator: In, values: [us-east-1b]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: csi-data}
spec:
  storageClassName: ""
  volumeName: existing-csi
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 50Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: legacy-data}
spec:
  storageClassName: ""
  volumeName: existing-legacy
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 20Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: csi-app}
spec:
  containers: [{name: app, image: example/app, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: csi-data}}]
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-app}
spec:
  containers: [{name: app, image: example/app, volumeMounts: [{name: data, mountPath: /data}]}]
  volumes: [{name: data, persistentVolumeClaim: {claimName: legacy-data}}]
`

// TestRunAttachesStaticVolumes: the EBS volumes that static
// PersistentVolumes in -f files name are the user's existing disks: they
// exist in the simulated cloud, in the zone of the PV, so the pods run in
// that zone with their volumes attached (an unknown volume ID would fail
// to attach with InvalidVolume.NotFound).
func TestRunAttachesStaticVolumes(t *testing.T) {
	stdout, stderr, code := huddleSim(t, strings.NewReader(staticVolumes), "run", "-f", "-", "--timing", "fast", "--output", "json")
	if code != 0 {
		t.Fatalf("run exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if strings.Contains(stderr, "warning: PersistentVolume") {
		t.Errorf("warnings about the static volumes:\n%s", stderr)
	}
	var r report.Report
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatalf("stdout is not the JSON report: %v\n%s", err, stdout)
	}
	if !r.AllRunning || len(r.Claims) != 2 {
		t.Fatalf("report %s: want both claims' pods running", stdout)
	}
	for _, c := range r.Claims {
		if len(c.AttachedTo) != 1 || c.AttachedTo[0] != "node-b" || len(c.Pods) != 1 || c.Pods[0].Node != "node-b" || c.Pods[0].Phase != "Running" {
			t.Errorf("claim %s: attached to %v, pods %+v; want its pod Running on node-b, the node in the volume's zone, with the volume attached there", c.Name, c.AttachedTo, c.Pods)
		}
	}
}
