// Package kubelet simulates the kubelets of many nodes in one process.
//
// A Pool registers Nodes (the capacity and allocatable an EKS node of its
// instance type reports, from package instancetype; the labels an EKS node
// carries; the controller-managed attach/detach annotation) and a CSINode
// that lists the EBS driver with the driver's attach limit for the type.
// Each node's kubelet has its own API clients and rate limits and its own
// heartbeat loops: the Lease renewed every LeaseRenewInterval, node status
// computed every NodeStatusUpdateFrequency and written when it changed.
// For every pod bound to one of its nodes it plays the kubelet's part, in
// the kubelet's order:
//
//  1. admission: the kubelet's predicate checks (resources against
//     allocatable, NodeAffinity, NodeName, NodePorts, NoExecute taints); a
//     pod that fails one is Failed with its reason (OutOfcpu,
//     NodeAffinity, TaintToleration, …);
//  2. volumes: attachable volumes enter status.volumesInUse at the next
//     node status update, and the containers wait until every one is both
//     reported there and listed in status.volumesAttached by the
//     attach/detach controller (a pod whose volume is attached elsewhere
//     stays in ContainerCreating);
//  3. start: Running and Ready after the profile's start delay; pods of Jobs
//     (or with the sim.huddle.io/run-seconds annotation) then succeed;
//  4. termination: a deleted pod's containers exit 143 after SIGTERM, or
//     137 when its scaled terminationGracePeriodSeconds runs out first; its
//     volumes leave volumesInUse at the next node status update once no
//     other pod on the node uses them; the pod object is removed.
//
// Power: annotating a node sim.huddle.io/power=off stops its heartbeats and
// freezes its pods, as a crashed or stopped instance would; their
// containers die with it, and =on brings the node back and restarts them
// (restart count up, the lost run exited 255 Unknown). sim.huddle.io/shutdown=true also powers it off (a stopped instance);
// the cloud's shutdown taint for it is added by package cloud.
// sim.huddle.io/terminate=true powers it off for good (a terminated
// instance, whose Node the cloud then deletes).
package kubelet
