// Package cloud plays the EC2 instance side of the simulated cloud and runs
// the cloud-controller-manager's cloud node lifecycle controller against
// it.
//
// A user acts on an instance the way the EC2 console (or an Auto Scaling
// group, or Karpenter) would, by annotating its Node:
// sim.huddle.io/shutdown=true stops the instance (=false or removing it
// starts it again) and sim.huddle.io/terminate=true terminates it for good.
// Instances records the action in the simulated EC2 (package ebs), which
// keeps the volumes of a stopped instance attached and detaches those of a
// terminated one once it is terminated. The simulated kubelet (package
// kubelet) powers the node off on the same annotations.
//
// The controller that reacts is the real one,
// k8s.io/cloud-provider/controllers/nodelifecycle, the code the AWS
// cloud-controller-manager runs: every --node-monitor-period it looks at
// each Node that is not Ready, deletes it if its instance no longer exists
// (terminated) and taints it node.cloudprovider.kubernetes.io/shutdown if
// the instance is stopped; a Ready node loses that taint. Provider answers
// its questions from the simulated EC2, as the AWS provider answers them
// from DescribeInstances.
package cloud
