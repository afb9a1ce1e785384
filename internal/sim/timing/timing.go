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

	// AttachDelay and DetachDelay are how long the simulated EBS API takes
	// to attach a volume to an instance and to detach it.
	AttachDelay time.Duration
	DetachDelay time.Duration

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
	// node Lease; NodeStatusInterval how often it rewrites node status when
	// nothing changed.
	LeaseRenewInterval time.Duration
	NodeStatusInterval time.Duration
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
func EKS() Profile {
	return Profile{
		Name:                   "eks",
		AttachDelay:            5 * time.Second,
		DetachDelay:            5 * time.Second,
		ContainerStartDelay:    3 * time.Second,
		ContainerStopDelay:     2 * time.Second,
		GraceScale:             1,
		JobDuration:            10 * time.Second,
		LeaseRenewInterval:     10 * time.Second,
		NodeStatusInterval:     5 * time.Minute,
		NodeLeaseDuration:      40 * time.Second,
		NodeMonitorPeriod:      5 * time.Second,
		NodeMonitorGracePeriod: 50 * time.Second,
		NodeStartupGracePeriod: 60 * time.Second,
		NotReadyToleration:     300 * time.Second,
		MaxWaitForUnmount:      6 * time.Minute,
		AttachDetachSyncPeriod: time.Minute,
		SchedulerMaxBackoff:    10 * time.Second,
		SettlePeriod:           30 * time.Second,
		RunTimeout:             10 * time.Minute,
	}
}

// Fast returns the eks profile with every clock compressed, for tests.
func Fast() Profile {
	return Profile{
		Name:                   "fast",
		AttachDelay:            300 * time.Millisecond,
		DetachDelay:            300 * time.Millisecond,
		ContainerStartDelay:    200 * time.Millisecond,
		ContainerStopDelay:     200 * time.Millisecond,
		GraceScale:             0.05,
		JobDuration:            1 * time.Second,
		LeaseRenewInterval:     1 * time.Second,
		NodeStatusInterval:     30 * time.Second,
		NodeLeaseDuration:      4 * time.Second,
		NodeMonitorPeriod:      1 * time.Second,
		NodeMonitorGracePeriod: 5 * time.Second,
		NodeStartupGracePeriod: 10 * time.Second,
		NotReadyToleration:     5 * time.Second,
		MaxWaitForUnmount:      15 * time.Second,
		AttachDetachSyncPeriod: 2 * time.Second,
		SchedulerMaxBackoff:    2 * time.Second,
		SettlePeriod:           8 * time.Second,
		RunTimeout:             3 * time.Minute,
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
