// Package kubelet simulates the kubelets of many nodes in one process.
//
// A Pool registers Nodes (the capacity and allocatable an EKS node of its
// instance type reports, from package instancetype; the labels an EKS node
// carries; the controller-managed attach/detach annotation), a CSINode that
// lists the EBS driver with the driver's attach limit for the type, and
// renews each node's Lease.
// For every pod bound to one of its nodes it plays the kubelet's part, in
// the kubelet's order:
//
//  1. admission: a pod that does not fit the node's allocatable (cpu,
//     memory, pods) is rejected, Failed with OutOfcpu / OutOfmemory /
//     OutOfpods, as the kubelet's resource admission does;
//  2. volumes: attachable volumes are reported in status.volumesInUse, and
//     the containers wait until the attach/detach controller lists every one
//     of them in status.volumesAttached (a pod whose volume is attached
//     elsewhere stays in ContainerCreating);
//  3. start: Running and Ready after the profile's start delay; pods of Jobs
//     (or with the sim.huddle.io/run-seconds annotation) then succeed;
//  4. termination: a deleted pod stops after its containers exit (bounded by
//     its scaled terminationGracePeriodSeconds), its volumes leave
//     volumesInUse once no other pod on the node uses them, then the pod
//     object is removed.
//
// Power: annotating a node sim.huddle.io/power=off stops its heartbeats and
// freezes its pods, as a crashed or stopped instance would; =on brings it
// back. sim.huddle.io/shutdown=true also powers it off (a stopped instance);
// the cloud's shutdown taint for it is added by package cloud.
// sim.huddle.io/terminate=true powers it off for good (a terminated
// instance, whose Node the cloud then deletes).
package kubelet
