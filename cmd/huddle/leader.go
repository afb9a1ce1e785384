package main

import (
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
)

// leaderLock returns the Lease lock for leader election with the pod's
// name (POD_NAME, from the downward API) as identity, <pod>_<uuid>, so
// `kubectl get lease` names the leading pod even where the hostname is not
// the pod's (hostNetwork, or huddle-sim's pods that run as processes).
// Without POD_NAME, or without leader election, it returns nil and
// controller-runtime builds its own lock with the hostname.
func leaderLock(cfg *rest.Config, c runConfig, name string) (resourcelock.Interface, error) {
	pod := os.Getenv("POD_NAME")
	if !c.leaderElect || pod == "" {
		return nil, nil
	}
	// As controller-runtime does: a client of its own whose requests time
	// out well within the renew deadline, so one slow request cannot cost
	// the lease.
	cfg = rest.AddUserAgent(rest.CopyConfig(cfg), "leader-election")
	cfg.Timeout = max(c.renewDeadline/2, time.Second)
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	id := pod + "_" + string(uuid.NewUUID())
	events := record.NewBroadcaster()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events(c.namespace)})
	return resourcelock.New(resourcelock.LeasesResourceLock, c.namespace, name, cs.CoreV1(), cs.CoordinationV1(), resourcelock.ResourceLockConfig{
		Identity:      id,
		EventRecorder: events.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: id}),
	})
}
