// Package ebs simulates the AWS EBS CSI driver's controller side
// (ebs.csi.aws.com) over a simulated EC2 volume API.
//
// Cloud follows the EBS rules the real API enforces: a volume is attached to
// at most one instance at a time (a second attach fails with VolumeInUse),
// only to an instance in the volume's availability zone, and attach and
// detach take time. Attacher processes VolumeAttachments as the CSI
// external-attacher does (finalizers on the VolumeAttachment and its PV,
// status.attached, attachError and detachError, with the same API calls);
// Provisioner creates PersistentVolumes for claims of classes whose
// provisioner is ebs.csi.aws.com, in the zone of the node the scheduler
// selected (WaitForFirstConsumer), as the external-provisioner does. Both
// run with the workers and API limits the EKS add-on gives the real
// sidecars (sidecars.go). Everything that decides when to attach or detach
// is the real attach/detach controller in kube-controller-manager.
package ebs
