package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	storagev1client "k8s.io/client-go/kubernetes/typed/storage/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/utils/ptr"
)

// A kubelet's API limits: kubeAPIQPS and kubeAPIBurst, the
// KubeletConfiguration defaults since 1.27 (kubernetes
// pkg/kubelet/apis/config/v1beta1/defaults.go), which EKS keeps.
const (
	KubeAPIQPS   = 50
	KubeAPIBurst = 100
)

// nodeClients are one kubelet's API clients. Every real kubelet is a
// process with clients of its own, so one busy node never throttles
// another; here each node gets its own rate limiter over the pool's
// shared connections (a typed client costs well under a kilobyte, a
// whole clientset about 27).
//
// As in cmd/kubelet/app/server.go, the main client (pods, registration,
// secrets, tokens) is limited to kubeAPIQPS/kubeAPIBurst, and the
// heartbeat client (leases and node status) is not throttled at all and
// times out after min(nodeStatusUpdateFrequency, lease duration).
type nodeClients struct {
	core    corev1client.CoreV1Interface
	storage storagev1client.StorageV1Interface
	// status and leases are the heartbeat client.
	status corev1client.NodesGetter
	leases coordinationv1client.LeasesGetter
}

// transports are the pool's HTTP clients, whose connections every node's
// clients share.
type transports struct {
	cfg       *rest.Config
	main      *http.Client
	heartbeat *http.Client
}

func newTransports(cfg *rest.Config, heartbeatTimeout time.Duration) (*transports, error) {
	main, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubelet API client: %w", err)
	}
	heartbeat := &http.Client{Transport: main.Transport, Timeout: heartbeatTimeout}
	return &transports{cfg: cfg, main: main, heartbeat: heartbeat}, nil
}

// clients builds one node's clients.
func (t *transports) clients() (nodeClients, error) {
	cfg := rest.CopyConfig(t.cfg)
	cfg.QPS, cfg.Burst = KubeAPIQPS, KubeAPIBurst
	// One limiter for everything the kubelet's main client does.
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(cfg.QPS, cfg.Burst)
	var c nodeClients
	var err error
	if c.core, err = corev1client.NewForConfigAndClient(cfg, t.main); err != nil {
		return c, err
	}
	if c.storage, err = storagev1client.NewForConfigAndClient(cfg, t.main); err != nil {
		return c, err
	}
	hb := rest.CopyConfig(t.cfg)
	hb.QPS, hb.RateLimiter = -1, nil // throttling disabled, as the kubelet's heartbeat client
	if c.status, err = corev1client.NewForConfigAndClient(hb, t.heartbeat); err != nil {
		return c, err
	}
	c.leases, err = coordinationv1client.NewForConfigAndClient(hb, t.heartbeat)
	return c, err
}

// heartbeat is one node's kubelet loops: the lease controller renews the
// Lease every LeaseRenewInterval, and the node status loop computes status
// every NodeStatusUpdateFrequency and writes it when it changed (volumes
// in use) or NodeStatusInterval has passed. Both use the kubelet's 4%
// jitter, sliding (k8s.io/component-helpers/apimachinery/lease
// controller.go; kubernetes pkg/kubelet/kubelet.go, Run), and each node's
// loops start at a random phase, as nodes booted at different times do:
// thousands of nodes renew concurrently and spread over the period, never
// in one serial sweep.
func (p *Pool) heartbeat(ctx context.Context, n *node) {
	go func() {
		if !sleep(ctx, rand.N(p.timing.LeaseRenewInterval)) {
			return
		}
		wait.JitterUntilWithContext(ctx, func(ctx context.Context) {
			if !p.isPowered(n) {
				return
			}
			if err := p.renewLease(ctx, n); err != nil && ctx.Err() == nil {
				p.logger.V(2).Info("Lease renewal failed", "node", n.spec.Name, "err", err)
			}
		}, p.timing.LeaseRenewInterval, 0.04, true)
	}()
	if !sleep(ctx, rand.N(p.timing.NodeStatusUpdateFrequency)) {
		return
	}
	wait.JitterUntilWithContext(ctx, func(ctx context.Context) {
		if !p.isPowered(n) {
			return
		}
		if err := p.syncNodeStatus(ctx, n, false); err != nil && ctx.Err() == nil {
			p.logger.V(2).Info("Node status update failed", "node", n.spec.Name, "err", err)
		}
	}, p.timing.NodeStatusUpdateFrequency, 0.04, true)
}

