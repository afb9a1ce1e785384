// Package timing holds the simulator's timing profiles: how long the
// simulated parts take (attach, detach, container start, shutdown) and the
// timers of the real control plane (node monitor grace, not-ready
// tolerations, the attach/detach controller's max wait for unmount).
//
// The eks profile uses the values a real EKS cluster runs with, so the
// simulator shows the delays a user would see. The fast profile keeps every
// mechanism and compresses the clocks so scenario tests finish in seconds.
package timing

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Profile is one set of timings for the simulated cluster.
type Profile struct {
	// Name is the value of --timing that selects this profile.
	Name string

	// AttachLatency and DetachLatency are how long the simulated EBS CSI
	// controller takes to attach a volume to an instance (VolumeAttachment
	// created to status.attached) and to detach it; ProvisionLatency how
	// long CreateVolume takes until the volume is available (and the
	// PersistentVolume is created). Each operation draws its own time.
	AttachLatency    Latency
	DetachLatency    Latency
	ProvisionLatency Latency
	// InstanceTerminateDelay is how long a terminated EC2 instance stays
	// shutting-down before it is terminated and its volumes are detached.
	InstanceTerminateDelay time.Duration
	// CloudNodeMonitorPeriod is the cloud-controller-manager's
	// --node-monitor-period: how often its cloud node lifecycle controller
	// checks NotReady nodes against the cloud (shutdown taint, deleting the
	// Node of a terminated instance).
	CloudNodeMonitorPeriod time.Duration

	// ContainerStartDelay is the time from "all volumes attached" to the
	// pod's containers running (image pull, mount, start).
	ContainerStartDelay time.Duration
	// ContainerStopDelay is how long containers take to exit after SIGTERM;
	// a pod never takes longer than its scaled termination grace period.
	ContainerStopDelay time.Duration
	// GraceScale multiplies a pod's terminationGracePeriodSeconds.
	GraceScale float64
	// JobDuration is how long a pod of a Job runs before it succeeds unless
	// the pod says otherwise (annotation sim.huddle.io/run-seconds).
	JobDuration time.Duration

	// LeaseRenewInterval is how often each simulated kubelet renews its
	// node Lease; NodeStatusInterval (the kubelet's
	// nodeStatusReportFrequency) how often it rewrites node status when
	// nothing changed.
	LeaseRenewInterval time.Duration
	NodeStatusInterval time.Duration
	// NodeStatusUpdateFrequency is the kubelet's nodeStatusUpdateFrequency:
	// how often it computes node status and writes it if it changed. It is
	// the cadence of status.volumesInUse, which a pod's attachable volumes
	// must appear in before the kubelet mounts them.
	NodeStatusUpdateFrequency time.Duration
	// NodeLeaseDuration is spec.leaseDurationSeconds of node Leases.
	NodeLeaseDuration time.Duration

	// NodeMonitorPeriod, NodeMonitorGracePeriod and NodeStartupGracePeriod
	// are kube-controller-manager's node lifecycle flags.
	NodeMonitorPeriod      time.Duration
	NodeMonitorGracePeriod time.Duration
	NodeStartupGracePeriod time.Duration
	// NotReadyToleration is kube-apiserver's
	// --default-not-ready-toleration-seconds and
	// --default-unreachable-toleration-seconds: how long pods stay on a node
	// that stopped reporting before taint-based eviction.
	NotReadyToleration time.Duration
	// MaxWaitForUnmount is the attach/detach controller's wait before it
	// force-detaches a volume from an unhealthy node whose pods are gone.
	MaxWaitForUnmount time.Duration
	// AttachDetachSyncPeriod is kube-controller-manager's
	// --attach-detach-reconcile-sync-period: how often the attach/detach
	// controller checks its attachments against the VolumeAttachments.
	AttachDetachSyncPeriod time.Duration
	// SchedulerMaxBackoff is kube-scheduler's podMaxBackoffSeconds.
	SchedulerMaxBackoff time.Duration

	// SettlePeriod is how long `huddle-sim run` waits with nothing changing
	// before it reports; RunTimeout is its overall limit.
	SettlePeriod time.Duration
	RunTimeout   time.Duration
}

