package cloud

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"

	"github.com/huddle-io/huddle/internal/sim/ebs"
)

// ProviderName is the name of the simulated cloud provider, the AWS
// provider's.
const ProviderName = "aws"

// Provider is the cloudprovider.Interface of the simulated cloud: instances
// only (InstancesV2), answered from the simulated EC2 as the AWS provider
// answers from DescribeInstances: an instance exists unless it is
// terminated, and is shut down when it is stopped (not while it is
// shutting down).
type Provider struct {
	ec2 *ebs.Cloud
}

var (
	_ cloudprovider.Interface   = (*Provider)(nil)
	_ cloudprovider.InstancesV2 = (*Provider)(nil)
)

// NewProvider answers from ec2.
func NewProvider(ec2 *ebs.Cloud) *Provider { return &Provider{ec2: ec2} }

// InstanceExists is false once the node's instance is terminated.
func (p *Provider) InstanceExists(_ context.Context, node *corev1.Node) (bool, error) {
	return p.ec2.InstanceState(node.Name) != ebs.Terminated, nil
}

// InstanceShutdown is true while the node's instance is stopped.
func (p *Provider) InstanceShutdown(_ context.Context, node *corev1.Node) (bool, error) {
	return p.ec2.InstanceState(node.Name) == ebs.Stopped, nil
}

// InstanceMetadata reports what the node registered with: the simulated
// kubelet sets it from the instance it plays.
func (p *Provider) InstanceMetadata(_ context.Context, node *corev1.Node) (*cloudprovider.InstanceMetadata, error) {
	if p.ec2.InstanceState(node.Name) == ebs.Terminated {
		return nil, fmt.Errorf("instance of node %s: %w", node.Name, cloudprovider.InstanceNotFound)
	}
	return &cloudprovider.InstanceMetadata{
		ProviderID:    node.Spec.ProviderID,
		InstanceType:  node.Labels[corev1.LabelInstanceTypeStable],
		NodeAddresses: node.Status.Addresses,
		Zone:          node.Labels[corev1.LabelTopologyZone],
		Region:        node.Labels[corev1.LabelTopologyRegion],
	}, nil
}

// Initialize starts nothing: the simulated EC2 needs no housekeeping.
func (p *Provider) Initialize(cloudprovider.ControllerClientBuilder, <-chan struct{}) {}

// InstancesV2 is supported.
func (p *Provider) InstancesV2() (cloudprovider.InstancesV2, bool) { return p, true }

// Instances is not: InstancesV2 replaces it for external providers.
func (p *Provider) Instances() (cloudprovider.Instances, bool) { return nil, false }

// LoadBalancer is not simulated.
func (p *Provider) LoadBalancer() (cloudprovider.LoadBalancer, bool) { return nil, false }

// Zones is not used with InstancesV2.
func (p *Provider) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not simulated.
func (p *Provider) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not simulated.
func (p *Provider) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName is "aws".
func (p *Provider) ProviderName() string { return ProviderName }

// HasClusterID is true: every simulated instance belongs to the cluster.
func (p *Provider) HasClusterID() bool { return true }
