package ebs

import "k8s.io/client-go/rest"

// The EKS add-on runs the EBS CSI controller's sidecars (external-attacher,
// external-provisioner) with the arguments of the aws-ebs-csi-driver Helm
// chart, templates/controller.yaml, since chart 2.25 / driver v1.25
// (kubernetes-sigs/aws-ebs-csi-driver#1834; docs/faq.md, "Driver
// performance for large-scale clusters"): --kube-api-qps=20
// --kube-api-burst=100 --worker-threads=100 for each. Upstream's own
// defaults are 10 attacher and 100 provisioner workers. Each sidecar is a
// process of its own with its own client and rate limiter; the simulated
// ones get the same, no more, so that a simulated burst of volumes is
// neither faster nor slower than on EKS.
const (
	SidecarKubeAPIQPS   = 20
	SidecarKubeAPIBurst = 100
	SidecarWorkers      = 100
)

// SidecarConfig returns a copy of cfg with a sidecar's API limits and a
// rate limiter of its own.
func SidecarConfig(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	c.QPS, c.Burst, c.RateLimiter = SidecarKubeAPIQPS, SidecarKubeAPIBurst, nil
	return c
}