func (p *Pool) isPowered(n *node) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return n.powered && n.lease != nil
}

// syncNodeStatus is the kubelet's node status update. It writes the
// conditions with a fresh heartbeat and status.volumesInUse when the
// volumes in use changed, when NodeStatusInterval has passed since the
// last write, or when forced (registration, power-on). Only once a write
// has succeeded are its volumes "reported in use", the condition the
// kubelet's volume manager waits for before it mounts an attachable
// volume (VerifyControllerAttachedVolume: "The node status is updated
// periodically by kubelet, so it may take as much as 10 seconds before
// this clears", kubernetes pkg/volume/util/operationexecutor/
// operation_generator.go; MarkVolumesAsReportedInUse after the patch in
// pkg/kubelet/kubelet_node_status.go). The attach/detach controller, in
// turn, does not detach a volume the node still lists there.
func (p *Pool) syncNodeStatus(ctx context.Context, n *node, force bool) error {
	now := time.Now()
	p.mu.Lock()
	want := n.volumesInUse()
	changed := !slices.Equal(want, n.reportedInUse)
	due := force || changed || now.Sub(n.lastReport) >= p.timing.NodeStatusInterval
	p.mu.Unlock()
	if !due {
		return nil
	}
	var current *corev1.Node
	if p.nodeLister != nil {
		current, _ = p.nodeLister.Get(n.spec.Name)
	}
	names := make([]corev1.UniqueVolumeName, len(want))
	for i, v := range want {
		names[i] = corev1.UniqueVolumeName(v)
	}
	patch := map[string]any{"status": map[string]any{
		"conditions":   readyConditions(metav1.NewTime(now), current),
		"volumesInUse": names,
	}}
	b, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	if _, err := n.client.status.Nodes().Patch(ctx, n.spec.Name, types.StrategicMergePatchType, b, metav1.PatchOptions{}, "status"); err != nil {
		return err
	}
	p.mu.Lock()
	n.reportedInUse, n.lastReport = want, now
	var waiting []string
	if changed {
		for key, st := range n.pods {
			if st.stage == stageAdmitted && len(st.volumes) > 0 {
				waiting = append(waiting, key)
			}
		}
	}
	p.mu.Unlock()
	for _, key := range waiting {
		p.enqueue(key) // their volumes may now be reported in use
	}
	return nil
}

// readyConditions are the conditions of a healthy node, heartbeat now; a
// condition whose status did not change keeps its transition time.
func readyConditions(now metav1.Time, current *corev1.Node) []corev1.NodeCondition {
	out := conditions(now)
	if current == nil {
		return out
	}
	for i := range out {
		for _, c := range current.Status.Conditions {
			if c.Type == out[i].Type && c.Status == out[i].Status && !c.LastTransitionTime.IsZero() {
				out[i].LastTransitionTime = c.LastTransitionTime
			}
		}
	}
	return out
}

// renewLease is the kubelet's node heartbeat.
func (p *Pool) renewLease(ctx context.Context, n *node) error {
	p.mu.Lock()
	lease := n.lease.DeepCopy()
	p.mu.Unlock()
	lease.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
	lease.Spec.HolderIdentity = ptr.To(n.spec.Name)
	leases := n.client.leases.Leases(corev1.NamespaceNodeLease)
	updated, err := leases.Update(ctx, lease, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		fresh, gerr := leases.Get(ctx, n.spec.Name, metav1.GetOptions{})
		if gerr != nil {
			return err
		}
		p.mu.Lock()
		n.lease = fresh
		p.mu.Unlock()
		return err
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	n.lease = updated
	p.mu.Unlock()
	return nil
}

// volumesMounted says whether every attachable volume of the pod may be
// mounted: attached to the node (status.volumesAttached) and reported in
// status.volumesInUse by a node status update.
func (p *Pool) volumesMounted(n *node, st *podState) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range st.volumes {
		if !n.attached[v] || !slices.Contains(n.reportedInUse, v) {
			return false
		}
	}
	return true
}