// EKS returns the defaults of a real EKS cluster with the EBS CSI driver.
//
// The EBS latencies are what the EBS CSI driver reports to Kubernetes: the
// EC2 state change plus the driver's polling of DescribeVolumes. Sources:
//   - attach and detach: "EBS volumes typically take 10 seconds to detach
//     and 5 seconds to attach. But there is no Attach/Detach SLA"
//     (aws/karpenter-provider-aws designs/statefulset-disruption.md, note
//     1); the driver polls the attachment after 1, 2.8, 6.0, 11.9 and
//     22.4 s ("Most attach/detach operations on AWS finish within 1-4
//     seconds", kubernetes-sigs/aws-ebs-csi-driver pkg/cloud/cloud.go), so
//     a slow one is seen at the 4th or 5th poll; attaches still "attaching"
//     after the csi-attacher's 15 s timeout are reported in
//     aws-ebs-csi-driver#1801, 15-17 s to attach and mount in
//     kubernetes#62119. The p99s (20 s, 30 s) are estimates from those
//     reports, not measurements.
//   - provisioning: "the median/p99 time until volume creation is
//     ~1.5/~4 seconds" (aws-ebs-csi-driver pkg/cloud/cloud.go, measured in
//     us-west-2 and ap-south-1); the driver first looks after 1.25 s, then
//     0.5, 0.75, 1.125, 1.7 s later, so it sees them at ~1.75 / ~5.3 s.
//   - termination: a terminating instance's volumes detach only once it is
//     terminated, "1 minute for m5a.large" (the Karpenter design above).
//   - the cloud node lifecycle controller's period is the
//     cloud-controller-manager's --node-monitor-period default, 5 s
//     (k8s.io/cloud-provider config/v1alpha1/defaults.go).
//   - the kubelet's nodeStatusUpdateFrequency (10 s), nodeStatusReportFrequency
//     (5 min) and nodeLeaseDurationSeconds (40 s, renewed every quarter) are
//     the KubeletConfiguration defaults (kubernetes
//     pkg/kubelet/apis/config/v1beta1/defaults.go), which the EKS AMI keeps.
func EKS() Profile {
	return Profile{
		Name:                      "eks",
		AttachLatency:             Latency{Median: 5 * time.Second, P99: 20 * time.Second, Max: time.Minute},
		DetachLatency:             Latency{Median: 10 * time.Second, P99: 30 * time.Second, Max: 90 * time.Second},
		ProvisionLatency:          Latency{Median: 1750 * time.Millisecond, P99: 5300 * time.Millisecond, Max: 30 * time.Second},
		InstanceTerminateDelay:    time.Minute,
		CloudNodeMonitorPeriod:    5 * time.Second,
		ContainerStartDelay:       3 * time.Second,
		ContainerStopDelay:        2 * time.Second,
		GraceScale:                1,
		JobDuration:               10 * time.Second,
		LeaseRenewInterval:        10 * time.Second,
		NodeStatusInterval:        5 * time.Minute,
		NodeStatusUpdateFrequency: 10 * time.Second,
		NodeLeaseDuration:         40 * time.Second,
		NodeMonitorPeriod:         5 * time.Second,
		NodeMonitorGracePeriod:    50 * time.Second,
		NodeStartupGracePeriod:    60 * time.Second,
		NotReadyToleration:        300 * time.Second,
		MaxWaitForUnmount:         6 * time.Minute,
		AttachDetachSyncPeriod:    time.Minute,
		SchedulerMaxBackoff:       10 * time.Second,
		SettlePeriod:              30 * time.Second,
		RunTimeout:                10 * time.Minute,
	}
}

// Fast returns the eks profile with every clock compressed, for tests. The
// EBS latencies keep a tail (p99 about three times the median) but stay
// short and bounded, so scenarios still finish in seconds.
func Fast() Profile {
	return Profile{
		Name:                      "fast",
		AttachLatency:             Latency{Median: 300 * time.Millisecond, P99: time.Second, Max: 2 * time.Second},
		DetachLatency:             Latency{Median: 400 * time.Millisecond, P99: 1200 * time.Millisecond, Max: 2 * time.Second},
		ProvisionLatency:          Latency{Median: 200 * time.Millisecond, P99: 600 * time.Millisecond, Max: time.Second},
		InstanceTerminateDelay:    time.Second,
		CloudNodeMonitorPeriod:    time.Second,
		ContainerStartDelay:       200 * time.Millisecond,
		ContainerStopDelay:        200 * time.Millisecond,
		GraceScale:                0.05,
		JobDuration:               1 * time.Second,
		LeaseRenewInterval:        1 * time.Second,
		NodeStatusInterval:        30 * time.Second,
		NodeStatusUpdateFrequency: 500 * time.Millisecond,
		NodeLeaseDuration:         4 * time.Second,
		NodeMonitorPeriod:         1 * time.Second,
		NodeMonitorGracePeriod:    5 * time.Second,
		NodeStartupGracePeriod:    10 * time.Second,
		NotReadyToleration:        5 * time.Second,
		MaxWaitForUnmount:         15 * time.Second,
		AttachDetachSyncPeriod:    2 * time.Second,
		SchedulerMaxBackoff:       2 * time.Second,
		SettlePeriod:              8 * time.Second,
		RunTimeout:                3 * time.Minute,
	}
}

var profiles = map[string]func() Profile{"eks": EKS, "fast": Fast}

// Names lists the profile names, sorted.
func Names() []string {
	names := make([]string, 0, len(profiles))
	for n := range profiles {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// ByName returns the profile called name.
func ByName(name string) (Profile, error) {
	p, ok := profiles[name]
	if !ok {
		return Profile{}, fmt.Errorf("unknown timing profile %q: use one of %s", name, strings.Join(Names(), ", "))
	}
	return p(), nil
}

// Grace scales a pod's termination grace period.
func (p Profile) Grace(seconds int64) time.Duration {
	return time.Duration(float64(seconds) * p.GraceScale * float64(time.Second))
}

// MissingClaimGrace is how long huddle holds a pod whose claim does not
// exist before releasing it: 30s, compressed like the other clocks.
func (p Profile) MissingClaimGrace() time.Duration {
	if p.Name == "fast" {
		return 3 * time.Second
	}
	return 30 * time.Second
}
